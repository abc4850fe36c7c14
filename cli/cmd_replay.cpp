// kvscope policies / replay / sweep / merge: the replay simulator's commands.
#include <fmt/format.h>

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "capture/trace_reader.h"
#include "capture/trace_writer.h"
#include "common.h"
#include "engine/error.h"
#include "kernels/quant_pack.h"
#include "output_lock.h"
#include "shard.h"
#include "simulator/policy.h"
#include "simulator/replay.h"
#include "simulator/results_io.h"
#include "sweep_specs.h"

namespace kvs::cli {

namespace {

using sim::PolicySpec;

sim::Mode parse_mode(const std::string& m) {
    if (m == "stream") return sim::Mode::stream;
    if (m == "prefill") return sim::Mode::prefill;
    fail("--mode must be stream or prefill (got '{}')", m);
}

struct CommonArgs {
    std::vector<std::string> policies;
    std::string mode = "stream", out, csv, layers = "all";
    int64_t prefill_len = -1;
    int threads = 0, checkpoints = -1;
    bool quiet = false, json = false;
};

void add_common(CLI::App* c, CommonArgs& a, int default_ckpt) {
    c->add_option("-p,--policy", a.policies,
                  "Policy spec name:key=value,... (repeatable; see "
                  "`kvscope policies`)")
        ->required();
    c->add_option("--mode", a.mode,
                  "stream (every position is a decode step) or prefill "
                  "(compress the prompt once at P, then decode)")
        ->capture_default_str();
    c->add_option("--prefill-len", a.prefill_len,
                  "P for prefill mode (default: the trace's prompt; 3/4 of a text trace)");
    c->add_option("-o,--out", a.out, "Results file (HDF5, docs/results-format.md)")->required();
    c->add_option("--csv", a.csv, "Also write a one-row-per-run summary CSV");
    c->add_option("--threads", a.threads, "Threads (default: all cores)")
        ->check(CLI::NonNegativeNumber);
    c->add_option("--checkpoints", a.checkpoints,
                  fmt::format("Steps recorded in full for the viewer (default {})", default_ckpt))
        ->check(CLI::NonNegativeNumber);
    c->add_option("--layers", a.layers, "Layers to replay: all, or a list like 0,5,10-12")
        ->capture_default_str();
    c->add_flag("-q,--quiet", a.quiet, "No progress bar");
}

sim::ReplayOptions options_of(const CommonArgs& a, int default_ckpt, const std::string& trace) {
    sim::ReplayOptions o;
    o.mode = parse_mode(a.mode);
    o.prefill_len = a.prefill_len;
    if (a.prefill_len >= 0 && o.mode != sim::Mode::prefill)
        fail("--prefill-len needs --mode prefill");
    o.threads = a.threads;
    o.checkpoints = a.checkpoints >= 0 ? a.checkpoints : default_ckpt;
    o.quiet = a.quiet;
    if (a.layers != "all") {
        const capture::TraceReader r(trace);
        o.layers = capture::parse_layer_list(a.layers, r.info().n_layer);
    }
    return o;
}

nlohmann::ordered_json run_json(const sim::RunResult& r) {
    nlohmann::ordered_json j = {{"trace", r.trace_path},
                                {"policy", r.policy},
                                {"spec", r.spec},
                                {"budget", r.budget},
                                {"mode", sim::mode_name(r.mode)},
                                {"prefill_len", r.prefill_len},
                                {"n_tokens", r.n_tokens},
                                {"steps", r.steps.size()}};
    for (const auto& f : sim::kSummaryFields) j[f.name] = r.summary.*f.member;
    j["restores"] = r.summary.restores;
    j["seconds"] = r.seconds;
    return j;
}

void report(const std::vector<sim::RunResult>& runs, const CommonArgs& a) {
    if (a.json) {
        nlohmann::ordered_json j = nlohmann::ordered_json::array();
        for (const auto& r : runs) j.push_back(run_json(r));
        fmt::print("{}\n", j.dump(1));
        return;
    }
    fmt::print("{}", sim::summary_table(runs));
    fmt::print("results: {}{}\n", a.out, a.csv.empty() ? "" : "  summary: " + a.csv);
}

void write_outputs(const std::vector<sim::RunResult>& runs, const CommonArgs& a) {
    sim::write_results(a.out, runs, command_line());
    if (!a.csv.empty()) sim::write_summary_csv(a.csv, runs);
}

// The output paths must be writable before hours of replay, not after.
void check_out(const std::string& path) {
    if (!path.empty()) sim::check_output_path(path);
}

struct SweepArgs {
    CommonArgs c;
    std::vector<std::string> traces;
    std::string budgets, shard;
    bool resume = false;
};

// The runs a sweep has finished so far, rewritten (atomically: .partial, then renamed) after
// each trace's pass, removed once <out> is written. `--resume` reads it and skips its runs.
std::string progress_path(const std::string& out) {
    return out + ".progress.h5";
}
std::string run_key(const std::string& trace, const std::string& spec, sim::Mode mode) {
    return trace + '\n' + spec + '\n' + sim::mode_name(mode);
}

void run_sweep(SweepArgs& a) {
    // Before the progress file is read: a second sweep to the same output stops here (the lock
    // checks the path too).
    const OutputLock lock(a.c.out);
    check_out(a.c.csv);
    const std::vector<PolicySpec> specs = expand_specs(a.c.policies, a.budgets, a.c.quiet);
    const Shard shard = parse_shard(a.shard);
    const sim::Mode mode = parse_mode(a.c.mode);
    const std::string progress = progress_path(a.c.out);
    std::map<std::string, sim::RunResult> finished;
    std::error_code ec;
    if (a.resume && std::filesystem::exists(progress, ec)) {
        for (auto& r : sim::read_results(progress))
            finished.emplace(run_key(r.trace_path, r.spec, r.mode), std::move(r));
        if (!a.c.quiet)
            fmt::print(stderr, "sweep: resuming: {} finished runs in {}\n", finished.size(),
                       progress);
    }
    // Runs in order (trace-major); this shard keeps index % n == i.
    std::vector<sim::RunResult> all;
    int64_t index = 0, mine = 0, skipped = 0;
    for (const auto& trace : a.traces) {
        std::vector<PolicySpec> todo;
        // This trace's runs in spec order: a finished one, or a slot the replay fills.
        std::vector<std::optional<sim::RunResult>> row;
        for (const auto& s : specs) {
            if (!shard.owns(index++)) continue;
            auto it = finished.find(run_key(trace, s.canonical, mode));
            if (it != finished.end()) {
                row.emplace_back(std::move(it->second));
                finished.erase(it);
                ++skipped;
            } else {
                row.emplace_back();
                todo.push_back(s);
            }
        }
        if (row.empty()) continue;
        mine += int64_t(row.size());
        if (!a.c.quiet)
            fmt::print(stderr, "sweep: {} runs on {}{}{}\n", todo.size(), trace,
                       shard.count > 1
                           ? fmt::format(" (shard {}/{}{})", shard.index, shard.count,
                                         shard.source.empty() ? "" : ", " + shard.source)
                           : "",
                       row.size() > todo.size()
                           ? fmt::format(" ({} finished before: skipped)", row.size() - todo.size())
                           : "");
        std::vector<sim::RunResult> runs;
        if (!todo.empty()) runs = sim::replay_trace(trace, todo, options_of(a.c, 0, trace));
        size_t next = 0;
        for (auto& slot : row) all.push_back(slot ? std::move(*slot) : std::move(runs[next++]));
        if (!todo.empty()) sim::write_results(progress, all, command_line());
    }
    if (mine == 0 && !a.c.quiet) fmt::print(stderr, "sweep: this shard has no runs\n");
    if (skipped > 0 && !a.c.quiet)
        fmt::print(stderr, "sweep: {} runs taken from {}\n", skipped, progress);
    write_outputs(all, a.c);
    std::filesystem::remove(progress, ec);
    report(all, a.c);
}

}  // namespace

void register_replay(CLI::App& app) {
    // --- policies ---
    auto pj = std::make_shared<bool>(false);
    auto* pc = app.add_subcommand("policies", "List the compression policies and their parameters");
    pc->add_flag("--json", *pj, "JSON output");
    pc->callback([pj] {
        if (*pj) {
            nlohmann::ordered_json j = nlohmann::ordered_json::array();
            for (const auto& e : sim::policy_registry()) {
                nlohmann::ordered_json params = nlohmann::ordered_json::array();
                for (const auto& p : e.info.params) {
                    nlohmann::ordered_json o = {
                        {"name", p.name}, {"default", p.def}, {"help", p.help}};
                    if (!p.choices.empty()) o["choices"] = p.choices;
                    params.push_back(o);
                }
                j.push_back({{"name", e.info.name},
                             {"summary", e.info.summary},
                             {"details", e.info.details},
                             {"paper_mode", sim::mode_name(e.info.paper_mode)},
                             {"needs_budget", e.info.needs_budget},
                             {"takes_budget", e.info.takes_budget},
                             {"params", params}});
            }
            fmt::print("{}\n", j.dump(1));
            return;
        }
        for (const auto& e : sim::policy_registry()) {
            fmt::print("{:<10} {} [paper mode: {}]\n", e.info.name, e.info.summary,
                       sim::mode_name(e.info.paper_mode));
            for (const auto& p : e.info.params) {
                std::string help = p.help;
                if (!p.choices.empty()) {
                    help += " (choices:";
                    for (const auto& c : p.choices) help += " " + c;
                    help += ")";
                }
                fmt::print("    {:<10} {:<8} {}\n", p.name,
                           p.def.empty() ? (e.info.needs_budget ? "required" : "none") : p.def,
                           help);
            }
            // Wrap the details at ~96 columns.
            std::string line = "   ";
            size_t i = 0;
            const std::string& d = e.info.details;
            while (i < d.size()) {
                size_t j = d.find(' ', i);
                if (j == std::string::npos) j = d.size();
                const std::string w = d.substr(i, j - i);
                if (line.size() + 1 + w.size() > 96) {
                    fmt::print("{}\n", line);
                    line = "   ";
                }
                line += " " + w;
                i = j + 1;
            }
            if (line.size() > 3) fmt::print("{}\n", line);
            fmt::print("\n");
        }
        fmt::print(
            "Spec syntax: name:key=value,...  e.g. h2o:budget=256,recent=32 or "
            "quant:bits=2,format=kivi\n");
    });

    // --- replay ---
    auto ra = std::make_shared<CommonArgs>();
    auto rt = std::make_shared<std::string>();
    auto* rc = app.add_subcommand("replay", "Replay compression policies against a trace");
    rc->add_option("trace", *rt, "Trace file (kvscope capture)")->required();
    add_common(rc, *ra, 32);
    rc->add_flag("--json", ra->json, "Print the summaries as JSON");
    rc->callback([ra, rt] {
        const OutputLock lock(ra->out);  // checks the path too
        check_out(ra->csv);
        const auto specs = parse_specs(ra->policies, ra->quiet);
        auto runs = sim::replay_trace(*rt, specs, options_of(*ra, 32, *rt));
        write_outputs(runs, *ra);
        report(runs, *ra);
    });

    // --- sweep ---
    auto sa = std::make_shared<SweepArgs>();
    auto* sc = app.add_subcommand(
        "sweep", "Replay policies x budgets over traces (shardable), one results file");
    sc->add_option("traces", sa->traces, "Trace files")->required();
    add_common(sc, sa->c, 0);
    sc->add_option("--budgets", sa->budgets,
                   "Budgets crossed with every spec that has none: 64,128,256,0.1,0.2");
    sc->add_option("--shard", sa->shard,
                   "Run only shard i of n (i/n): runs with index % n == i; auto: from a Slurm "
                   "job array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT)");
    sc->add_flag("--json", sa->c.json, "Print the summaries as JSON");
    sc->add_flag("--resume", sa->resume,
                 "Skip the runs an interrupted sweep with the same --out finished (kept in "
                 "OUT.progress.h5 after each trace); the results equal an uninterrupted sweep's");
    sc->callback([sa] { run_sweep(*sa); });

    // --- merge ---
    auto mo = std::make_shared<std::string>();
    auto mc = std::make_shared<std::string>();
    auto mi = std::make_shared<std::vector<std::string>>();
    auto mq = std::make_shared<bool>(false);
    auto* mg = app.add_subcommand("merge", "Join results files (e.g. sweep shards) into one");
    mg->add_option("-o,--out", *mo, "Merged results file")->required();
    mg->add_option("inputs", *mi, "Results files to join, in order")->required();
    mg->add_option("--csv", *mc, "Also write the summary CSV");
    mg->add_flag("-q,--quiet", *mq, "Do not print the table");
    mg->callback([mo, mc, mi, mq] {
        const OutputLock lock(*mo);  // checks the path too
        check_out(*mc);
        std::vector<sim::RunResult> all;
        for (const auto& p : *mi)
            for (auto& r : sim::read_results(p)) all.push_back(std::move(r));
        sim::write_results(*mo, all, command_line());
        if (!mc->empty()) sim::write_summary_csv(*mc, all);
        if (!*mq)
            fmt::print("{}merged {} runs from {} files into {}\n", sim::summary_table(all),
                       all.size(), mi->size(), *mo);
    });
}

}  // namespace kvs::cli
