// Attention probabilities from a trace's stored q and k (see attention.h), computed by the one
// attention routine (kernels/attend.h).
#include "viewdata/attention.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

#include "engine/error.h"
#include "kernels/attend.h"

namespace kvs::view {

using capture::Field;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {

struct LayerTensors {
    std::vector<float> q, k;  // q [n_head, T, d], k [n_head_kv, T, d]
};

LayerTensors read_layer(const TraceData& tr, int layer) {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    const int64_t T = tr.n_tokens();
    LayerTensors L;
    L.q = tr.reader->read_heads(Field::Q, layer, 0, T);
    L.k = tr.reader->read_heads(Field::K, layer, 0, T);
    return L;
}

}  // namespace

Matrix attention_matrix(const TraceData& tr, int layer, int kv_head, const ProgressFn& progress,
                        const std::atomic<bool>* cancel) {
    const auto& I = tr.info;
    const int64_t T = I.n_tokens;
    const int d = I.head_dim;
    std::vector<int> layers;
    if (layer < 0)
        layers = I.layers;
    else if (tr.layer_index(layer) >= 0)
        layers = {layer};
    else
        fail("trace '{}': layer {} was not captured", I.path, layer);
    std::vector<int> heads;  // query heads
    if (kv_head < 0) {
        for (int h = 0; h < I.n_head; ++h) heads.push_back(h);
    } else {
        if (kv_head >= I.n_head_kv) fail("KV head {} outside [0, {})", kv_head, I.n_head_kv);
        heads = tr.q_heads_of(kv_head);
    }
    Matrix out(T, T, 0.0f);
    const float scale = float(I.attn_scale);
    const int64_t block = 256;
    const double total = double(layers.size() * heads.size()) * double((T + block - 1) / block);
    double done = 0;
    RowMat s;
    std::vector<float> lse;
    for (int l : layers) {
        if (cancel && cancel->load()) return out;
        const LayerTensors L = read_layer(tr, l);
        for (int h : heads) {
            const int kv = I.kv_head_of_q_head[size_t(h)];
            for (int64_t t0 = 0; t0 < T; t0 += block) {
                if (cancel && cancel->load()) return out;
                const int64_t n = std::min(block, T - t0);
                // Keys after the block's last position are visible to none of its queries.
                int32_t maxp = tr.positions[size_t(t0)];
                for (int64_t r = 1; r < n; ++r) maxp = std::max(maxp, tr.positions[size_t(t0 + r)]);
                int64_t nk = T;
                while (nk > 0 && tr.positions[size_t(nk - 1)] > maxp) --nk;
                if (nk == 0) continue;
                // The one attention routine, probabilities only (kernels/attend.h).
                s.resize(Eigen::Index(n), Eigen::Index(nk));
                lse.resize(size_t(n));
                KVS_ASSERT(kernels::attend_cpu(
                               L.q.data() + (size_t(h) * size_t(T) + size_t(t0)) * size_t(d),
                               tr.positions.data() + t0, int(n),
                               L.k.data() + size_t(kv) * size_t(T) * size_t(d), nullptr,
                               tr.positions.data(), nullptr, int(nk), d, scale, nullptr, lse.data(),
                               s.data()) == kernels::Status::ok);
                for (int64_t r = 0; r < n; ++r) {
                    float* o = out.row(t0 + r);
                    const float* sr = s.data() + r * nk;
                    for (int64_t j = 0; j < nk; ++j) o[j] += sr[j];
                }
                done += 1;
                if (progress) progress(float(done / total));
            }
        }
    }
    const float inv = 1.0f / float(layers.size() * heads.size());
    for (int64_t t = 0; t < T; ++t) {
        const int32_t pt = tr.positions[size_t(t)];
        float* o = out.row(t);
        for (int64_t j = 0; j < T; ++j) o[j] = tr.positions[size_t(j)] <= pt ? o[j] * inv : kNaN;
    }
    return out;
}

Matrix cumulative_rows(const Matrix& p) {
    Matrix c(p.rows, p.cols, kNaN);
    std::vector<double> acc(static_cast<size_t>(p.cols), 0.0);
    for (int64_t t = 0; t < p.rows; ++t) {
        const float* in = p.row(t);
        float* o = c.row(t);
        for (int64_t j = 0; j < p.cols; ++j) {
            if (std::isnan(in[j])) continue;
            acc[size_t(j)] += in[j];
            o[j] = float(acc[size_t(j)]);
        }
    }
    return c;
}

std::vector<float> attention_at_step(const TraceData& tr, int64_t t) {
    const auto& I = tr.info;
    const int64_t T = I.n_tokens;
    if (t < 0 || t >= T) fail("step {} outside [0, {})", t, T);
    const int d = I.head_dim, HK = I.n_head_kv;
    const int64_t nl = int64_t(I.layers.size());
    std::vector<float> out(size_t(nl * HK * T), 0.0f);
    std::vector<int> group_size(size_t(HK), 0);
    for (int32_t g : I.kv_head_of_q_head) group_size[size_t(g)]++;
    const int32_t pt = tr.positions[size_t(t)];
    for (int64_t li = 0; li < nl; ++li) {
        std::vector<float> q, k;
        {
            std::lock_guard<std::mutex> lock(hdf5_mutex());
            q = tr.reader->read_heads(Field::Q, I.layers[size_t(li)], t, t + 1);  // [n_head, 1, d]
            k = tr.reader->read_heads(Field::K, I.layers[size_t(li)], 0, T);      // [HK, T, d]
        }
        std::vector<float> p(static_cast<size_t>(T));
        for (int h = 0; h < I.n_head; ++h) {
            const int kv = I.kv_head_of_q_head[size_t(h)];
            float l = 0;
            KVS_ASSERT(kernels::attend_cpu(q.data() + size_t(h) * d, &pt, 1,
                                           k.data() + size_t(kv) * size_t(T) * size_t(d), nullptr,
                                           tr.positions.data(), nullptr, int(T), d,
                                           float(I.attn_scale), nullptr, &l,
                                           p.data()) == kernels::Status::ok);
            float* o = out.data() + size_t((li * HK + kv) * T);
            const float w = 1.0f / float(group_size[size_t(kv)]);
            for (int64_t j = 0; j < T; ++j) o[j] += w * p[size_t(j)];
        }
    }
    for (int64_t li = 0; li < nl; ++li)
        for (int kv = 0; kv < HK; ++kv)
            for (int64_t j = 0; j < T; ++j)
                if (tr.positions[size_t(j)] > pt) out[size_t((li * HK + kv) * T + j)] = kNaN;
    return out;
}

double row_entropy(const float* p, int64_t n) {
    double h = 0, z = 0;
    for (int64_t j = 0; j < n; ++j)
        if (std::isfinite(p[j]) && p[j] > 0) z += p[j];
    if (z <= 0) return 0;
    for (int64_t j = 0; j < n; ++j)
        if (std::isfinite(p[j]) && p[j] > 0) {
            const double q = p[j] / z;
            h -= q * std::log(q);
        }
    return h;
}

}  // namespace kvs::view
