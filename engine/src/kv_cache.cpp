// Dense fp32 KV cache and the reference single-query attention.
#include "engine/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.h"

namespace kvs {

float attend_one(const float* q, int32_t qpos, const float* keys, const float* values,
                 const int32_t* kpos, int n, int d, float* out) {
    const float scale = 1.0f / std::sqrt(float(d));
    thread_local std::vector<float> s;
    s.resize(size_t(n));
    float m = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < n; ++j) {
        if (kpos[j] > qpos) {
            s[j] = -std::numeric_limits<float>::infinity();
            continue;
        }
        const float* kj = keys + size_t(j) * d;
        float dot = 0.0f;
        for (int c = 0; c < d; ++c) dot += q[c] * kj[c];
        s[j] = dot * scale;
        m = std::max(m, s[j]);
    }
    std::fill(out, out + d, 0.0f);
    if (m == -std::numeric_limits<float>::infinity()) return m;
    double sum = 0.0;
    for (int j = 0; j < n; ++j) {
        if (kpos[j] > qpos) continue;
        const float p = std::exp(s[j] - m);
        sum += p;
        const float* vj = values + size_t(j) * d;
        for (int c = 0; c < d; ++c) out[c] += p * vj[c];
    }
    const float inv = float(1.0 / sum);
    for (int c = 0; c < d; ++c) out[c] *= inv;
    return m + float(std::log(sum));
}

DenseKvCache::DenseKvCache(const KvShape& shape, int capacity)
    : shape_(shape), capacity_(capacity), slots_(size_t(shape.n_layer) * shape.n_head_kv) {
    KVS_ASSERT(capacity > 0 && shape.n_head_kv > 0 && shape.n_head % shape.n_head_kv == 0);
    for (auto& s : slots_) {
        s.k.resize(size_t(capacity) * shape.head_dim);
        s.v.resize(size_t(capacity) * shape.head_dim);
        s.pos.resize(size_t(capacity));
    }
}

void DenseKvCache::append(int il, int n_tok, const int32_t* pos, const float* k, const float* v) {
    const int d = shape_.head_dim;
    for (int h = 0; h < shape_.n_head_kv; ++h)
        if (slot(il, h).n + n_tok > capacity_)
            fail("KV cache full: layer {} head {} holds {} of {} entries, cannot append {} more",
                 il, h, slot(il, h).n, capacity_, n_tok);
    for (int h = 0; h < shape_.n_head_kv; ++h) {
        Slot& s = slot(il, h);
        std::copy_n(k + size_t(h) * n_tok * d, size_t(n_tok) * d, s.k.data() + size_t(s.n) * d);
        std::copy_n(v + size_t(h) * n_tok * d, size_t(n_tok) * d, s.v.data() + size_t(s.n) * d);
        std::copy_n(pos, n_tok, s.pos.data() + s.n);
        s.n += n_tok;
    }
}

void DenseKvCache::attend(int il, int n_tok, const int32_t* pos, const float* q, float* out,
                          float* lse) const {
    const int d = shape_.head_dim;
    const int group = shape_.n_head / shape_.n_head_kv;
    const int n_rows = shape_.n_head * n_tok;
#pragma omp parallel for schedule(dynamic, 4)
    for (int r = 0; r < n_rows; ++r) {
        const int h = r / n_tok, t = r % n_tok;
        const Slot& s = slot(il, h / group);
        const size_t off = (size_t(h) * n_tok + t) * d;
        lse[size_t(h) * n_tok + t] =
            attend_one(q + off, pos[t], s.k.data(), s.v.data(), s.pos.data(), s.n, d, out + off);
    }
}

int DenseKvCache::n_held(int il, int h_kv) const { return slot(il, h_kv).n; }

std::vector<int32_t> DenseKvCache::positions(int il, int h_kv) const {
    const Slot& s = slot(il, h_kv);
    return {s.pos.begin(), s.pos.begin() + s.n};
}

void DenseKvCache::evict(int il, int h_kv, const std::vector<int32_t>& drop) {
    Slot& s = slot(il, h_kv);
    std::vector<int32_t> sorted(drop);
    std::sort(sorted.begin(), sorted.end());
    const int d = shape_.head_dim;
    int w = 0;
    for (int r = 0; r < s.n; ++r) {
        if (std::binary_search(sorted.begin(), sorted.end(), s.pos[r])) continue;
        if (w != r) {
            std::copy_n(s.k.data() + size_t(r) * d, d, s.k.data() + size_t(w) * d);
            std::copy_n(s.v.data() + size_t(r) * d, d, s.v.data() + size_t(w) * d);
            s.pos[w] = s.pos[r];
        }
        ++w;
    }
    s.n = w;
}

size_t DenseKvCache::bytes() const {
    size_t n = 0;
    for (const auto& s : slots_) n += size_t(s.n) * (2 * shape_.head_dim * sizeof(float) + 4);
    return n;
}

void DenseKvCache::clear() {
    for (auto& s : slots_) s.n = 0;
}

}  // namespace kvs
