// Capture end to end on a tiny random model (no real model needed): the stored q, k, v of every
// layer and head reproduce the stored attention output and log-sum-exp; the stored
// log-probabilities and top-k are those of an independent prefill; generation and interruption.
#include <catch2/catch.hpp>
#include <cmath>

#include "capture/capture.h"
#include "capture/trace_reader.h"
#include "engine/runner.h"
#include "engine/sampler.h"
#include "engine/weights.h"
#include "tiny_model.h"
#include "trace_check.h"

using namespace kvs;
using namespace kvs::capture;

namespace {

std::unique_ptr<Model> tiny_model(const test::TinySpec& s, uint32_t seed, const std::string& name) {
    const test::HfTensors w = test::random_weights(s, seed);
    const std::string path = test::write_gguf(s, w, name, s.arch != "qwen2");
    return Model::load(*open_weights(path));
}

std::vector<int32_t> random_tokens(int n, int n_vocab, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& t : ids) t = int32_t(rng() % uint32_t(n_vocab));
    return ids;
}

}  // namespace

TEST_CASE("capture (tiny model): q, k, v reproduce o and lse, logprobs match a prefill", "[cpu]") {
    test::TinySpec llama;
    test::TinySpec qwen;
    qwen.arch = "qwen2";
    qwen.bias = true;
    qwen.n_head_kv = 1;
    int k = 0;
    for (const test::TinySpec& spec : {llama, qwen}) {
        const auto m = tiny_model(spec, 40 + uint32_t(k), "cap_tiny" + std::to_string(k) + ".gguf");
        const int V = m->config().n_vocab;
        const std::vector<int32_t> prompt = random_tokens(45, V, 3);
        for (StorageDtype dt : {StorageDtype::F32, StorageDtype::F16}) {
            DYNAMIC_SECTION(spec.arch << " " << dtype_name(dt)) {
                const std::string path = test::temp_path("cap_tiny.h5");
                TraceMeta meta;
                meta.model = m->config();
                meta.dtype = dt;
                meta.chunk_tokens = 16;
                CaptureRequest req;
                req.prompt = prompt;
                req.n_generate = 7;
                req.chunk = 10;  // prompt chunks of 10 across 16-token trace chunks
                CaptureResult res;
                {
                    TraceWriter w(path, meta);
                    w.set_prompt_len(int64_t(prompt.size()));
                    res = run_capture(*m, nullptr, req, w);
                    w.finish(!res.interrupted);
                }
                CHECK_FALSE(res.interrupted);
                CHECK(res.generated.size() == 7);
                CHECK(res.n_tokens == 52);
                const TraceReader r(path);
                REQUIRE(r.info().n_tokens == 52);
                CHECK(r.info().prompt_len == 45);
                CHECK(r.info().complete);

                const test::AttnCheck c = test::check_attention(r);
                INFO("rows " << c.n_rows << ", max o rel err " << c.max_o_rel << ", max lse err "
                             << c.max_lse_abs << ", worst err/tol " << c.max_ratio << "; "
                             << c.first_bad);
                CHECK(c.n_rows == spec.n_layer * spec.n_head * 52);
                CHECK(c.n_bad == 0);
                if (dt == StorageDtype::F32) CHECK(c.max_o_rel < 1e-5);
                // The check is sensitive: the output of another head does not pass.
                CHECK(test::check_attention(r, 1).n_bad > 0);

                // Token rows against an independent prefill of the same tokens (greedy, so every
                // generated token is the argmax of the logits before it).
                const std::vector<int32_t> ids = r.token_ids();
                CHECK(std::vector<int32_t>(ids.begin(), ids.begin() + 45) == prompt);
                CHECK(std::vector<int32_t>(ids.begin() + 45, ids.end()) == res.generated);
                DenseKvCache cache(m->kv_shape(), 52);
                std::vector<float> logits;
                prefill(*m, ids.data(), 52, 0, cache, 8, LogitsFor::All, logits);
                const auto lp = r.logprob();
                const auto lse = r.logits_lse();
                const auto tki = r.topk_ids();
                const auto tkl = r.topk_logits();
                const auto pos = r.positions();
                int bad = 0;
                for (int t = 0; t < 52; ++t) {
                    const float* row = logits.data() + size_t(t) * V;
                    bad += pos[size_t(t)] != t;
                    if (t + 1 < 52)
                        bad +=
                            std::fabs(lp[size_t(t)] - log_prob(row, V, ids[size_t(t) + 1])) > 1e-4;
                    else
                        bad += !std::isnan(lp[size_t(t)]);
                    if (t >= 44 && t + 1 < 52) bad += ids[size_t(t) + 1] != argmax(row, V);
                    double z = 0;
                    for (int j = 0; j < V; ++j) z += std::exp(double(row[j]));
                    bad += std::fabs(lse[size_t(t)] - std::log(z)) > 1e-4;
                    for (int q = 0; q < kTopK; ++q) {
                        const int32_t id = tki[size_t(t) * kTopK + q];
                        bad += std::fabs(tkl[size_t(t) * kTopK + q] - row[id]) > 1e-4;
                        if (q > 0)
                            bad += tkl[size_t(t) * kTopK + q] > tkl[size_t(t) * kTopK + q - 1];
                    }
                    bad += tki[size_t(t) * kTopK] != argmax(row, V);
                }
                CHECK(bad == 0);
            }
        }
        ++k;
    }
}

TEST_CASE("capture (tiny model): --logits lse and none keep q/k/v/o and drop rows as documented",
          "[cpu]") {
    test::TinySpec spec;
    const auto m = tiny_model(spec, 47, "cap_logits.gguf");
    const std::vector<int32_t> prompt = random_tokens(45, m->config().n_vocab, 5);
    auto capture = [&](LogitsMode mode) {
        const std::string path =
            test::temp_path(std::string("cap_") + logits_mode_name(mode) + ".h5");
        TraceMeta meta;
        meta.model = m->config();
        meta.dtype = StorageDtype::F32;
        meta.logits = logits_mode_name(mode);
        CaptureRequest req;
        req.prompt = prompt;
        req.n_generate = 5;
        req.chunk = 10;
        req.logits = mode;
        TraceWriter w(path, meta);
        w.set_prompt_len(45);
        const CaptureResult res = run_capture(*m, nullptr, req, w);
        w.finish(!res.interrupted);
        return path;
    };
    const TraceReader all(capture(LogitsMode::topk));
    CHECK(all.info().schema_version == kSchemaVersion);
    CHECK(all.info().logits == "topk");
    for (LogitsMode mode : {LogitsMode::lse, LogitsMode::none}) {
        const TraceReader r(capture(mode));
        INFO(logits_mode_name(mode));
        CHECK(r.info().logits == logits_mode_name(mode));
        REQUIRE(r.info().n_tokens == 50);
        // The same generation and the same per-layer tensors, bit for bit.
        CHECK(r.token_ids() == all.token_ids());
        for (int l = 0; l < spec.n_layer; ++l)
            for (Field f : {Field::Q, Field::K, Field::V, Field::O})
                CHECK(r.read_heads(f, l, 0, 50) == all.read_heads(f, l, 0, 50));
        const auto lp = r.logprob(), lp_all = all.logprob();
        const auto lse = r.logits_lse(), lse_all = all.logits_lse();
        const auto tki = r.topk_ids();
        const auto tki_all = all.topk_ids();
        int bad = 0;
        for (int t = 0; t < 50; ++t) {
            // none: prompt rows without logits but each chunk's last (9, 19, ..., 44).
            const bool has = mode == LogitsMode::lse || t >= 44 || t % 10 == 9;
            const bool has_topk = mode == LogitsMode::none && t >= 45;
            // lse: the same rows, the same bits; none: a chunk's last row from the LM head run on
            // it alone (another GEMM shape), equal to rounding.
            const double tol = mode == LogitsMode::lse ? 0.0 : 1e-4;
            if (has) {
                bad += t + 1 < 50 && std::fabs(lp[size_t(t)] - lp_all[size_t(t)]) > tol;
                bad += std::fabs(lse[size_t(t)] - lse_all[size_t(t)]) > tol;
            } else {
                bad += !std::isnan(lp[size_t(t)]) + !std::isnan(lse[size_t(t)]);
            }
            for (int q = 0; q < kTopK; ++q)
                bad +=
                    tki[size_t(t) * kTopK + q] != (has_topk ? tki_all[size_t(t) * kTopK + q] : -1);
        }
        CHECK(bad == 0);
    }
}

TEST_CASE("capture (tiny model): a stop request ends after the forward call in flight", "[cpu]") {
    test::TinySpec spec;
    const auto m = tiny_model(spec, 9, "cap_stop.gguf");
    const std::string path = test::temp_path("cap_stop.h5");
    TraceMeta meta;
    meta.model = m->config();
    meta.chunk_tokens = 16;
    CaptureRequest req;
    req.prompt = random_tokens(50, m->config().n_vocab, 4);
    req.n_generate = 5;
    req.chunk = 12;
    int calls = 0;
    CaptureResult res;
    std::vector<int64_t> progress;
    {
        TraceWriter w(path, meta);
        w.set_prompt_len(50);
        res = run_capture(
            *m, nullptr, req, w, [&] { return ++calls > 3; },
            [&](int64_t done) { progress.push_back(done); });
        w.finish(!res.interrupted);
    }
    CHECK(res.interrupted);
    CHECK(res.n_tokens == 36);
    CHECK(progress == std::vector<int64_t>{12, 24, 36});
    const TraceReader r(path);
    CHECK_FALSE(r.info().complete);
    CHECK(r.info().n_tokens == 36);
    CHECK(r.info().prompt_len == 36);
    CHECK(std::isnan(r.logprob()[35]));
    CHECK(test::check_attention(r).n_bad == 0);

    // During generation: the token in flight is finished, then the capture stops.
    calls = 0;
    {
        TraceWriter w(path, meta);
        res = run_capture(*m, nullptr, req, w, [&] { return ++calls > 6; });
        w.finish(!res.interrupted);
    }
    CHECK(res.interrupted);
    CHECK(res.n_tokens == 50 + 2);
    CHECK(TraceReader(path).info().n_tokens == 52);
}
