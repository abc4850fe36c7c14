// The policy panel's in-process replay backend (replay_backend.h): the simulator library's
// replay_trace and results writer, the code behind `kvscope replay`, on the panel's worker thread.
#include <fmt/format.h>

#include "simulator/policy.h"
#include "simulator/replay.h"
#include "simulator/results_io.h"
#include "viewdata/replay_backend.h"

namespace kvs::view {

std::vector<PolicyDesc> InProcessBackend::policies() {
    std::vector<PolicyDesc> out;
    for (const auto& e : sim::policy_registry()) {
        PolicyDesc d;
        d.name = e.info.name;
        d.summary = e.info.summary;
        for (const auto& p : e.info.params) {
            PolicyParam pp;
            pp.name = p.name;
            pp.default_value = p.def;
            pp.help = p.help;
            if (!p.choices.empty())
                pp.help += " (choices: " + fmt::format("{}", fmt::join(p.choices, " ")) + ")";
            d.params.push_back(std::move(pp));
        }
        out.push_back(std::move(d));
    }
    return out;
}

void InProcessBackend::run(const ReplayRequest& req, const std::function<void(float)>& progress,
                           const std::atomic<bool>& cancel,
                           const std::function<void(const std::string&)>& on_first) {
    const sim::PolicySpec spec = sim::parse_spec(req.spec);  // a bad spec: kvs::Error, one line
    sim::check_output_path(req.out);
    const std::string cmd =
        "kvscope-view (in-process) replay " + req.trace + " --policy " + req.spec;
    sim::ReplayOptions opt;
    opt.quiet = true;
    opt.cancel = &cancel;
    if (req.first_layer >= 0 && !req.first_out.empty()) {
        // The layer on screen first (one layer of a 2k-token trace: a fraction of a second).
        if (progress) progress(-1);
        opt.layers = {req.first_layer};
        const auto runs = sim::replay_trace(req.trace, {spec}, opt);
        sim::write_results(req.first_out, runs,
                           cmd + " --layers " + std::to_string(req.first_layer));
        if (on_first) on_first(req.first_out);
    }
    // Then every layer, into one file like `kvscope replay` writes (the first layer is replayed
    // again: 1 / n_layer more work, for a results file that stands alone).
    opt.layers.clear();
    opt.on_progress = [&](int64_t done, int64_t total) {
        if (progress && total > 0) progress(float(done) / float(total));
    };
    const auto runs = sim::replay_trace(req.trace, {spec}, opt);
    sim::write_results(req.out, runs, cmd);
    if (progress) progress(1);
}

}  // namespace kvs::view
