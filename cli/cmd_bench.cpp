// kvscope bench: prefill and decode speed and peak memory of the engine.
#include <fmt/format.h>
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "capture/capture.h"
#include "common.h"
#include "engine/error.h"
#include "engine/runner.h"
#include "live_options.h"
#include "simulator/policy.h"

namespace kvs::cli {

namespace {

struct BenchArgs {
    std::string model;
    std::vector<int> prefill = {512, 2048};
    std::vector<int> decode_ctx = {2048};
    int decode_n = 32, reps = 2;
    bool json = false, capture = false;
    std::vector<std::string> policies;  // --policy: decode over compressed caches too
    std::string kv_dtype = "f16";
};

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// CPU seconds of the whole process (all threads): on a busy machine, the work a step costs.
double cpu_s() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double peak_rss_mib() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return double(ru.ru_maxrss) / 1024.0;
}

// Capture overhead: for each prefill length, the same forward pass (chunks of 256) three ways,
// interleaved, best of reps: logits of the last token only, logits of every token (what a
// capture needs for log-probabilities and top-k), and captures with default settings (all
// layers, f16, gzip:1) to a temporary file, with --logits topk (the default), lse and none.
void bench_capture(const BenchArgs& a, const LoadedModel& lm, const std::vector<int32_t>& toks,
                   nlohmann::json& out) {
    const Model& m = *lm.model;
    const int chunk = 256;
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("kvscope-bench-" + std::to_string(getpid()) + ".h5"))
                                 .string();
    std::vector<float> logits;
    for (int n : a.prefill) {
        DenseKvCache cache(m.kv_shape(), n);
        double t_last = 1e30, t_all = 1e30, t_writer = 0;
        double t_mode[3] = {1e30, 1e30, 1e30};  // capture --logits topk, lse, none
        const double& t_cap = t_mode[0];
        uint64_t bytes = 0;
        for (int r = 0; r < a.reps; ++r) {
            double t0 = now_s();
            cache.clear();
            prefill(m, toks.data(), n, 0, cache, chunk, LogitsFor::Last, logits);
            t_last = std::min(t_last, now_s() - t0);
            t0 = now_s();
            cache.clear();
            std::vector<int32_t> pos(static_cast<size_t>(chunk));
            for (int i = 0; i < n; i += chunk) {
                const int nt = std::min(chunk, n - i);
                for (int t = 0; t < nt; ++t) pos[size_t(t)] = i + t;
                m.forward(toks.data() + i, pos.data(), nt, cache, LogitsFor::All, logits);
            }
            t_all = std::min(t_all, now_s() - t0);
            for (int k = 0; k < 3; ++k) {  // --logits topk, lse, none
                const auto mode = capture::LogitsMode(k);
                t0 = now_s();
                capture::TraceMeta meta;
                meta.model = m.config();
                meta.text_width = capture::max_token_bytes(*lm.tokenizer);
                meta.logits = capture::logits_mode_name(mode);
                capture::TraceWriter w(path, meta);
                capture::CaptureRequest req;
                req.prompt.assign(toks.begin(), toks.begin() + n);
                req.chunk = chunk;
                req.logits = mode;
                capture::run_capture(m, lm.tokenizer.get(), req, w);
                w.finish(true);
                const double dt = now_s() - t0;
                if (dt < t_mode[k]) {
                    t_mode[k] = dt;
                    if (k == 0) t_writer = w.seconds_writing();
                }
                if (k == 0) bytes = w.file_bytes();
            }
        }
        std::filesystem::remove(path);
        const double kb = double(bytes) / 1e3 / n;
        out["capture"][std::to_string(n)] = {{"prefill_last_logits_s", t_last},
                                             {"prefill_all_logits_s", t_all},
                                             {"capture_s", t_cap},
                                             {"capture_logits_lse_s", t_mode[1]},
                                             {"capture_logits_none_s", t_mode[2]},
                                             {"capture_writer_s", t_writer},
                                             {"kb_per_token", kb}};
        if (!a.json)
            fmt::print(
                "capture {:5d} tokens: {:.2f} s (writer {:.2f} s) vs prefill {:.2f} s "
                "(+{:.0f}%), with all logits {:.2f} s (+{:.0f}%); {:.1f} KB/token\n",
                n, t_cap, t_writer, t_last, 100 * (t_cap / t_last - 1), t_all,
                100 * (t_cap / t_all - 1), kb);
        if (!a.json)
            fmt::print(
                "capture {:5d} tokens, --logits lse: {:.2f} s (+{:.0f}%), none: {:.2f} s "
                "(+{:.0f}% over the prefill)\n",
                n, t_mode[1], 100 * (t_mode[1] / t_last - 1), t_mode[2],
                100 * (t_mode[2] / t_last - 1));
    }
}

// Read bandwidth of this machine with every OpenMP thread (GB/s): the sum of a 1 GiB buffer,
// best of 3. The floor of a decode step is the bytes it must read over this.
double read_bandwidth_gbs() {
    const size_t n = (size_t(1) << 30) / sizeof(float);
    std::vector<float> buf(n, 1.0f);
    double best = 1e30, sink = 0;
    for (int r = 0; r < 3; ++r) {
        const double t0 = now_s();
        double acc = 0;
#pragma omp parallel for reduction(+ : acc) schedule(static)
        for (int64_t b = 0; b < int64_t(n / 4096); ++b) {
            const float* p = buf.data() + size_t(b) * 4096;
            float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int i = 0; i < 4096; i += 8)
                for (int l = 0; l < 8; ++l) s[l] += p[i + l];
            acc += double(s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7]);
        }
        best = std::min(best, now_s() - t0);
        sink += acc;
    }
    if (sink < 0) fmt::print("{}", sink);  // keep the sums
    return double(n * sizeof(float)) / best / 1e9;
}

// Decode at --decode-ctx tokens of context with the dense fp32 cache and with each --policy's
// compressed cache (prefill mode: the context is the prompt, compressed once, then decoded),
// interleaved, best of reps: tokens/s, the cache's bytes (what attention reads per step) and
// the floor (model file + cache bytes over the measured read bandwidth).
void bench_decode_policies(const BenchArgs& a, int ctx, const LoadedModel& lm,
                           const std::vector<int32_t>& toks, double bw, nlohmann::json& out) {
    const Model& m = *lm.model;
    const int64_t cap = ctx + a.decode_n + 1;
    std::vector<std::string> names = {"dense"};
    for (const auto& p : a.policies) names.push_back(p);
    std::vector<sim::PolicySpec> specs;
    for (const auto& p : a.policies) specs.push_back(sim::parse_spec(p));
    LiveArgs la;
    la.mode = "prefill";
    la.kv_dtype = a.kv_dtype;
    // The weights a decode step streams: the model's file(s) (the output head is the tied
    // embedding table, read whole every step).
    double wbytes = 0;
    if (std::filesystem::is_directory(a.model)) {
        for (const auto& e : std::filesystem::directory_iterator(a.model))
            if (e.path().extension() == ".safetensors") wbytes += double(e.file_size());
    } else {
        wbytes = double(std::filesystem::file_size(a.model));
    }
    std::vector<double> best(names.size(), 1e30), best_cpu(names.size(), 1e30),
        kv_bytes(names.size(), 0);
    std::vector<float> logits;
    for (int r = 0; r < a.reps; ++r) {
        for (size_t c = 0; c < names.size(); ++c) {
            std::unique_ptr<KvCache> cache;
            if (c == 0)
                cache = std::make_unique<DenseKvCache>(m.kv_shape(), int(cap));
            else
                cache = make_live_cache(m, specs[c - 1], la, cap, ctx, false);
            prefill(m, toks.data(), ctx, 0, *cache, 512, LogitsFor::Last, logits);
            // The first decoded token compresses the prompt (prefill mode): not timed.
            int32_t pos = ctx;
            m.forward(&toks[size_t(pos)], &pos, 1, *cache, LogitsFor::Last, logits);
            const double t0 = now_s(), c0 = cpu_s();
            for (int i = 1; i < a.decode_n; ++i) {
                pos = ctx + i;
                m.forward(&toks[size_t(pos)], &pos, 1, *cache, LogitsFor::Last, logits);
            }
            best[c] = std::min(best[c], (now_s() - t0) / (a.decode_n - 1));
            best_cpu[c] = std::min(best_cpu[c], (cpu_s() - c0) / (a.decode_n - 1));
            // Long runs (minutes at 8k): each measurement as it comes, on stderr.
            fmt::print(stderr, "[bench] rep {} {}: {:.1f} ms/token (cpu {:.1f} ms), KV {:.1f} MB\n",
                       r + 1, names[c], 1e3 * (now_s() - t0) / (a.decode_n - 1),
                       1e3 * (cpu_s() - c0) / (a.decode_n - 1), double(cache->bytes()) / 1e6);
            kv_bytes[c] = double(cache->bytes());
        }
    }
    out["read_bandwidth_gbs"] = bw;
    out["model_file_bytes"] = wbytes;
    if (!a.json)
        fmt::print(
            "decode at {} tokens of context (read bandwidth {:.1f} GB/s, model {:.0f} MB):\n", ctx,
            bw, wbytes / 1e6);
    for (size_t c = 0; c < names.size(); ++c) {
        const double floor_s = (wbytes + kv_bytes[c]) / (bw * 1e9);
        out["decode_caches"].push_back({{"cache", names[c]},
                                        {"context", ctx},
                                        {"tokens_per_second", 1.0 / best[c]},
                                        {"ms_per_token", 1e3 * best[c]},
                                        {"cpu_ms_per_token", 1e3 * best_cpu[c]},
                                        {"kv_bytes", kv_bytes[c]},
                                        {"floor_ms_per_token", 1e3 * floor_s},
                                        {"speedup_vs_dense", best[0] / best[c]}});
        if (!a.json)
            fmt::print(
                "  {:<24} {:6.1f} tokens/s {:6.1f} ms/token (cpu {:6.1f} ms)  KV {:7.1f} MB  "
                "floor {:5.1f} ms  x{:.2f} vs dense\n",
                names[c], 1.0 / best[c], 1e3 * best[c], 1e3 * best_cpu[c], kv_bytes[c] / 1e6,
                1e3 * floor_s, best[0] / best[c]);
    }
}

void run_bench(const BenchArgs& a) {
    LoadedModel lm = load_model(a.model);
    const Model& m = *lm.model;
    std::mt19937 rng(42);
    std::uniform_int_distribution<int32_t> dist(100, m.config().n_vocab - 1);
    int max_len = 0;
    for (int ctx : a.decode_ctx) max_len = std::max(max_len, ctx + a.decode_n);
    for (int n : a.prefill) max_len = std::max(max_len, n);
    std::vector<int32_t> toks(static_cast<size_t>(max_len));
    for (auto& t : toks) t = dist(rng);
    DenseKvCache cache(m.kv_shape(), max_len);
    std::vector<float> logits;
    nlohmann::json out = {{"model", lm.weights->describe()},
                          {"threads", omp_get_max_threads()},
                          {"load_seconds", lm.load_seconds}};
    for (int n : a.prefill) {
        double best = 1e30;
        for (int r = 0; r < a.reps; ++r) {
            cache.clear();
            const double t0 = now_s();
            prefill(m, toks.data(), n, 0, cache, 512, LogitsFor::Last, logits);
            best = std::min(best, now_s() - t0);
        }
        out["prefill"][std::to_string(n)] = double(n) / best;
        if (!a.json)
            fmt::print("prefill {:5d} tokens: {:8.1f} tokens/s ({:.2f} s)\n", n, n / best, best);
    }
    if (a.capture) bench_capture(a, lm, toks, out);
    if (!a.policies.empty()) {
        const double bw = read_bandwidth_gbs();
        for (int ctx : a.decode_ctx) bench_decode_policies(a, ctx, lm, toks, bw, out);
        out["peak_rss_mib"] = peak_rss_mib();
        if (a.json) fmt::print("{}\n", out.dump());
        return;
    }
    // Decode: at each context, best of reps.
    out["decode"] = nlohmann::json::array();
    for (int ctx : a.decode_ctx) {
        double best = 1e30;
        for (int r = 0; r < a.reps; ++r) {
            cache.clear();
            prefill(m, toks.data(), ctx, 0, cache, 512, LogitsFor::Last, logits);
            const double t0 = now_s();
            for (int i = 0; i < a.decode_n; ++i) {
                const int32_t pos = ctx + i;
                m.forward(&toks[size_t(pos)], &pos, 1, cache, LogitsFor::Last, logits);
            }
            best = std::min(best, now_s() - t0);
        }
        out["decode"].push_back({{"context", ctx}, {"tokens_per_second", a.decode_n / best}});
        if (!a.json)
            fmt::print("decode at {} tokens of context: {:.1f} tokens/s\n", ctx, a.decode_n / best);
    }
    out["peak_rss_mib"] = peak_rss_mib();
    if (a.json)
        fmt::print("{}\n", out.dump());
    else
        fmt::print("peak RSS: {:.0f} MiB, threads: {}\n", peak_rss_mib(), omp_get_max_threads());
}

}  // namespace

void register_bench(CLI::App& app) {
    auto a = std::make_shared<BenchArgs>();
    CLI::App* c = app.add_subcommand("bench", "Measure prefill / decode speed and peak memory");
    add_model_option(*c, a->model);
    c->add_option("--prefill", a->prefill, "Prompt lengths to time")->capture_default_str();
    c->add_option("--decode-ctx", a->decode_ctx,
                  "Context lengths for decode timing (each: best of --reps)")
        ->check(CLI::Range(1, 1 << 20))
        ->delimiter(',')
        ->capture_default_str();
    c->add_option("--decode-n", a->decode_n, "Tokens to decode")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    c->add_option("--reps", a->reps, "Repetitions (best is reported)")->check(CLI::Range(1, 100));
    c->add_flag("--capture", a->capture,
                "Also time a trace capture of each prefill length against the plain forward pass");
    c->add_flag("--json", a->json, "One JSON object on stdout");
    c->add_option("--policy", a->policies,
                  "Also decode over this policy's compressed cache (repeatable; prefill mode: the "
                  "context is compressed once, then decoded), beside the dense fp32 cache");
    c->add_option("--kv-dtype", a->kv_dtype, "Full precision of the compressed caches (f16, f32)")
        ->capture_default_str();
    c->callback([a] { run_bench(*a); });
}

}  // namespace kvs::cli
