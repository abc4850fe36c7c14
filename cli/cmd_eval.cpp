// kvscope eval: what a policy costs the model with its compressed cache in the loop (closed
// loop): perplexity, KL to the full model and top-1 agreement on a text, or exact-match accuracy
// on a passkey / needle grid. The same policy code as replay drives the engine's cache
// (simulator/live_cache.h).
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "capture/prompts.h"
#include "common.h"
#include "engine/error.h"
#include "engine/progress.h"
#include "engine/runner.h"
#include "live_options.h"
#include "output_lock.h"
#include "shard.h"
#include "simulator/results_io.h"
#include "sweep_specs.h"

namespace kvs::cli {

namespace {

struct EvalArgs {
    std::string model, task = "ppl", text_file, haystack, budgets, shard, csv, out,
                       lengths = "1024", depths = "0,0.25,0.5,0.75,1";
    std::vector<std::string> policies;
    int ctx = 2048, max_windows = 0, seeds = 1, first_seed = 0, n_predict = 12;
    int64_t prefill_len = -1;
    bool json = false, quiet = false, resume = false;
    LiveArgs live;
};

struct RunStats {
    std::string policy, spec, budget, mode;
    // ppl
    double nll = 0, nll_full = 0;
    std::vector<float> kl;  // per scored token
    int64_t top1 = 0, scored = 0;
    // retrieval
    int64_t correct = 0, items = 0;
    double ttft = 0;  // summed over items
    // both
    double bytes_sum = 0, bytes_peak = 0, offload_sum = 0, offload_peak = 0;
    int64_t byte_samples = 0, tokens = 0;
    double seconds = 0;
};

std::vector<double> parse_list(const std::string& s, const char* what) {
    std::vector<double> out;
    size_t i = 0;
    while (i <= s.size()) {
        const size_t j = std::min(s.find(',', i), s.size());
        const std::string t = s.substr(i, j - i);
        if (!t.empty()) {
            try {
                size_t used = 0;
                out.push_back(std::stod(t, &used));
                if (used != t.size()) throw std::invalid_argument(t);
            } catch (const std::exception&) {
                fail("--{}: '{}' is not a number", what, t);
            }
        }
        i = j + 1;
    }
    if (out.empty()) fail("--{} is empty", what);
    return out;
}

// log-softmax of one row of logits into out.
void log_softmax(const float* x, int n, std::vector<double>& out) {
    out.resize(size_t(n));
    double m = x[0];
    for (int j = 1; j < n; ++j) m = std::max(m, double(x[j]));
    double z = 0;
    for (int j = 0; j < n; ++j) z += std::exp(double(x[j]) - m);
    const double l = m + std::log(z);
    for (int j = 0; j < n; ++j) out[size_t(j)] = double(x[j]) - l;
}

int argmax(const float* x, int n) {
    return int(std::max_element(x, x + n) - x);
}

void add_bytes(RunStats& st, const sim::LiveCache& c) {
    const auto& r = c.record();
    const size_t U = size_t(c.shape().n_layer) * size_t(c.shape().n_head_kv);
    for (int64_t s = 0; s < r.n_steps; ++s) {
        double b = 0, o = 0;
        for (size_t u = 0; u < U; ++u) {
            b += double(r.bytes[size_t(s) * U + u]);
            o += double(r.offload_bytes[size_t(s) * U + u]);
        }
        st.bytes_sum += b;
        st.offload_sum += o;
        st.bytes_peak = std::max(st.bytes_peak, b);
        st.offload_peak = std::max(st.offload_peak, o);
        ++st.byte_samples;
    }
}

double p95(std::vector<float> v) {
    if (v.empty()) return 0;
    const size_t k = std::min(v.size() - 1, size_t(std::floor(0.95 * double(v.size() - 1) + 0.5)));
    std::nth_element(v.begin(), v.begin() + ptrdiff_t(k), v.end());
    return v[k];
}

// --- progress: what an interrupted eval had finished ---------------------------------------
// Beside the output (OUT.progress.json, OUT being -o or else --csv), rewritten atomically
// (.partial, then renamed) after each finished window (ppl) or item (passkey / needle) but the
// last, removed once the outputs are written. `--resume` takes the runs' sums from it and goes
// on at the next unit; the sums are the same doubles, added in the same order, so the results
// equal an uninterrupted eval's (wall times aside). The last unit is never checkpointed: the
// live decisions written by -o are those of the last unit, recomputed on resume.

uint64_t fnv1a(const std::string& s) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}

// A run's sums as a progress file holds them (the policy identity is checked, not read back).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(RunStats, spec, nll, nll_full, kl, top1, scored, correct, items,
                                   ttft, bytes_sum, bytes_peak, offload_sum, offload_peak,
                                   byte_samples, tokens, seconds)

void write_progress(const std::string& path, const nlohmann::json& key, int64_t units_done,
                    const std::vector<RunStats>& stats) {
    nlohmann::json j;
    j["format"] = "kvscope-eval-progress";
    j["version"] = 1;
    j["key"] = key;
    j["units_done"] = units_done;
    j["runs"] = stats;
    const std::string tmp = path + ".partial";
    {
        std::ofstream o(tmp);
        o << j.dump() << "\n";
        if (!o.flush()) fail("cannot write the eval progress file '{}'", path);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
        fail("cannot write the eval progress file '{}': {}", path, std::strerror(errno));
}

// The units an earlier eval finished (their sums go into `stats`), or 0.
int64_t read_progress(const std::string& path, const nlohmann::json& key,
                      std::vector<RunStats>& stats) {
    std::ifstream f(path);
    if (!f) fail("cannot read the eval progress file '{}'", path);
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(f);
        if (j.at("format") != "kvscope-eval-progress" || j.at("version") != 1)
            fail("'{}' is not an eval progress file (format / version)", path);
    } catch (const nlohmann::json::exception& e) {
        fail("'{}' is not an eval progress file: {}", path, e.what());
    }
    try {
        const nlohmann::json& k = j.at("key");
        for (auto it = key.begin(); it != key.end(); ++it)
            if (!k.contains(it.key()) || k.at(it.key()) != it.value())
                fail(
                    "'{}' was written by a different eval (its {} differs): remove it, or run "
                    "without --resume",
                    path, it.key());
        const nlohmann::json& runs = j.at("runs");
        if (!runs.is_array() || runs.size() != stats.size())
            fail("'{}': {} runs, this eval has {}", path, runs.size(), stats.size());
        for (size_t r = 0; r < stats.size(); ++r) {
            if (runs[r].at("spec") != stats[r].spec)
                fail("'{}': run {} is '{}', this eval's is '{}'", path, r,
                     runs[r].at("spec").get<std::string>(), stats[r].spec);
            const std::string policy = stats[r].policy, budget = stats[r].budget,
                              mode = stats[r].mode;
            runs[r].get_to(stats[r]);
            stats[r].policy = policy;
            stats[r].budget = budget;
            stats[r].mode = mode;
        }
        const int64_t done = j.at("units_done").get<int64_t>();
        if (done < 0 || done >= k.at("units").get<int64_t>())
            fail("'{}': units_done {} out of range", path, done);
        return done;
    } catch (const nlohmann::json::exception& e) {
        fail("'{}' is not an eval progress file: {}", path, e.what());
    }
}

void run_eval(const EvalArgs& a) {
    if (a.task != "ppl" && a.task != "passkey" && a.task != "needle")
        fail("--task '{}': expected ppl, passkey or needle", a.task);
    if (a.policies.empty()) fail("give at least one --policy");
    if (a.task == "ppl" && a.text_file.empty()) fail("--task ppl needs --text-file FILE");
    if (a.task == "needle" && a.haystack.empty()) fail("--task needle needs --haystack FILE");
    const sim::Mode mode = parse_mode(a.live.mode);
    parse_kv_dtype(a.live.kv_dtype);
    const std::vector<sim::PolicySpec> all_specs = expand_specs(a.policies, a.budgets, a.quiet);
    const Shard shard = parse_shard(a.shard);
    std::vector<sim::PolicySpec> specs;
    for (size_t i = 0; i < all_specs.size(); ++i)
        if (shard.owns((long long)i)) specs.push_back(all_specs[i]);
    if (specs.empty()) fail("shard {}/{} has no runs", shard.index, shard.count);
    // One eval per output (the progress file beside it is this process's alone); the lock checks
    // the path, the other output is checked here.
    const std::string& primary = a.out.empty() ? a.csv : a.out;
    const OutputLock lock(primary);
    if (!a.out.empty() && !a.csv.empty()) sim::check_output_path(a.csv);
    if (a.resume && primary.empty())
        fail("--resume needs -o or --csv (the progress file is kept beside the output)");
    const std::string progress = primary.empty() ? "" : primary + ".progress.json";
    const std::string text = a.task == "ppl" ? read_text_file(a.text_file) : "";
    const std::string haystack = a.task == "needle" ? read_text_file(a.haystack) : "";

    LoadedModel lm = load_model(a.model);
    const Model& m = *lm.model;
    const Tokenizer& tok = *lm.tokenizer;
    const int V = m.config().n_vocab;
    const int n_ctx = m.config().n_ctx_train > 0 ? m.config().n_ctx_train : 1 << 20;
    std::vector<RunStats> stats(specs.size());
    // The live decisions of each run's last window / item (for --out; only the last is kept:
    // a LiveCache holds the whole compressed cache).
    std::vector<std::optional<sim::RunResult>> last(specs.size());
    std::vector<std::string> last_source(specs.size());
    const auto keep_last = [&](size_t r, const sim::LiveCache& c, int64_t n, std::string source) {
        if (a.out.empty()) return;
        last[r] = sim::live_run_result(c, n);
        last_source[r] = std::move(source);
    };
    // What a progress file must match to be resumed (units: windows or items).
    nlohmann::json key;
    key["task"] = a.task;
    key["mode"] = sim::mode_name(mode);
    key["kv_dtype"] = a.live.kv_dtype;
    key["model"] = a.model;
    key["specs"] = nlohmann::json::array();
    for (const auto& s : specs) key["specs"].push_back(s.canonical);
    key["shard"] = a.shard;
    key["text_fnv1a"] = fmt::format("{:016x}", fnv1a(text));
    key["haystack_fnv1a"] = fmt::format("{:016x}", fnv1a(haystack));
    key["ctx"] = a.ctx;
    key["max_windows"] = a.max_windows;
    key["prefill_len"] = a.prefill_len;
    key["lengths"] = a.lengths;
    key["depths"] = a.depths;
    key["seeds"] = a.seeds;
    key["first_seed"] = a.first_seed;
    key["n_predict"] = a.n_predict;
    // Units finished before (--resume) and a checkpoint after each later one but the last.
    int64_t start = 0;
    const auto begin_units = [&](int64_t n_units) {
        key["units"] = n_units;
        std::error_code ec;
        if (a.resume && std::filesystem::exists(progress, ec)) {
            start = read_progress(progress, key, stats);
            if (!a.quiet)
                fmt::print(stderr, "eval: resuming: {} of {} {} finished in {}\n", start, n_units,
                           a.task == "ppl" ? "windows" : "items", progress);
        }
    };
    const auto unit_done = [&](int64_t u, int64_t n_units) {
        if (!progress.empty() && u + 1 < n_units) write_progress(progress, key, u + 1, stats);
    };
    for (size_t i = 0; i < specs.size(); ++i) {
        stats[i].policy = specs[i].entry->info.name;
        stats[i].spec = specs[i].canonical;
        auto bit = specs[i].params.values.find("budget");
        stats[i].budget = bit != specs[i].params.values.end() ? bit->second : "";
        stats[i].mode = sim::mode_name(mode);
    }

    if (a.task == "ppl") {
        if (a.ctx > n_ctx) fail("--ctx {} exceeds the model's context length {}", a.ctx, n_ctx);
        const std::vector<int32_t> ids = tok.encode(text, false, false);
        int n_win = int(ids.size() / size_t(a.ctx));
        if (n_win == 0)
            fail("eval text '{}' has {} tokens, shorter than one window of --ctx {}", a.text_file,
                 ids.size(), a.ctx);
        if (a.max_windows > 0) n_win = std::min(n_win, a.max_windows);
        const int P =
            mode == sim::Mode::prefill ? int(a.prefill_len >= 0 ? a.prefill_len : a.ctx / 2) : 0;
        if (mode == sim::Mode::prefill && (P < 1 || P >= a.ctx - 1))
            fail("--prefill-len {} must be in [1, {}) for --ctx {}", P, a.ctx - 1, a.ctx);
        // Scored: the predictions made from positions [P, ctx - 1) (in prefill mode those after
        // the compression; in stream mode every one).
        begin_units(n_win);
        Progress bar("eval", int64_t(n_win) * int64_t(specs.size() + 1) * a.ctx, a.quiet, "tok");
        int64_t done = start * int64_t(specs.size() + 1) * a.ctx;
        std::vector<float> ref;
        std::vector<double> lf, lc;
        for (int w = int(start); w < n_win; ++w) {
            const int32_t* win = ids.data() + size_t(w) * size_t(a.ctx);
            {
                // The full model's rows of the scored positions [P, ctx - 1) alone (half of
                // them in prefill mode): ref holds (ctx - 1 - P) x n_vocab floats.
                DenseKvCache dense(m.kv_shape(), a.ctx);
                ref.assign(size_t(a.ctx - 1 - P) * size_t(V), 0.0f);
                prefill_each(
                    m, win, a.ctx, 0, dense, 256,
                    [&](int first, int count, const float* rows) {
                        for (int t = std::max(first, P); t < first + count && t + 1 < a.ctx; ++t)
                            std::copy(rows + size_t(t - first) * size_t(V),
                                      rows + size_t(t - first + 1) * size_t(V),
                                      ref.data() + size_t(t - P) * size_t(V));
                    },
                    nullptr, &bar, done);
                done += a.ctx;
                bar.update(done);
            }
            for (size_t r = 0; r < specs.size(); ++r) {
                RunStats& st = stats[r];
                auto cache = make_live_cache(m, specs[r], a.live, a.ctx, P, true,
                                             std::vector<int32_t>(win, win + a.ctx));
                // Each chunk's rows are scored as they come (the run's ctx x n_vocab logits are
                // never kept whole); the sums run over t in the same order as before. The scoring
                // time is not counted in the run's seconds.
                double scoring = 0;
                const auto t0 = std::chrono::steady_clock::now();
                prefill_each(
                    m, win, a.ctx, 0, *cache, 256,
                    [&](int first, int count, const float* rows) {
                        const auto s0 = std::chrono::steady_clock::now();
                        for (int t = std::max(first, P); t < first + count && t + 1 < a.ctx; ++t) {
                            const float* rf = ref.data() + size_t(t - P) * size_t(V);
                            const float* rc = rows + size_t(t - first) * size_t(V);
                            log_softmax(rf, V, lf);
                            log_softmax(rc, V, lc);
                            double kl = 0;
                            for (int j = 0; j < V; ++j)
                                kl += std::exp(lf[size_t(j)]) * (lf[size_t(j)] - lc[size_t(j)]);
                            const int32_t next = win[t + 1];
                            st.nll -= lc[size_t(next)];
                            st.nll_full -= lf[size_t(next)];
                            st.kl.push_back(float(std::max(0.0, kl)));
                            st.top1 += argmax(rf, V) == argmax(rc, V);
                            ++st.scored;
                        }
                        scoring +=
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - s0)
                                .count();
                    },
                    nullptr, &bar, done);
                st.seconds +=
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() -
                    scoring;
                done += a.ctx;
                st.tokens += a.ctx;
                add_bytes(st, *cache);
                if (w + 1 == n_win)
                    keep_last(r, *cache, a.ctx, fmt::format("{} (window {})", a.text_file, w));
            }
            unit_done(w, n_win);
        }
        bar.finish();
    } else {
        const std::vector<double> lengths = parse_list(a.lengths, "lengths");
        const std::vector<double> depths = parse_list(a.depths, "depths");
        if (a.seeds < 1) fail("--seeds {} must be >= 1", a.seeds);
        const int64_t n_items = int64_t(lengths.size() * depths.size()) * a.seeds;
        for (double len : lengths)
            if (len < 64 || len + a.n_predict > n_ctx)
                fail("--lengths {}: must be in [64, {}]", len, n_ctx - a.n_predict);
        for (double depth : depths)
            if (depth < 0 || depth > 1) fail("--depths {}: must be in [0, 1]", depth);
        begin_units(n_items);
        Progress bar("eval", n_items * int64_t(specs.size()), a.quiet, "item");
        int64_t done = start * int64_t(specs.size()), item = -1;
        std::vector<float> logits;
        for (double len : lengths) {
            for (double depth : depths) {
                for (int seed = a.first_seed; seed < a.first_seed + a.seeds; ++seed) {
                    if (++item < start) continue;
                    capture::TaskParams tp;
                    tp.kind = a.task;
                    tp.ctx = int(len);
                    tp.depth = depth;
                    tp.seed = uint64_t(seed);
                    tp.haystack = haystack;
                    const capture::TaskPrompt pr = capture::build_task_prompt(tok, tp);
                    const int P = int(pr.ids.size());
                    for (size_t r = 0; r < specs.size(); ++r) {
                        RunStats& st = stats[r];
                        auto cache =
                            make_live_cache(m, specs[r], a.live, P + a.n_predict, P, true, pr.ids);
                        const auto t0 = std::chrono::steady_clock::now();
                        prefill(m, pr.ids.data(), P, 0, *cache, 256, LogitsFor::Last, logits);
                        st.ttft +=
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                                .count();
                        std::vector<int32_t> out;
                        for (int i = 0; i < a.n_predict; ++i) {
                            const int32_t id = argmax(logits.data(), V);
                            if (tok.is_eog(id)) break;
                            out.push_back(id);
                            const int32_t pos = P + i;
                            m.forward(&id, &pos, 1, *cache, LogitsFor::Last, logits);
                        }
                        st.seconds +=
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                                .count();
                        st.tokens += P + int64_t(out.size());
                        st.correct += capture::answer_found(tok.decode(out), pr.task.answer);
                        ++st.items;
                        add_bytes(st, *cache);
                        if (item + 1 == n_items)
                            keep_last(r, *cache, P + int64_t(out.size()),
                                      fmt::format("{}:length={},depth={},seed={}", a.task, len,
                                                  depth, seed));
                        bar.update(++done);
                    }
                    unit_done(item, n_items);
                }
            }
        }
        bar.finish();
    }

    // Report.
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    for (const auto& st : stats) {
        nlohmann::ordered_json j;
        j["policy"] = st.policy;
        j["spec"] = st.spec;
        j["budget"] = st.budget;
        j["mode"] = st.mode;
        j["task"] = a.task;
        if (a.task == "ppl") {
            const double n = double(std::max<int64_t>(1, st.scored));
            double kl_sum = 0;
            for (float x : st.kl) kl_sum += x;
            j["ppl"] = std::exp(st.nll / n);
            j["ppl_full"] = std::exp(st.nll_full / n);
            j["delta_ppl"] = std::exp(st.nll / n) - std::exp(st.nll_full / n);
            j["kl_mean"] = kl_sum / n;
            j["kl_p95"] = p95(st.kl);
            j["top1_agree"] = double(st.top1) / n;
            j["tokens_scored"] = st.scored;
        } else {
            j["accuracy"] = st.items ? double(st.correct) / double(st.items) : 0.0;
            j["items"] = st.items;
            j["ttft_s"] = st.items ? st.ttft / double(st.items) : 0.0;
        }
        const double bs = double(std::max<int64_t>(1, st.byte_samples));
        j["kv_bytes_mean"] = st.bytes_sum / bs;
        j["kv_bytes_peak"] = st.bytes_peak;
        j["offload_bytes_mean"] = st.offload_sum / bs;
        j["offload_bytes_peak"] = st.offload_peak;
        j["tokens_per_s"] = st.seconds > 0 ? double(st.tokens) / st.seconds : 0.0;
        j["seconds"] = st.seconds;
        // What was compared (the viewer matches replay runs against these).
        j["kv_dtype"] = a.live.kv_dtype;
        if (a.task == "ppl") {
            j["ctx"] = a.ctx;
            j["prefill_len"] =
                st.mode == "prefill" ? (a.prefill_len >= 0 ? a.prefill_len : a.ctx / 2) : 0;
            j["text_file"] = a.text_file;
        } else {
            j["lengths"] = a.lengths;
            j["depths"] = a.depths;
            j["seeds"] = a.seeds;
            j["first_seed"] = a.first_seed;
        }
        rows.push_back(j);
    }
    if (!a.out.empty()) {
        std::vector<sim::RunResult> runs;
        for (size_t r = 0; r < specs.size(); ++r) {
            sim::RunResult rr = std::move(*last[r]);
            rr.trace_path = last_source[r];
            rr.trace_model = m.config().name;
            rr.trace_task = a.task == "ppl" ? "text" : a.task;
            rr.seconds = stats[r].seconds;
            const int64_t restores = rr.summary.restores;
            rr.summary = sim::summarize(rr);
            rr.summary.restores = restores;
            rr.closed_loop_json = rows[r].dump();
            runs.push_back(std::move(rr));
        }
        sim::write_results(a.out, runs, command_line());
    }
    if (!a.csv.empty()) {
        const std::string tmp = a.csv + ".partial";
        {
            std::ofstream o(tmp);
            if (!o) fail("cannot write '{}'", a.csv);
            std::vector<std::string> keys;
            for (auto it = rows.at(0).begin(); it != rows.at(0).end(); ++it)
                keys.push_back(it.key());
            for (size_t k = 0; k < keys.size(); ++k) o << (k ? "," : "") << keys[k];
            o << "\n";
            for (const auto& r : rows) {
                for (size_t k = 0; k < keys.size(); ++k) {
                    const auto& v = r.at(keys[k]);
                    std::string s = v.is_string() ? v.get<std::string>() : v.dump();
                    if (s.find_first_of(",\"") != std::string::npos) s = "\"" + s + "\"";
                    o << (k ? "," : "") << s;
                }
                o << "\n";
            }
            if (!o.flush()) fail("cannot write '{}'", a.csv);
        }
        std::rename(tmp.c_str(), a.csv.c_str());
    }
    if (!progress.empty()) {
        std::error_code ec;
        std::filesystem::remove(progress, ec);
    }
    if (a.json) {
        fmt::print("{}\n", rows.dump());
        return;
    }
    const double MiB = double(1 << 20);
    if (a.task == "ppl") {
        fmt::print("{:<10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>7}\n", "policy",
                   "budget", "ppl", "d ppl", "KL mean", "KL p95", "top-1", "KV MiB", "peak",
                   "offload", "tok/s");
        for (const auto& r : rows)
            fmt::print(
                "{:<10} {:>6} {:>8.3f} {:>+8.3f} {:>8.4f} {:>8.4f} {:>5.1f}% {:>8.2f} {:>8.2f} "
                "{:>8.2f} {:>7.1f}\n",
                r["policy"].get<std::string>(),
                r["budget"].get<std::string>().empty() ? "-" : r["budget"].get<std::string>(),
                r["ppl"].get<double>(), r["delta_ppl"].get<double>(), r["kl_mean"].get<double>(),
                r["kl_p95"].get<double>(), 100 * r["top1_agree"].get<double>(),
                r["kv_bytes_mean"].get<double>() / MiB, r["kv_bytes_peak"].get<double>() / MiB,
                r["offload_bytes_mean"].get<double>() / MiB, r["tokens_per_s"].get<double>());
    } else {
        fmt::print("{:<10} {:>6} {:>9} {:>6} {:>8} {:>8} {:>8} {:>7}\n", "policy", "budget",
                   "accuracy", "items", "KV MiB", "peak", "TTFT s", "tok/s");
        for (const auto& r : rows)
            fmt::print(
                "{:<10} {:>6} {:>8.1f}% {:>6} {:>8.2f} {:>8.2f} {:>8.2f} {:>7.1f}\n",
                r["policy"].get<std::string>(),
                r["budget"].get<std::string>().empty() ? "-" : r["budget"].get<std::string>(),
                100 * r["accuracy"].get<double>(), r["items"].get<int64_t>(),
                r["kv_bytes_mean"].get<double>() / MiB, r["kv_bytes_peak"].get<double>() / MiB,
                r["ttft_s"].get<double>(), r["tokens_per_s"].get<double>());
    }
}

}  // namespace

void register_eval(CLI::App& app) {
    auto a = std::make_shared<EvalArgs>();
    CLI::App* c = app.add_subcommand(
        "eval", "Closed loop: perplexity / KL / retrieval accuracy with the compressed cache");
    add_model_option(*c, a->model);
    c->add_option("--task", a->task, "ppl, passkey or needle")->capture_default_str();
    c->add_option("-f,--text-file", a->text_file, "ppl: the text");
    c->add_option("--haystack", a->haystack, "needle: the text to hide the needle in");
    c->add_option("--policy", a->policies, "Policy spec (repeat; kvscope policies)");
    c->add_option("--budgets", a->budgets, "Budgets crossed with specs without one (64,0.2,...)");
    c->add_option("-c,--ctx", a->ctx, "ppl: window length in tokens")
        ->check(CLI::Range(8, 1 << 20))
        ->capture_default_str();
    c->add_option("--max-windows", a->max_windows, "ppl: at most this many windows (0 = all)")
        ->check(CLI::NonNegativeNumber);
    c->add_option("--prefill-len", a->prefill_len,
                  "ppl, prefill mode: prompt tokens of each window (default ctx/2)");
    c->add_option("--lengths", a->lengths, "passkey/needle: prompt lengths in tokens")
        ->capture_default_str();
    c->add_option("--depths", a->depths, "passkey/needle: answer depths in [0, 1]")
        ->capture_default_str();
    c->add_option("--seeds", a->seeds, "passkey/needle: prompts per (length, depth)")
        ->capture_default_str();
    c->add_option("--first-seed", a->first_seed,
                  "passkey/needle: seeds first-seed .. first-seed + seeds - 1 (capture's --seed)")
        ->capture_default_str();
    c->add_option("-n,--n-predict", a->n_predict, "passkey/needle: tokens generated (greedy)")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
    add_live_options(*c, a->live, false);
    c->add_option(
        "--shard", a->shard,
        "Run only shard i of n (i/n, or auto: Slurm's job array): runs with index % n == i");
    c->add_option("--csv", a->csv, "One row per run");
    c->add_option("-o,--out", a->out,
                  "Results file (results format): per run its metrics (closed_loop_json) and the "
                  "live decisions of its last window / item, for the viewer and kvscope figures");
    c->add_flag("--json", a->json, "JSON array on stdout instead of the table");
    c->add_flag("-q,--quiet", a->quiet, "No progress bar");
    c->add_flag("--resume", a->resume,
                "Go on where an interrupted eval with the same outputs and options stopped (its "
                "finished windows / items are kept in OUT.progress.json, OUT = -o or --csv); "
                "the results equal an uninterrupted eval's");
    c->callback([a] { run_eval(*a); });
}

}  // namespace kvs::cli
