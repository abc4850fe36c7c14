// Test helper: a small trace whose o and lse are computed exactly (in double) from random q, k,
// v, so that replay metrics can be checked against hand-made situations. Optionally one "hot"
// token that every query attends to almost exclusively.
#pragma once
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "capture/trace_writer.h"

namespace kvs::test {

struct AttnTraceOptions {
    int64_t T = 160;
    int n_layer = 2, n_head = 4, n_kv = 2, d = 16;
    capture::StorageDtype dtype = capture::StorageDtype::F32;
    int hot = -1;             // position of the hot token (-1: none)
    int hot_kv = -1;          // the KV head whose queries it draws (-1: all; the others diffuse)
    int hot_layer = -1;       // the layer it is hot in (-1: all)
    int flat_layer = -1;      // a layer whose queries are all zero: exactly uniform attention
    int64_t prompt_len = -1;  // -1: T (a text trace)
    bool complete = true;
    uint64_t seed = 1;
    int id_period = 997;       // token ids: t % id_period
    int induction_layer = -1;  // a layer whose KV head `induction_kv` is an induction head:
    int induction_kv = -1;     // query t attends to the tokens j with ids[j - 1] == ids[t]
                               // (needs d >= id_period)
};

class Lcg {
  public:
    explicit Lcg(uint64_t s) : s_(s * 6364136223846793005ULL + 1442695040888963407ULL) {}
    double uniform() {  // [-1, 1)
        s_ = s_ * 6364136223846793005ULL + 1442695040888963407ULL;
        return double(s_ >> 11) / double(1ULL << 53) * 2.0 - 1.0;
    }

  private:
    uint64_t s_;
};

inline void write_attn_trace(const std::string& path, const AttnTraceOptions& o) {
    ModelConfig c;
    c.arch = "llama";
    c.name = "attn-test";
    c.n_layer = o.n_layer;
    c.n_head = o.n_head;
    c.n_head_kv = o.n_kv;
    c.head_dim = o.d;
    c.n_vocab = 1000;
    c.rope_theta = 10000.0f;
    capture::TraceMeta meta;
    meta.model = c;
    meta.dtype = o.dtype;
    meta.chunk_tokens = 32;
    capture::TraceWriter w(path, meta);
    const int64_t T = o.T;
    const int d = o.d, H = o.n_head, Hkv = o.n_kv;
    const double scale = 1.0 / std::sqrt(double(d));
    Lcg rng(o.seed);
    std::vector<int32_t> ids(static_cast<size_t>(T)), pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
        ids[size_t(t)] = int32_t(t % o.id_period);
        pos[size_t(t)] = int32_t(t);
    }
    for (int l = 0; l < o.n_layer; ++l) {
        std::vector<float> q(size_t(H) * T * d), k(size_t(Hkv) * T * d), v(size_t(Hkv) * T * d),
            out(size_t(H) * T * d), lse(size_t(H) * T);
        for (auto& x : q) x = float(rng.uniform());
        for (auto& x : k) x = float(rng.uniform());
        for (auto& x : v) x = float(rng.uniform());
        if (l == o.flat_layer) std::fill(q.begin(), q.end(), 0.0f);
        if (o.hot >= 0 && (o.hot_layer < 0 || l == o.hot_layer)) {
            for (int g = 0; g < Hkv; ++g) {
                if (o.hot_kv >= 0 && g != o.hot_kv) continue;
                for (int i = 0; i < d; ++i) k[(size_t(g) * T + size_t(o.hot)) * d + i] = 1.5f;
            }
            for (int h = 0; h < H; ++h) {
                if (o.hot_kv >= 0 && h / (H / Hkv) != o.hot_kv) continue;
                for (size_t i = size_t(h) * T * d; i < size_t(h + 1) * T * d; ++i)
                    q[i] = 1.5f + 0.3f * q[i];
            }
        }
        if (l == o.induction_layer) {
            // Key j: one-hot of ids[j - 1] (the token before it); query t: one-hot of ids[t]. A
            // match scores 4 * 4 * scale above the rest.
            const int P = o.id_period;
            for (int64_t j = 0; j < T; ++j)
                for (int i = 0; i < d; ++i)
                    k[(size_t(o.induction_kv) * T + size_t(j)) * d + i] =
                        j >= 1 && i == int((j - 1) % P) ? 4.0f : 0.0f;
            for (int h = 0; h < H; ++h) {
                if (h / (H / Hkv) != o.induction_kv) continue;
                for (int64_t t = 0; t < T; ++t)
                    for (int i = 0; i < d; ++i)
                        q[(size_t(h) * T + size_t(t)) * d + i] = i == int(t % P) ? 4.0f : 0.0f;
            }
        }
        for (int h = 0; h < H; ++h) {
            const int g = h / (H / Hkv);
            for (int64_t t = 0; t < T; ++t) {
                const float* qr = &q[(size_t(h) * T + size_t(t)) * d];
                std::vector<double> s(static_cast<size_t>(t + 1));
                double m = -1e300;
                for (int64_t j = 0; j <= t; ++j) {
                    const float* kr = &k[(size_t(g) * T + size_t(j)) * d];
                    double acc = 0;
                    for (int i = 0; i < d; ++i) acc += double(qr[i]) * double(kr[i]);
                    s[size_t(j)] = acc * scale;
                    m = std::max(m, s[size_t(j)]);
                }
                double z = 0;
                for (auto& x : s) z += std::exp(x - m);
                lse[size_t(h) * T + size_t(t)] = float(m + std::log(z));
                for (int i = 0; i < d; ++i) {
                    double acc = 0;
                    for (int64_t j = 0; j <= t; ++j)
                        acc +=
                            std::exp(s[size_t(j)] - m) / z * v[(size_t(g) * T + size_t(j)) * d + i];
                    out[(size_t(h) * T + size_t(t)) * d + i] = float(acc);
                }
            }
        }
        LayerTap tap;
        tap.layer = l;
        tap.n_tok = int(T);
        tap.n_head = H;
        tap.n_head_kv = Hkv;
        tap.head_dim = d;
        tap.tokens = ids.data();
        tap.pos = pos.data();
        tap.q = q.data();
        tap.k = k.data();
        tap.v = v.data();
        tap.out = out.data();
        tap.lse = lse.data();
        w.on_layer(tap);
    }
    w.on_chunk_done(int(T), pos.data());
    std::vector<std::string> text(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) text[size_t(t)] = "t" + std::to_string(t);
    std::vector<double> lp(static_cast<size_t>(T), -1.0);
    std::vector<float> llse(static_cast<size_t>(T), 0.0f), tkl(size_t(T) * capture::kTopK, 0.0f);
    std::vector<int32_t> tki(size_t(T) * capture::kTopK, 0);
    capture::TokenRows rows;
    rows.n = int(T);
    rows.ids = ids.data();
    rows.pos = pos.data();
    rows.text = text.data();
    rows.logprob = lp.data();
    rows.logits_lse = llse.data();
    rows.topk_ids = tki.data();
    rows.topk_logits = tkl.data();
    w.append_tokens(rows);
    w.set_prompt_len(o.prompt_len < 0 ? T : o.prompt_len);
    w.finish(o.complete);
}

// The trace of option set `o` as file `name` in a per-process temporary folder (`prefix` names the
// test binary's folder), written on first use.
inline std::string cached_attn_trace(const AttnTraceOptions& o, const std::string& name,
                                     const std::string& prefix) {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / (prefix + std::to_string(getpid()));
    fs::create_directories(dir);
    const std::string p = (dir / name).string();
    if (!fs::exists(p)) write_attn_trace(p, o);
    return p;
}

}  // namespace kvs::test
