// Runs a policy on a trace for the viewer's policy panel. The panel talks to this interface
// only. InProcessBackend (the default) calls the simulator's replay_trace on a worker thread and
// writes the results file with the simulator's writer, the same code as `kvscope replay`; it
// replays the layer on screen first, so that its timeline shows before the other layers are
// done. SubprocessBackend runs `kvscope replay TRACE --policy SPEC --out OUT --quiet` and
// `kvscope policies --json` instead (when $KVSCOPE_BIN names one).
#pragma once
#include <atomic>
#include <functional>
#include <string>
#include <vector>

namespace kvs::view {

struct PolicyParam {
    std::string name, default_value, help;
};
struct PolicyDesc {
    std::string name, summary;
    std::vector<PolicyParam> params;
};
// Parses `kvscope policies --json`: [{"name","summary","params":[{"name","default","help"}]}].
std::vector<PolicyDesc> parse_policies_json(const std::string& text);  // throws kvs::Error
// "h2o" + {budget=128, recent=""} -> "h2o:budget=128" (empty values left out).
std::string make_spec(const std::string& policy,
                      const std::vector<std::pair<std::string, std::string>>& params);

struct ReplayRequest {
    std::string trace, spec, out;
    // A model layer to replay first (-1: none): its results are written to `first_out` and
    // on_first(first_out) is called before the remaining layers run. A backend may ignore it.
    int first_layer = -1;
    std::string first_out;
};

class ReplayBackend {
  public:
    virtual ~ReplayBackend() = default;
    virtual std::vector<PolicyDesc> policies() = 0;  // throws kvs::Error
    // Replays req.spec on req.trace, writing the results file req.out. Calls progress(f) with f
    // in [0, 1], or -1 while unknown. Throws kvs::Error on failure or when `cancel` was set.
    virtual void run(const ReplayRequest& req, const std::function<void(float)>& progress,
                     const std::atomic<bool>& cancel,
                     const std::function<void(const std::string&)>& on_first) = 0;
    virtual std::string describe() const = 0;  // for the panel: "in-process", the executable
};

class InProcessBackend final : public ReplayBackend {
  public:
    std::vector<PolicyDesc> policies() override;
    void run(const ReplayRequest& req, const std::function<void(float)>& progress,
             const std::atomic<bool>& cancel,
             const std::function<void(const std::string&)>& on_first) override;
    std::string describe() const override { return "in-process (simulator library)"; }
};

class SubprocessBackend final : public ReplayBackend {
  public:
    explicit SubprocessBackend(std::string exe);
    std::vector<PolicyDesc> policies() override;
    void run(const ReplayRequest& req, const std::function<void(float)>& progress,
             const std::atomic<bool>& cancel,
             const std::function<void(const std::string&)>& on_first) override;
    std::string describe() const override { return exe_; }

  private:
    std::string exe_;
};

// Runs argv[0] with arguments; returns the exit status (128 + signal when killed), collects
// stdout and stderr. Kills the child (SIGTERM, then SIGKILL after 2 s) when `cancel` becomes
// true. `on_stderr_line` sees each stderr line as it arrives. Throws kvs::Error when it cannot
// start.
int run_process(const std::vector<std::string>& argv, std::string* out, std::string* err,
                const std::atomic<bool>* cancel,
                const std::function<void(const std::string&)>& on_stderr_line = {});

}  // namespace kvs::view
