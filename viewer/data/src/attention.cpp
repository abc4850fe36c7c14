// Attention probabilities from a trace's stored q and k (see attention.h), computed by the one
// attention routine (kernels/attend.h).
#include "viewdata/attention.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <memory>

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

struct Selection {
    std::vector<int> layers;  // model layer indices
    std::vector<int> heads;   // query heads
};

Selection select(const TraceData& tr, int layer, int kv_head) {
    const auto& I = tr.info;
    Selection s;
    if (layer < 0)
        s.layers = I.layers;
    else if (tr.layer_index(layer) >= 0)
        s.layers = {layer};
    else
        fail("trace '{}': layer {} was not captured", I.path, layer);
    if (kv_head < 0) {
        for (int h = 0; h < I.n_head; ++h) s.heads.push_back(h);
    } else {
        if (kv_head >= I.n_head_kv) fail("KV head {} outside [0, {})", kv_head, I.n_head_kv);
        s.heads = tr.q_heads_of(kv_head);
    }
    return s;
}

}  // namespace

Matrix attention_matrix(const TraceData& tr, int layer, int kv_head, const ProgressFn& progress,
                        const std::atomic<bool>* cancel) {
    const auto& I = tr.info;
    const int64_t T = I.n_tokens;
    const int d = I.head_dim;
    const auto [layers, heads] = select(tr, layer, kv_head);
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

namespace {

// The attention of a selection, cells [r0, r1) x [c0, c1), from the stored q and k: the one
// routine over the keys [c0, c1) alone, rescaled to the full softmax by the row's lse over all
// the keys it sees (lse_full, from the first pass): p = p_sub * exp(lse_sub - lse_full).
struct AttentionCells {
    std::shared_ptr<const TraceData> tr;
    Selection sel;
    std::vector<float> lse_full;  // [layer, head, T], filled by the first pass
    // Cumulative attention: the column sums of the rows before each checkpoint row.
    bool cumulative = false;
    std::vector<int64_t> cp_rows;
    std::vector<double> cp_acc;  // [checkpoint, T]

    void attention(int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* out) const {
        const auto& I = tr->info;
        const int64_t T = I.n_tokens, n = r1 - r0, nc = c1 - c0;
        const int d = I.head_dim;
        const size_t nh = sel.heads.size();
        std::fill(out, out + n * nc, 0.0f);
        std::vector<float> probs(static_cast<size_t>(n * nc)), lse(static_cast<size_t>(n));
        for (size_t li = 0; li < sel.layers.size(); ++li) {
            std::vector<float> q, k;
            {
                std::lock_guard<std::mutex> lock(hdf5_mutex());
                q = tr->reader->read_heads(Field::Q, sel.layers[li], r0, r1);
                k = tr->reader->read_heads(Field::K, sel.layers[li], c0, c1);
            }
            for (size_t hi = 0; hi < nh; ++hi) {
                const int h = sel.heads[hi];
                const int kv = I.kv_head_of_q_head[size_t(h)];
                KVS_ASSERT(kernels::attend_cpu(q.data() + size_t(h) * size_t(n) * size_t(d),
                                               tr->positions.data() + r0, int(n),
                                               k.data() + size_t(kv) * size_t(nc) * size_t(d),
                                               nullptr, tr->positions.data() + c0, nullptr, int(nc),
                                               d, float(I.attn_scale), nullptr, lse.data(),
                                               probs.data()) == kernels::Status::ok);
                const float* lf = lse_full.data() + (li * nh + hi) * size_t(T);
                for (int64_t i = 0; i < n; ++i) {
                    const float f = std::exp(lse[size_t(i)] - lf[r0 + i]);
                    const float* pr = probs.data() + i * nc;
                    float* o = out + i * nc;
                    for (int64_t j = 0; j < nc; ++j) o[j] += pr[j] * f;
                }
            }
        }
        finish(r0, r1, c0, c1, out);
    }

    // The mean over the selection, NaN where the key is not visible.
    void finish(int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* out) const {
        const float inv = 1.0f / float(sel.layers.size() * sel.heads.size());
        const int64_t nc = c1 - c0;
        for (int64_t i = 0; i < r1 - r0; ++i) {
            const int32_t pt = tr->positions[size_t(r0 + i)];
            float* o = out + i * nc;
            for (int64_t j = 0; j < nc; ++j)
                o[j] = tr->positions[size_t(c0 + j)] <= pt ? o[j] * inv : kNaN;
        }
    }

    void cells(int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* out) const {
        if (!cumulative) return attention(r0, r1, c0, c1, out);
        // From the last checkpoint at or before r0: its sums, then the rows down to r1.
        const size_t c =
            size_t(std::upper_bound(cp_rows.begin(), cp_rows.end(), r0) - cp_rows.begin() - 1);
        const int64_t from = cp_rows[c], nc = c1 - c0, T = tr->info.n_tokens;
        std::vector<float> p(size_t((r1 - from) * nc));
        attention(from, r1, c0, c1, p.data());
        std::vector<double> acc(cp_acc.begin() + std::ptrdiff_t(c * size_t(T) + size_t(c0)),
                                cp_acc.begin() + std::ptrdiff_t(c * size_t(T) + size_t(c1)));
        for (int64_t r = from; r < r1; ++r) {
            const float* pr = p.data() + (r - from) * nc;
            float* o = r >= r0 ? out + (r - r0) * nc : nullptr;
            for (int64_t j = 0; j < nc; ++j) {
                if (std::isnan(pr[j])) {
                    if (o) o[j] = kNaN;
                    continue;
                }
                acc[size_t(j)] += pr[j];
                if (o) o[j] = float(acc[size_t(j)]);
            }
        }
    }
};

}  // namespace

std::unique_ptr<TiledHeat> attention_heat(std::shared_ptr<const TraceData> trace, int layer,
                                          int kv_head, bool cumulative, size_t budget_bytes,
                                          const ProgressFn& progress,
                                          const std::atomic<bool>* cancel) {
    const TraceData& tr = *trace;
    const auto& I = tr.info;
    const int64_t T = I.n_tokens;
    const int d = I.head_dim;
    auto src = std::make_shared<AttentionCells>();
    src->tr = trace;
    src->sel = select(tr, layer, kv_head);
    src->cumulative = cumulative;
    const size_t nl = src->sel.layers.size(), nh = src->sel.heads.size();
    src->lse_full.assign(nl * nh * size_t(T), 0.0f);
    auto heat = std::make_unique<TiledHeat>(
        T, T, budget_bytes, [src](int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* out) {
            src->cells(r0, r1, c0, c1, out);
        });
    // The first pass, one band of rows at a time over every key a row sees: the probabilities
    // by the one routine, the lse kept for later blocks.
    const int64_t band = heat->band_rows();
    const int64_t n_bands = (T + band - 1) / band;
    const int64_t cp_every = std::max<int64_t>(1, (n_bands + 255) / 256);  // <= 256 checkpoints
    std::vector<double> acc(cumulative ? size_t(T) : 0, 0.0);
    std::vector<float> cells, probs;
    for (int64_t b = 0; b < n_bands; ++b) {
        const int64_t r0 = b * band, n = std::min(band, T - r0);
        int32_t maxp = tr.positions[size_t(r0)];
        for (int64_t r = 1; r < n; ++r) maxp = std::max(maxp, tr.positions[size_t(r0 + r)]);
        int64_t nk = T;
        while (nk > 0 && tr.positions[size_t(nk - 1)] > maxp) --nk;
        cells.assign(size_t(n * T), 0.0f);
        probs.resize(size_t(n * nk));
        for (size_t li = 0; li < nl && nk > 0; ++li) {
            if (cancel && cancel->load()) return nullptr;
            std::vector<float> q, k;
            {
                std::lock_guard<std::mutex> lock(hdf5_mutex());
                q = tr.reader->read_heads(Field::Q, src->sel.layers[li], r0, r0 + n);
                k = tr.reader->read_heads(Field::K, src->sel.layers[li], 0, nk);
            }
            for (size_t hi = 0; hi < nh; ++hi) {
                const int h = src->sel.heads[hi];
                const int kv = I.kv_head_of_q_head[size_t(h)];
                KVS_ASSERT(kernels::attend_cpu(
                               q.data() + size_t(h) * size_t(n) * size_t(d),
                               tr.positions.data() + r0, int(n),
                               k.data() + size_t(kv) * size_t(nk) * size_t(d), nullptr,
                               tr.positions.data(), nullptr, int(nk), d, float(I.attn_scale),
                               nullptr, src->lse_full.data() + (li * nh + hi) * size_t(T) + r0,
                               probs.data()) == kernels::Status::ok);
                for (int64_t i = 0; i < n; ++i) {
                    const float* pr = probs.data() + i * nk;
                    float* o = cells.data() + i * T;
                    for (int64_t j = 0; j < nk; ++j) o[j] += pr[j];
                }
            }
            if (progress) progress(float((double(b) + double(li + 1) / double(nl)) / n_bands));
        }
        src->finish(r0, r0 + n, 0, T, cells.data());
        if (cumulative) {
            if (b % cp_every == 0) {
                src->cp_rows.push_back(r0);
                src->cp_acc.insert(src->cp_acc.end(), acc.begin(), acc.end());
            }
            for (int64_t i = 0; i < n; ++i) {
                float* o = cells.data() + i * T;
                for (int64_t j = 0; j < T; ++j) {
                    if (std::isnan(o[j])) continue;
                    acc[size_t(j)] += o[j];
                    o[j] = float(acc[size_t(j)]);
                }
            }
        }
        heat->add_band(r0, n, cells.data());
    }
    heat->finish();
    if (progress) progress(1);
    return heat;
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
