// Dense fp32 KV cache and the reference single-query attention.
#include "engine/kv_cache.h"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.h"

namespace kvs {

float attend_one(const float* q, int32_t qpos, const float* keys, const float* values,
                 const int32_t* kpos, int n, int d, float* out) {
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    const float scale = 1.0f / std::sqrt(float(d));
    thread_local Eigen::VectorXf s;
    s.resize(n);
    Eigen::Map<Eigen::VectorXf> o(out, d);
    // s = K q (a vectorized GEMV), then the causal mask by position.
    s.noalias() = Eigen::Map<const Mat>(keys, n, d) * Eigen::Map<const Eigen::VectorXf>(q, d);
    float m = kNegInf;
    for (int j = 0; j < n; ++j) {
        s[j] = kpos[j] <= qpos ? s[j] * scale : kNegInf;
        m = std::max(m, s[j]);
    }
    if (m == kNegInf) {
        o.setZero();
        return m;
    }
    double sum = 0.0;
    for (int j = 0; j < n; ++j) sum += s[j] = std::exp(s[j] - m);  // exp(-inf) = 0
    // out = V^T p / sum
    o.noalias() = Eigen::Map<const Mat>(values, n, d).transpose() * s;
    o *= float(1.0 / sum);
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
    if (n_tok < 4) {  // decode: one dot product per held key
        const int n_rows = shape_.n_head * n_tok;
#pragma omp parallel for schedule(dynamic, 1)
        for (int r = 0; r < n_rows; ++r) {
            const int h = r / n_tok, t = r % n_tok;
            const Slot& s = slot(il, h / group);
            const size_t off = (size_t(h) * n_tok + t) * d;
            lse[size_t(h) * n_tok + t] = attend_one(q + off, pos[t], s.k.data(), s.v.data(),
                                                    s.pos.data(), s.n, d, out + off);
        }
        return;
    }
    // Prefill: per query head, S = Q K^T (GEMM), masked softmax by position, O = P V (GEMM).
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const float scale = 1.0f / std::sqrt(float(d));
#pragma omp parallel for schedule(dynamic, 1)
    for (int h = 0; h < shape_.n_head; ++h) {
        const Slot& s = slot(il, h / group);
        Eigen::Map<const Mat> K(s.k.data(), s.n, d), V(s.v.data(), s.n, d);
        Eigen::Map<const Mat> Q(q + size_t(h) * n_tok * d, n_tok, d);
        Eigen::Map<Mat> O(out + size_t(h) * n_tok * d, n_tok, d);
        Mat S(n_tok, s.n);
        S.noalias() = Q * K.transpose();
        for (int t = 0; t < n_tok; ++t) {
            float* row = S.row(t).data();
            float m = -std::numeric_limits<float>::infinity();
            for (int j = 0; j < s.n; ++j) {
                row[j] = s.pos[size_t(j)] <= pos[t] ? row[j] * scale
                                                    : -std::numeric_limits<float>::infinity();
                m = std::max(m, row[j]);
            }
            if (m == -std::numeric_limits<float>::infinity()) {
                std::fill(row, row + s.n, 0.0f);
                lse[size_t(h) * n_tok + t] = m;
                continue;
            }
            double sum = 0;
            for (int j = 0; j < s.n; ++j) sum += row[j] = std::exp(row[j] - m);
            const float inv = float(1.0 / sum);
            for (int j = 0; j < s.n; ++j) row[j] *= inv;
            lse[size_t(h) * n_tok + t] = m + float(std::log(sum));
        }
        O.noalias() = S * V;
    }
}

int DenseKvCache::n_held(int il, int h_kv) const {
    return slot(il, h_kv).n;
}

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
