// The policy panel's replay backends (see replay_backend.h).
#include "viewdata/replay_backend.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace kvs::view {

std::vector<PolicyDesc> parse_policies_json(const std::string& text) {
    std::vector<PolicyDesc> out;
    try {
        const nlohmann::json j = nlohmann::json::parse(text);
        if (!j.is_array()) fail("the policy list is not a JSON array");
        for (const auto& p : j) {
            PolicyDesc d;
            d.name = p.at("name").get<std::string>();
            d.summary = p.value("summary", "");
            if (p.contains("params"))
                for (const auto& q : p.at("params")) {
                    PolicyParam pp;
                    pp.name = q.at("name").get<std::string>();
                    const auto& dv = q.contains("default") ? q.at("default") : nlohmann::json("");
                    pp.default_value = dv.is_string() ? dv.get<std::string>() : dv.dump();
                    pp.help = q.value("help", "");
                    d.params.push_back(pp);
                }
            out.push_back(std::move(d));
        }
    } catch (const nlohmann::json::exception& e) {
        fail("cannot parse the policy list: {}", e.what());
    }
    return out;
}

std::string make_spec(const std::string& policy,
                      const std::vector<std::pair<std::string, std::string>>& params) {
    std::string s = policy;
    char sep = ':';
    for (const auto& [k, v] : params) {
        if (v.empty()) continue;
        s += sep;
        s += k + "=" + v;
        sep = ',';
    }
    return s;
}

int run_process(const std::vector<std::string>& argv, std::string* out, std::string* err,
                const std::atomic<bool>* cancel,
                const std::function<void(const std::string&)>& on_stderr_line) {
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0) fail("pipe: {}", std::strerror(errno));
    if (pipe2(pe, O_CLOEXEC) != 0) {
        close(po[0]);
        close(po[1]);
        fail("pipe: {}", std::strerror(errno));
    }
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) fail("fork: {}", std::strerror(errno));
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        setpgid(0, 0);  // its own process group: cancel kills what it started too
        execvp(args[0], args.data());
        const std::string m = "cannot run '" + argv[0] + "': " + std::strerror(errno) + "\n";
        (void)!write(2, m.data(), m.size());
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    std::string line;
    bool open_o = true, open_e = true, killed = false;
    auto t_kill = std::chrono::steady_clock::now();
    while (open_o || open_e) {
        pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
        const int n = poll(fds, 2, 100);
        if (n < 0 && errno != EINTR) break;
        char buf[4096];
        for (int k = 0; k < 2; ++k) {
            if (!(k == 0 ? open_o : open_e)) continue;
            if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            const ssize_t r = read(fds[k].fd, buf, sizeof buf);
            if (r <= 0) {
                (k == 0 ? open_o : open_e) = false;
                continue;
            }
            if (k == 0) {
                if (out) out->append(buf, size_t(r));
            } else {
                if (err) err->append(buf, size_t(r));
                for (ssize_t i = 0; i < r; ++i) {
                    if (buf[i] == '\n' || buf[i] == '\r') {
                        if (on_stderr_line && !line.empty()) on_stderr_line(line);
                        line.clear();
                    } else {
                        line += buf[i];
                    }
                }
            }
        }
        if (cancel && cancel->load()) {
            const auto now = std::chrono::steady_clock::now();
            if (!killed) {
                kill(-pid, SIGTERM);
                killed = true;
                t_kill = now;
            } else if (now - t_kill > std::chrono::seconds(2)) {
                kill(-pid, SIGKILL);
            }
        }
    }
    close(po[0]);
    close(pe[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

SubprocessBackend::SubprocessBackend(std::string exe) : exe_(std::move(exe)) {}

namespace {
std::string last_line(const std::string& s) {
    size_t e = s.find_last_not_of("\r\n ");
    if (e == std::string::npos) return "";
    size_t b = s.find_last_of("\r\n", e);
    return s.substr(b == std::string::npos ? 0 : b + 1,
                    e + 1 - (b == std::string::npos ? 0 : b + 1));
}
}  // namespace

std::vector<PolicyDesc> SubprocessBackend::policies() {
    std::string out, err;
    const int rc = run_process({exe_, "policies", "--json"}, &out, &err, nullptr);
    if (rc != 0)
        fail("'{} policies --json' failed (exit {}): {}", exe_, rc,
             last_line(err).empty() ? "no message" : last_line(err));
    return parse_policies_json(out);
}

void SubprocessBackend::run(const ReplayRequest& req, const std::function<void(float)>& progress,
                            const std::atomic<bool>& cancel,
                            const std::function<void(const std::string&)>&) {
    if (progress) progress(-1);
    const std::string& spec = req.spec;
    std::string out, err;
    const int rc = run_process(
        {exe_, "replay", req.trace, "--policy", spec, "--out", req.out, "--quiet"}, &out, &err,
        &cancel, [&](const std::string& l) {
            // A line "progress <done>/<total>" (if kvscope prints one) moves the bar.
            long a = 0, b = 0;
            if (progress && std::sscanf(l.c_str(), "progress %ld/%ld", &a, &b) == 2 && b > 0)
                progress(float(a) / float(b));
        });
    if (cancel.load()) fail("cancelled");
    if (rc != 0)
        fail("kvscope replay --policy {} failed (exit {}): {}", spec, rc,
             last_line(err).empty() ? "no message" : last_line(err));
    if (progress) progress(1);
}

}  // namespace kvs::view
