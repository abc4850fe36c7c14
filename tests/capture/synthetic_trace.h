// Test helper: a synthetic forward pass feeding a TraceWriter with known values, so a reader's
// output can be checked element by element (test_trace_roundtrip.cpp, test_trace_errors.cpp).
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "capture/trace_writer.h"

namespace kvs::test {

using capture::kTopK;
using capture::TokenRows;
using capture::TraceMeta;
using capture::TraceWriter;

inline ModelConfig synthetic_config() {
    ModelConfig c;
    c.arch = "llama";
    c.name = "synthetic";
    c.n_layer = 3;
    c.n_head = 4;
    c.n_head_kv = 2;
    c.head_dim = 8;
    c.n_vocab = 1000;
    c.rope_theta = 12345.0f;
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = 8.0f;
    c.rope_pairing = RopePairing::Interleaved;
    return c;
}

// The value the synthetic forward pass publishes for (layer, field, head, token, i).
inline float value(int layer, int field, int head, int64_t t, int i) {
    return float(std::sin(0.1 * double(t + 1) * (i + 1) + layer * 1.3 + head * 0.7 + field) *
                 (1 + t % 7) * 0.5);
}
inline float lse_value(int layer, int head, int64_t t) {
    return float(std::cos(0.05 * double(t) + layer + head) * 10);
}
inline std::string text_of(int64_t t) {
    if (t == 3) return "\xE2\x82";  // a partial UTF-8 sequence, as byte-level BPE tokens can be
    if (t == 4) return "\n\xC3\xA9 x";
    if (t == 5) return "";
    return "tok" + std::to_string(t);
}

// Feeds tokens [t0, t0 + n) to the writer as a forward call would: every model layer, then rows.
inline void feed(TraceWriter& w, const ModelConfig& c, int64_t t0, int n) {
    std::vector<int32_t> ids(static_cast<size_t>(n)), pos(static_cast<size_t>(n));
    for (int t = 0; t < n; ++t) {
        ids[size_t(t)] = int32_t((t0 + t) * 7919 % 1000);
        pos[size_t(t)] = int32_t(t0 + t);
    }
    const int d = c.head_dim;
    for (int l = 0; l < c.n_layer; ++l) {
        std::vector<float> f[4];
        for (int fi = 0; fi < 4; ++fi) {
            const int rows = (fi == 1 || fi == 2) ? c.n_head_kv : c.n_head;
            f[fi].resize(size_t(rows) * n * d);
            for (int h = 0; h < rows; ++h)
                for (int t = 0; t < n; ++t)
                    for (int i = 0; i < d; ++i)
                        f[fi][(size_t(h) * n + t) * d + i] = value(l, fi, h, t0 + t, i);
        }
        std::vector<float> lse(size_t(c.n_head) * n);
        for (int h = 0; h < c.n_head; ++h)
            for (int t = 0; t < n; ++t) lse[size_t(h) * n + t] = lse_value(l, h, t0 + t);
        LayerTap tap;
        tap.layer = l;
        tap.n_tok = n;
        tap.n_head = c.n_head;
        tap.n_head_kv = c.n_head_kv;
        tap.head_dim = d;
        tap.tokens = ids.data();
        tap.pos = pos.data();
        tap.q = f[0].data();
        tap.k = f[1].data();
        tap.v = f[2].data();
        tap.out = f[3].data();
        tap.lse = lse.data();
        w.on_layer(tap);
    }
    w.on_chunk_done(n, pos.data());
    std::vector<std::string> text(static_cast<size_t>(n));
    std::vector<double> lp(static_cast<size_t>(n));
    std::vector<float> lse(static_cast<size_t>(n)), tkl(size_t(n) * kTopK);
    std::vector<int32_t> tki(size_t(n) * kTopK);
    for (int t = 0; t < n; ++t) {
        const int64_t g = t0 + t;
        text[size_t(t)] = text_of(g);
        lp[size_t(t)] = -0.01 * double(g);
        lse[size_t(t)] = float(g) * 0.5f;
        for (int r = 0; r < kTopK; ++r) {
            tki[size_t(t) * kTopK + r] = int32_t(g + r);
            tkl[size_t(t) * kTopK + r] = float(g) - 0.25f * float(r);
        }
    }
    TokenRows rows;
    rows.n = n;
    rows.ids = ids.data();
    rows.pos = pos.data();
    rows.text = text.data();
    rows.logprob = lp.data();
    rows.logits_lse = lse.data();
    rows.topk_ids = tki.data();
    rows.topk_logits = tkl.data();
    w.append_tokens(rows);
}

// A finished trace of T tokens (3 layers, 4 heads, 2 KV heads, d = 8) at path.
inline void write_synthetic_trace(const std::string& path, int64_t T, int gzip_level = 1) {
    const ModelConfig c = synthetic_config();
    TraceMeta meta;
    meta.model = c;
    meta.gzip_level = gzip_level;
    meta.chunk_tokens = 16;
    TraceWriter w(path, meta);
    for (int64_t t = 0; t < T; t += 7) feed(w, c, t, int(std::min<int64_t>(7, T - t)));
    w.set_prompt_len(T);
    w.finish(true);
}

}  // namespace kvs::test
