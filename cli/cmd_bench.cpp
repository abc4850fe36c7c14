// kvscope bench: prefill and decode speed and peak memory of the engine.
#include <fmt/format.h>
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "capture/capture.h"
#include "common.h"
#include "engine/error.h"
#include "engine/runner.h"

namespace kvs::cli {

namespace {

struct BenchArgs {
    std::string model;
    std::vector<int> prefill = {512, 2048};
    int decode_ctx = 2048, decode_n = 32, reps = 2;
    bool json = false, capture = false;
};

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

double peak_rss_mib() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return double(ru.ru_maxrss) / 1024.0;
}

// Capture overhead: for each prefill length, the same forward pass (chunks of 256) three ways,
// interleaved, best of reps: logits of the last token only, logits of every token (what a
// capture needs for log-probabilities and top-k), and a capture with default settings (all
// layers, f16, gzip:1) to a temporary file.
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
        double t_last = 1e30, t_all = 1e30, t_cap = 1e30, t_writer = 0;
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
            t0 = now_s();
            capture::TraceMeta meta;
            meta.model = m.config();
            meta.text_width = capture::max_token_bytes(*lm.tokenizer);
            capture::TraceWriter w(path, meta);
            capture::CaptureRequest req;
            req.prompt.assign(toks.begin(), toks.begin() + n);
            req.chunk = chunk;
            capture::run_capture(m, lm.tokenizer.get(), req, w);
            w.finish(true);
            const double dt = now_s() - t0;
            if (dt < t_cap) {
                t_cap = dt;
                t_writer = w.seconds_writing();
            }
            bytes = w.file_bytes();
        }
        std::filesystem::remove(path);
        const double kb = double(bytes) / 1e3 / n;
        out["capture"][std::to_string(n)] = {{"prefill_last_logits_s", t_last},
                                             {"prefill_all_logits_s", t_all},
                                             {"capture_s", t_cap},
                                             {"capture_writer_s", t_writer},
                                             {"kb_per_token", kb}};
        if (!a.json)
            fmt::print(
                "capture {:5d} tokens: {:.2f} s (writer {:.2f} s) vs prefill {:.2f} s "
                "(+{:.0f}%), with all logits {:.2f} s (+{:.0f}%); {:.1f} KB/token\n",
                n, t_cap, t_writer, t_last, 100 * (t_cap / t_last - 1), t_all,
                100 * (t_cap / t_all - 1), kb);
    }
}

void run_bench(const BenchArgs& a) {
    LoadedModel lm = load_model(a.model);
    const Model& m = *lm.model;
    std::mt19937 rng(42);
    std::uniform_int_distribution<int32_t> dist(100, m.config().n_vocab - 1);
    int max_len = a.decode_ctx + a.decode_n;
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
    cache.clear();
    prefill(m, toks.data(), a.decode_ctx, 0, cache, 512, LogitsFor::Last, logits);
    const double t0 = now_s();
    for (int i = 0; i < a.decode_n; ++i) {
        const int32_t pos = a.decode_ctx + i;
        m.forward(&toks[size_t(pos)], &pos, 1, cache, LogitsFor::Last, logits);
    }
    const double dt = now_s() - t0;
    out["decode"] = {{"context", a.decode_ctx}, {"tokens_per_second", a.decode_n / dt}};
    out["peak_rss_mib"] = peak_rss_mib();
    if (a.json) {
        fmt::print("{}\n", out.dump());
    } else {
        fmt::print("decode at {} tokens of context: {:.1f} tokens/s\n", a.decode_ctx,
                   a.decode_n / dt);
        fmt::print("peak RSS: {:.0f} MiB, threads: {}\n", peak_rss_mib(), omp_get_max_threads());
    }
}

}  // namespace

void register_bench(CLI::App& app) {
    auto a = std::make_shared<BenchArgs>();
    CLI::App* c = app.add_subcommand("bench", "Measure prefill / decode speed and peak memory");
    add_model_option(*c, a->model);
    c->add_option("--prefill", a->prefill, "Prompt lengths to time")->capture_default_str();
    c->add_option("--decode-ctx", a->decode_ctx, "Context length for decode timing")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    c->add_option("--decode-n", a->decode_n, "Tokens to decode")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    c->add_option("--reps", a->reps, "Repetitions (best is reported)")->check(CLI::Range(1, 100));
    c->add_flag("--capture", a->capture,
                "Also time a trace capture of each prefill length against the plain forward pass");
    c->add_flag("--json", a->json, "One JSON object on stdout");
    c->callback([a] { run_bench(*a); });
}

}  // namespace kvs::cli
