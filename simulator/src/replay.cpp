#include "simulator/replay.h"

#include <fmt/format.h>
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <tuple>

#include "capture/half.h"
#include "capture/trace_reader.h"
#include "engine/error.h"
#include "engine/progress.h"
#include "kernels/attend.h"

namespace kvs::sim {

namespace {

using capture::Field;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Full attention's log-sum-exp over every token up to each evaluated step, with the trace's
// keys: what recall needs for a unit that holds every token with lossy keys (quant). The same
// numbers for every such run of a sweep, so they are computed once per layer, by the first run
// that needs them. [Hkv, evaluated steps, query rows of the KV head]
struct PrefixLse {
    std::once_flag once;
    std::vector<float> lse;
};

struct LayerData {
    int layer = 0, slot = 0;
    std::vector<float> q, k, v, o;  // [H or Hkv, T, d]
    std::vector<float> lse;         // [H, T]
    std::unique_ptr<PrefixLse> prefix = std::make_unique<PrefixLse>();
};

LayerData load_layer(const capture::TraceReader& r, int layer, int slot, int64_t T) {
    LayerData ld;
    ld.layer = layer;
    ld.slot = slot;
    ld.q = r.read_heads(Field::Q, layer, 0, T);
    ld.k = r.read_heads(Field::K, layer, 0, T);
    ld.v = r.read_heads(Field::V, layer, 0, T);
    ld.o = r.read_heads(Field::O, layer, 0, T);
    const int H = r.info().n_head;
    ld.lse.resize(size_t(H) * size_t(T));
    for (int h = 0; h < H; ++h) {
        std::vector<float> l = r.read_lse(layer, h, 0, T);
        std::copy(l.begin(), l.end(), ld.lse.begin() + ptrdiff_t(size_t(h) * size_t(T)));
    }
    return ld;
}

struct Shared {
    int64_t T = 0, first_eval = 0, first_update = 0;
    int H = 0, Hkv = 0, d = 0, L = 0, n_layer = 0;
    float scale = 0;
    bool f16 = true;
    std::vector<std::vector<int>> q_of_kv;  // query heads of each KV head
    int nq_max = 0;                         // the most query heads of one KV head
    std::vector<int> ckpt_of_step;          // [T] checkpoint index or -1
    Mode mode = Mode::stream;
    PlanContext pc;  // the run's shape, as policies see it
};

struct RunState {
    const PolicySpec* spec = nullptr;
    std::unique_ptr<Policy> policy;
    std::shared_ptr<const void> plan;
    RunResult res;
    int group = 32;
    double item_seconds = 0;
    std::mutex mu;
    std::vector<std::vector<int32_t>> layer_events;
};

float nan_f16_bits() {
    return std::numeric_limits<float>::quiet_NaN();
}

// The query row of KV head g's i-th query head at step t, from the trace.
const float* query_row(const Shared& sh, const LayerData& ld, int g, int i, int64_t t) {
    const int h = sh.q_of_kv[size_t(g)][size_t(i)];
    return ld.q.data() + (size_t(h) * size_t(sh.T) + size_t(t)) * size_t(sh.d);
}

// Output error, cosine and recall of one (step, KV head) from its query rows' attention: out
// rows O [nq, d] (row i: query head heads[i]) and the log-sum-exp recall is measured with.
void record_quality(const Shared& sh, const LayerData& ld, RunResult& R, size_t idx, int64_t t,
                    const std::vector<int>& heads, const float* O, const float* lse_kept) {
    const int64_t T = sh.T;
    const int d = sh.d, nq = int(heads.size());
    double rec = 0, err = 0, cs = 0;
    for (int i = 0; i < nq; ++i) {
        const int h = heads[size_t(i)];
        const float lse_full = ld.lse[size_t(h) * size_t(T) + size_t(t)];
        rec += std::exp(double(lse_kept[i]) - double(lse_full));
        const float* of = ld.o.data() + (size_t(h) * size_t(T) + size_t(t)) * size_t(d);
        const float* oc = O + size_t(i) * size_t(d);
        double dd = 0, nf = 0, nc = 0, dot = 0;
        for (int c = 0; c < d; ++c) {
            const double a = oc[c], b = of[c];
            dd += (a - b) * (a - b);
            nf += b * b;
            nc += a * a;
            dot += a * b;
        }
        err += nf > 0 ? std::sqrt(dd / nf) : std::sqrt(dd);
        cs += (nf > 0 && nc > 0) ? dot / std::sqrt(nf * nc) : (nf == nc ? 1.0 : 0.0);
    }
    R.recall[idx] = float(rec / nq);
    R.err[idx] = float(err / nq);
    R.cos[idx] = float(cs / nq);
}

// The evaluated steps of one KV head whose attention is not needed at once (no policy observes
// it) wait here until the store is about to change an entry one of them sees
// (UnitStore::set_on_change) or kMaxSteps are waiting, and are then attended in one call: all their
// query rows over the entries held now. The entries appended since a step sit at later positions,
// invisible to its rows, so by kernels::attend's exactness contract each row gets the bits it gets
// alone at its own step; in one call the keys and values are read (and packed ones decoded) once
// per 16 rows instead of once per step, and the scores run 2 rows x 4 keys at a time.
struct Deferred {
    static constexpr int kMaxSteps = 64;
    std::vector<int64_t> steps;
    RowMat Q, O, P;
    std::vector<int32_t> qpos;
    std::vector<float> lse_c, lse_o;
};

// PrefixLse::lse of a layer, computed in blocks of Deferred::kMaxSteps steps per KV head: each
// row over keys 0..its step, the rows and keys the run itself would attend (so the same bits).
const std::vector<float>& prefix_lse(const Shared& sh, const LayerData& ld) {
    PrefixLse& pl = *ld.prefix;
    std::call_once(pl.once, [&] {
        const int64_t T = sh.T, S = T - sh.first_eval;
        const int d = sh.d;
        const size_t nq_max = size_t(sh.nq_max);
        pl.lse.assign(size_t(sh.Hkv) * size_t(S) * nq_max, 0.0f);
        std::vector<int32_t> kpos(static_cast<size_t>(T)), qpos;
        for (int64_t j = 0; j < T; ++j) kpos[size_t(j)] = int32_t(j);
        std::vector<float> Q, P, lse;
        for (int g = 0; g < sh.Hkv; ++g) {
            const int nq = int(sh.q_of_kv[size_t(g)].size());
            for (int64_t t0 = sh.first_eval; t0 < T; t0 += Deferred::kMaxSteps) {
                const int64_t t1 = std::min<int64_t>(T, t0 + Deferred::kMaxSteps);
                const int rows = int(t1 - t0) * nq, n = int(t1);
                Q.resize(size_t(rows) * size_t(d));
                qpos.resize(size_t(rows));
                lse.resize(size_t(rows));
                P.resize(size_t(rows) * size_t(n));
                for (int64_t t = t0; t < t1; ++t)
                    for (int i = 0; i < nq; ++i) {
                        const size_t r = size_t(t - t0) * size_t(nq) + size_t(i);
                        std::copy_n(query_row(sh, ld, g, i, t), d, Q.data() + r * size_t(d));
                        qpos[r] = int32_t(t);
                    }
                KVS_ASSERT(kernels::attend_cpu(Q.data(), qpos.data(), rows,
                                               ld.k.data() + size_t(g) * size_t(T) * size_t(d),
                                               nullptr, kpos.data(), nullptr, n, d, sh.scale,
                                               nullptr, lse.data(),
                                               P.data()) == kernels::Status::ok);
                for (int64_t t = t0; t < t1; ++t)
                    for (int i = 0; i < nq; ++i)
                        pl.lse[(size_t(g) * size_t(S) + size_t(t - sh.first_eval)) * nq_max +
                               size_t(i)] = lse[size_t(t - t0) * size_t(nq) + size_t(i)];
            }
        }
    });
    return pl.lse;
}

void attend_deferred(const Shared& sh, const LayerData& ld, RunResult& R, size_t slot, int g,
                     const UnitStore& u, Deferred& df) {
    if (df.steps.empty()) return;
    const int d = sh.d, L = sh.L, Hkv = sh.Hkv;
    const auto& heads = sh.q_of_kv[size_t(g)];
    const int nq = int(heads.size()), m = int(df.steps.size()), rows = m * nq;
    const int n = u.size();
    df.Q.resize(rows, d);
    df.O.resize(rows, d);
    df.qpos.resize(size_t(rows));
    df.lse_c.resize(size_t(rows));
    for (int s = 0; s < m; ++s)
        for (int i = 0; i < nq; ++i) {
            const int64_t t = df.steps[size_t(s)];
            std::copy_n(query_row(sh, ld, g, i, t), d, df.Q.row(s * nq + i).data());
            df.qpos[size_t(s * nq + i)] = int32_t(t);
        }
    KVS_ASSERT(kernels::attend_packed_cpu(df.Q.data(), df.qpos.data(), rows, u.packed_k(),
                                          u.packed_v(), u.positions(), u.bias(), n, d, sh.scale,
                                          df.O.data(), df.lse_c.data(),
                                          nullptr) == kernels::Status::ok);
    // Recall: with exact keys the kept entries' mass is the cache's own lse; otherwise the
    // full-attention mass of the held tokens, with their original keys. (Merged entries are
    // never deferred.)
    const bool exact_keys = u.all_full() && sh.f16;
    const float* lse = df.lse_c.data();
    // Every token so far held (positions 0..n-1): the layer's shared prefix sums.
    const bool holds_all = n > 0 && u.pos(n - 1) == n - 1;
    if (!exact_keys && holds_all) {
        const std::vector<float>& pl = prefix_lse(sh, ld);
        const int64_t S = sh.T - sh.first_eval;
        const size_t nq_max = size_t(sh.nq_max);
        df.lse_o.resize(size_t(rows));
        for (int s = 0; s < m; ++s)
            for (int i = 0; i < nq; ++i)
                df.lse_o[size_t(s * nq + i)] =
                    pl[(size_t(g) * size_t(S) + size_t(df.steps[size_t(s)] - sh.first_eval)) *
                           nq_max +
                       size_t(i)];
        lse = df.lse_o.data();
    } else if (!exact_keys) {
        df.lse_o.resize(size_t(rows));
        df.P.resize(rows, n);
        KVS_ASSERT(kernels::attend_cpu(df.Q.data(), df.qpos.data(), rows, u.k_orig_rows(), nullptr,
                                       u.positions(), nullptr, n, d, sh.scale, nullptr,
                                       df.lse_o.data(), df.P.data()) == kernels::Status::ok);
        lse = df.lse_o.data();
    }
    for (int s = 0; s < m; ++s) {
        const int64_t t = df.steps[size_t(s)];
        const size_t idx = (size_t(t - sh.first_eval) * size_t(L) + slot) * size_t(Hkv) + size_t(g);
        record_quality(sh, ld, R, idx, t, heads, df.O.row(s * nq).data(), lse + s * nq);
    }
    df.steps.clear();
}

// One (run, layer): the whole step loop.
void replay_layer(const Shared& sh, RunState& rs, const LayerData& ld, int step_block,
                  const std::atomic<bool>* cancel) {
    const int64_t T = sh.T;
    const int d = sh.d, Hkv = sh.Hkv, L = sh.L;
    const LayerContext lc = layer_context(sh.pc, ld.slot, rs.plan.get());
    std::unique_ptr<LayerPolicy> lp = rs.policy->make_layer(lc);
    const bool observes = lp->observes();
    const int64_t first_observed = observes ? lp->first_observed_step(sh.first_update) : T;

    RunResult& R = rs.res;
    const size_t slot = size_t(ld.slot);
    std::vector<UnitStore> units;
    std::vector<Deferred> deferred{size_t(Hkv)};
    units.reserve(size_t(Hkv));
    for (int g = 0; g < Hkv; ++g) {
        units.emplace_back(d, rs.group, Precision::f16);
        units.back().set_offload(lp->offloads());
        if (step_block > 1)
            units.back().set_on_change([&sh, &ld, &R, &units, &deferred, slot, g](int32_t p) {
                // Steps before p do not see the entry that changes (a new token's width, say).
                Deferred& df = deferred[size_t(g)];
                if (!df.steps.empty() && df.steps.back() >= p)
                    attend_deferred(sh, ld, R, slot, g, units[size_t(g)], df);
            });
    }

    const int nq_max = sh.nq_max;
    RowMat Q(nq_max, d), S, O, P2;
    std::vector<int32_t> events;  // this layer's bit_events rows
    std::vector<float> lse_c(static_cast<size_t>(nq_max)), lse_o(static_cast<size_t>(nq_max));
    std::vector<int32_t> qpos(static_cast<size_t>(nq_max));
    std::vector<int32_t> mpos;  // original positions the held entries stand for (merges)
    std::vector<float> mk;      // their keys from the trace
    const int max_deferred = std::min(step_block, Deferred::kMaxSteps);

    for (int64_t t = 0; t < T; ++t) {
        if (cancel && (t & 63) == 0 && cancel->load(std::memory_order_relaxed))
            fail("replay cancelled");
        for (int g = 0; g < Hkv; ++g) {
            const size_t row = (size_t(g) * size_t(T) + size_t(t)) * size_t(d);
            units[size_t(g)].append(int32_t(t), ld.k.data() + row, ld.v.data() + row);
        }
        if (t >= sh.first_update) lp->update(t, units);
        const bool eval = t >= sh.first_eval;
        const bool observe_now = observes && t >= first_observed;
        const int64_t s = t - sh.first_eval;
        const int ck = sh.ckpt_of_step[size_t(t)];
        for (int g = 0; g < Hkv; ++g) {
            UnitStore& u = units[size_t(g)];
            const size_t unit = slot * size_t(Hkv) + size_t(g);
            for (int32_t p : u.evicted_log())
                R.evicted_at[unit * size_t(T) + size_t(p)] = int32_t(t);
            u.evicted_log().clear();
            for (const auto& [p, into] : u.merged_log()) {
                R.merged_into[unit * size_t(T) + size_t(p)] = into;
                R.merged_at[unit * size_t(T) + size_t(p)] = int32_t(t);
            }
            u.merged_log().clear();
            for (const auto& [p, b] : u.bits_log())
                events.insert(events.end(), {int32_t(unit), p, int32_t(t), b});
            u.bits_log().clear();
            const int64_t bt = lp->budget_tokens(t, g);
            if (t >= sh.first_update && bt >= 0 && u.size() > bt)
                fail(
                    "internal error: policy '{}' holds {} tokens with a budget of {} (layer {}, "
                    "KV head {}, step {})",
                    R.policy, u.size(), bt, ld.layer, g, t);
            const int n = u.size();
            if (eval) {
                const size_t idx = (size_t(s) * size_t(L) + slot) * size_t(Hkv) + size_t(g);
                R.held[idx] = n;
                R.budget_tokens[idx] = int32_t(bt);
                R.bytes[idx] = u.bytes();
                R.offload_bytes[idx] = u.offload_bytes();
            }
            if (ck >= 0) {
                const size_t base = (size_t(ck) * size_t(L) * size_t(Hkv) + unit) * size_t(T);
                const auto& sc = u.scores();
                for (int j = 0; j < n; ++j) {
                    const size_t p = size_t(u.pos(j));
                    R.ckpt_bits[base + p] = uint8_t(u.bits(j));
                    float v = sc[size_t(j)];
                    if (!observes) v = nan_f16_bits();
                    capture::f32_to_f16(&v, &R.ckpt_score[base + p], 1);
                }
            }
            if (!eval && !observe_now) continue;
            if (eval && !observe_now && step_block > 1 && !u.any_merged()) {
                Deferred& df = deferred[size_t(g)];
                df.steps.push_back(t);
                if (int(df.steps.size()) >= max_deferred)
                    attend_deferred(sh, ld, R, slot, g, u, df);
                continue;
            }
            const auto& heads = sh.q_of_kv[size_t(g)];
            const int nq = int(heads.size());
            for (int i = 0; i < nq; ++i) {
                std::copy_n(query_row(sh, ld, g, i, t), d, Q.row(i).data());
            }
            S.resize(nq, n);
            O.resize(nq, d);
            std::fill(qpos.begin(), qpos.end(), int32_t(t));
            KVS_ASSERT(kernels::attend_packed_cpu(Q.data(), qpos.data(), nq, u.packed_k(),
                                                  u.packed_v(), u.positions(), u.bias(), n, d,
                                                  sh.scale, O.data(), lse_c.data(),
                                                  S.data()) == kernels::Status::ok);
            if (eval) {
                const bool merged = u.any_merged();
                const bool exact_keys = u.all_full() && sh.f16 && !merged;
                if (merged) {
                    // Recall with merged entries: the full-attention mass of every original
                    // token a held entry stands for, with the trace's keys of those tokens.
                    mpos.clear();
                    for (int j = 0; j < n; ++j) {
                        mpos.push_back(u.pos(j));
                        for (int32_t p : u.folded(j)) mpos.push_back(p);
                    }
                    std::sort(mpos.begin(), mpos.end());
                    const int m = int(mpos.size());
                    mk.resize(size_t(m) * size_t(d));
                    for (int j = 0; j < m; ++j)
                        std::copy_n(
                            ld.k.data() +
                                (size_t(g) * size_t(T) + size_t(mpos[size_t(j)])) * size_t(d),
                            d, mk.data() + size_t(j) * size_t(d));
                    P2.resize(nq, m);
                    KVS_ASSERT(kernels::attend_cpu(Q.data(), qpos.data(), nq, mk.data(), nullptr,
                                                   mpos.data(), nullptr, m, d, sh.scale, nullptr,
                                                   lse_o.data(), P2.data()) == kernels::Status::ok);
                } else if (!exact_keys) {
                    // Recall with the original keys: the full-attention probability mass.
                    P2.resize(nq, n);
                    KVS_ASSERT(kernels::attend_cpu(Q.data(), qpos.data(), nq, u.k_orig_rows(),
                                                   nullptr, u.positions(), nullptr, n, d, sh.scale,
                                                   nullptr, lse_o.data(),
                                                   P2.data()) == kernels::Status::ok);
                }
                const size_t idx = (size_t(s) * size_t(L) + slot) * size_t(Hkv) + size_t(g);
                record_quality(sh, ld, R, idx, t, heads, O.data(),
                               exact_keys ? lse_c.data() : lse_o.data());
            }
            if (observes) lp->observe(t, g, S.data(), nq, u);
        }
    }
    for (int g = 0; g < Hkv; ++g)
        attend_deferred(sh, ld, R, slot, g, units[size_t(g)], deferred[size_t(g)]);
    {
        std::lock_guard<std::mutex> lk(rs.mu);
        rs.layer_events.push_back(std::move(events));
    }
    int64_t restores = 0;
    for (auto& u : units) restores += u.restores();
#pragma omp atomic
    R.summary.restores += restores;
}

double mean_of(const std::vector<float>& v) {
    double s = 0;
    for (float x : v) s += x;
    return v.empty() ? 0 : s / double(v.size());
}
double quantile(std::vector<float> v, double q) {
    if (v.empty()) return 0;
    const size_t k = std::min(v.size() - 1, size_t(std::floor(q * double(v.size() - 1) + 0.5)));
    std::nth_element(v.begin(), v.begin() + ptrdiff_t(k), v.end());
    return v[k];
}

}  // namespace

std::string params_json(const PolicySpec& s) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (const auto& p : s.entry->info.params) {
        const std::string& v = s.params.values.at(p.name);
        if (v.empty()) continue;
        if (p.kind == ParamKind::integer)
            j[p.name] = std::stoll(v);
        else if (p.kind == ParamKind::real)
            j[p.name] = std::stod(v);
        else if (p.kind == ParamKind::budget && v.find_first_of(".eE") != std::string::npos)
            j[p.name] = std::stod(v);
        else if (p.kind == ParamKind::budget)
            j[p.name] = std::stoll(v);
        else
            j[p.name] = v;
    }
    return j.dump();
}

Summary summarize(const RunResult& r) {
    Summary s;
    s.restores = r.summary.restores;
    s.recall_mean = mean_of(r.recall);
    s.recall_p5 = quantile(r.recall, 0.05);
    s.err_mean = mean_of(r.err);
    s.err_p95 = quantile(r.err, 0.95);
    s.cos_mean = mean_of(r.cos);
    s.cos_p5 = quantile(r.cos, 0.05);
    double held = 0;
    for (int32_t h : r.held) held += h;
    s.held_mean = r.held.empty() ? 0 : held / double(r.held.size());
    const size_t S = r.n_steps(), U = r.n_units();
    double bsum = 0, fsum = 0;
    for (size_t i = 0; i < S; ++i) {
        double b = 0;
        for (size_t u = 0; u < U; ++u) b += double(r.bytes[i * U + u]);
        const double f = double(r.full_bytes[i]) * double(U);
        bsum += b;
        fsum += f;
        if (b > s.bytes_peak) {
            s.bytes_peak = b;
            s.full_bytes_at_peak = f;
        }
    }
    double osum = 0;
    for (size_t i = 0; i < S && !r.offload_bytes.empty(); ++i) {
        double o = 0;
        for (size_t u = 0; u < U; ++u) o += double(r.offload_bytes[i * U + u]);
        osum += o;
        s.offload_bytes_peak = std::max(s.offload_bytes_peak, o);
    }
    if (S > 0) s.offload_bytes_mean = osum / double(S);
    if (S > 0) {
        s.bytes_mean = bsum / double(S);
        s.full_bytes_mean = fsum / double(S);
    }
    s.ratio_mean = s.bytes_mean > 0 ? s.full_bytes_mean / s.bytes_mean : 0;
    s.ratio_at_peak = s.bytes_peak > 0 ? s.full_bytes_at_peak / s.bytes_peak : 0;
    if (S > 0) {
        for (size_t u = 0; u < U; ++u) s.bytes_final += double(r.bytes[(S - 1) * U + u]);
        s.full_bytes_final = double(r.full_bytes[S - 1]) * double(U);
        s.ratio_final = s.bytes_final > 0 ? s.full_bytes_final / s.bytes_final : 0;
    }
    int64_t kept = 0, n = 0;
    for (int32_t p : r.answer_positions) {
        if (p < 0 || p >= r.n_tokens) continue;
        for (size_t u = 0; u < U; ++u, ++n)
            kept += r.evicted_at[u * size_t(r.n_tokens) + size_t(p)] < 0;
    }
    if (n > 0) s.answer_kept = double(kept) / double(n);
    return s;
}

std::vector<RunResult> replay_trace(const std::string& trace_path,
                                    const std::vector<PolicySpec>& specs,
                                    const ReplayOptions& opt) {
    if (specs.empty()) fail("no policy given");
    capture::TraceReader reader(trace_path);
    const capture::TraceInfo& ti = reader.info();
    const int64_t T = ti.n_tokens;
    if (T < 2) fail("trace '{}' holds {} token(s): nothing to replay", trace_path, T);
    if (!ti.complete && !opt.quiet)
        fmt::print(stderr,
                   "warning: trace '{}' is incomplete (the capture was interrupted): replaying "
                   "the {} tokens it holds\n",
                   trace_path, T);

    Shared sh;
    sh.T = T;
    sh.H = ti.n_head;
    sh.Hkv = ti.n_head_kv;
    sh.d = ti.head_dim;
    sh.n_layer = ti.n_layer;
    sh.scale = float(ti.attn_scale);
    sh.f16 = ti.dtype == capture::StorageDtype::F16;
    sh.mode = opt.mode;
    sh.q_of_kv.assign(size_t(sh.Hkv), {});
    for (int h = 0; h < sh.H; ++h) {
        const int g = ti.kv_head_of_q_head[size_t(h)];
        if (g < 0 || g >= sh.Hkv) fail("trace '{}': kv_head_of_q_head[{}] = {}", trace_path, h, g);
        sh.q_of_kv[size_t(g)].push_back(h);
    }
    for (const auto& v : sh.q_of_kv) sh.nq_max = std::max(sh.nq_max, int(v.size()));
    std::vector<int> layers = opt.layers.empty() ? ti.layers : opt.layers;
    for (int l : layers)
        if (!reader.has_layer(l))
            fail("trace '{}' has no layer {} (captured: {} layers)", trace_path, l,
                 ti.layers.size());
    sh.L = int(layers.size());

    int64_t P = 0;
    if (opt.mode == Mode::prefill) {
        if (opt.prefill_len >= 0) {
            P = opt.prefill_len;
            if (P < 1 || P >= T)
                fail("--prefill-len {} must be in [1, {}] for trace '{}' ({} tokens)", P, T - 1,
                     trace_path, T);
        } else {
            P = ti.prompt_len < T ? ti.prompt_len : (3 * T) / 4;
            if (P < 1 || P >= T) P = std::max<int64_t>(1, (3 * T) / 4);
        }
    }
    sh.first_eval = P;
    sh.first_update = P;
    const int64_t S = T - P;

    // Checkpoints: evenly spaced over the evaluated steps, the last one included.
    const int64_t C = std::min<int64_t>(std::max(0, opt.checkpoints), S);
    std::vector<int32_t> ckpt_steps;
    sh.ckpt_of_step.assign(size_t(T), -1);
    for (int64_t i = 0; i < C; ++i) {
        const int64_t st = C == 1 ? S - 1 : (i * (S - 1) + (C - 1) / 2) / (C - 1);
        const int64_t t = P + st;
        if (!ckpt_steps.empty() && ckpt_steps.back() == t) continue;
        sh.ckpt_of_step[size_t(t)] = int(ckpt_steps.size());
        ckpt_steps.push_back(int32_t(t));
    }

    const size_t U = size_t(sh.L) * size_t(sh.Hkv);
    std::vector<RunState> runs(specs.size());
    PlanContext pc;
    pc.reader = &reader;
    pc.tokens = reader.token_ids();
    pc.read = [&reader](PlanField f, int layer, int head, int64_t t0, int64_t t1) {
        return reader.read(f == PlanField::k ? capture::Field::K : capture::Field::Q, layer, head,
                           t0, t1);
    };
    pc.layers = layers;
    pc.n_layer = ti.n_layer;
    pc.n_head = sh.H;
    pc.n_kv = sh.Hkv;
    pc.d = sh.d;
    pc.kv_of_q = ti.kv_head_of_q_head;
    pc.n_tokens = T;
    pc.prefill_len = P;
    pc.mode = opt.mode;
    pc.attn_scale = sh.scale;
    pc.rope.inv_freq = ti.rope_inv_freq;
    pc.rope.half = ti.rope_pairing == "half";
    sh.pc = pc;
    const auto t_start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < specs.size(); ++i) {
        RunState& rs = runs[i];
        rs.spec = &specs[i];
        rs.policy = specs[i].entry->make(specs[i].params);
        auto git = specs[i].params.values.find("group");
        if (git != specs[i].params.values.end()) rs.group = std::stoi(git->second);
        rs.plan = rs.policy->plan(pc);
        RunResult& r = rs.res;
        r.policy = specs[i].entry->info.name;
        r.spec = specs[i].canonical;
        r.params_json = params_json(specs[i]);
        auto bit = specs[i].params.values.find("budget");
        r.budget = bit != specs[i].params.values.end() ? bit->second : "";
        r.mode = opt.mode;
        r.prefill_len = P;
        r.trace_path = trace_path;
        r.trace_model = ti.model_name;
        r.trace_task = ti.task.kind;
        if (ti.task.has_answer()) r.answer_positions = ti.task.answer_positions;
        r.trace_complete = ti.complete;
        r.n_tokens = T;
        r.n_head = sh.H;
        r.n_kv = sh.Hkv;
        r.d = sh.d;
        r.layers.assign(layers.begin(), layers.end());
        for (int64_t s = 0; s < S; ++s) r.steps.push_back(int32_t(P + s));
        const size_t n = size_t(S) * U;
        r.recall.assign(n, 0);
        r.err.assign(n, 0);
        r.cos.assign(n, 0);
        r.held.assign(n, 0);
        r.budget_tokens.assign(n, -1);
        r.bytes.assign(n, 0);
        r.offload_bytes.assign(n, 0);
        for (int64_t s = 0; s < S; ++s) r.full_bytes.push_back((P + s + 1) * 2 * int64_t(sh.d) * 2);
        r.evicted_at.assign(U * size_t(T), -1);
        r.merged_into.assign(U * size_t(T), -1);
        r.merged_at.assign(U * size_t(T), -1);
        const UnitRoles roles = rs.policy->unit_roles(rs.plan.get());
        r.unit_role_names = roles.names;
        r.unit_role = roles.role;
        r.ckpt_steps = ckpt_steps;
        r.ckpt_bits.assign(ckpt_steps.size() * U * size_t(T), 0);
        uint16_t nan16;
        const float nanf = std::numeric_limits<float>::quiet_NaN();
        capture::f32_to_f16(&nanf, &nan16, 1);
        r.ckpt_score.assign(ckpt_steps.size() * U * size_t(T), nan16);
    }

    const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
    const int batch = std::max(1, threads);
    const int64_t total = int64_t(runs.size()) * sh.L;
    int64_t done = 0;
    Progress bar("replay", total, opt.quiet, "layer");
    std::mutex err_mu;
    std::string first_error;

    std::atomic<int64_t> read_ns{0};
    auto load_batch = [&](int b0) {
        const auto r0 = std::chrono::steady_clock::now();
        std::vector<LayerData> v;
        for (int s = b0; s < std::min(sh.L, b0 + batch); ++s)
            v.push_back(load_layer(reader, layers[size_t(s)], s, T));
        read_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::steady_clock::now() - r0)
                       .count();
        return v;
    };
    std::vector<LayerData> cur = load_batch(0);
    for (int b0 = 0; b0 < sh.L; b0 += batch) {
        std::future<std::vector<LayerData>> next;
        if (b0 + batch < sh.L) next = std::async(std::launch::async, load_batch, b0 + batch);
        const int n_items = int(runs.size() * cur.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int it = 0; it < n_items; ++it) {
            RunState& rs = runs[size_t(it) / cur.size()];
            const LayerData& ld = cur[size_t(it) % cur.size()];
            const auto t0 = std::chrono::steady_clock::now();
            try {
                replay_layer(sh, rs, ld, opt.step_block, opt.cancel);
            } catch (const std::exception& e) {
                std::lock_guard<std::mutex> lk(err_mu);
                if (first_error.empty()) first_error = e.what();
            }
            const double sec =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
#pragma omp critical(kvs_replay_progress)
            {
                rs.item_seconds += sec;
                ++done;
                bar.update(done);
                if (opt.on_progress) opt.on_progress(done, total);
            }
        }
        std::vector<LayerData> nxt;
        if (next.valid()) nxt = next.get();  // a read error propagates from here
        if (!first_error.empty()) throw Error(first_error);
        cur = std::move(nxt);
    }
    bar.finish(fmt::format("trace read {:.2f} s (overlapped)", double(read_ns.load()) * 1e-9));
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    double item_total = 0;
    for (auto& rs : runs) item_total += rs.item_seconds;
    std::vector<RunResult> out;
    for (auto& rs : runs) {
        // Each run's share of the wall time, in proportion to the compute it needed.
        rs.res.seconds = item_total > 0 ? wall * rs.item_seconds / item_total : 0;
        // bit_events of all layers, in (step, unit, token) order whatever the thread schedule.
        std::vector<std::array<int32_t, 4>> ev;
        for (const auto& le : rs.layer_events)
            for (size_t i = 0; i + 3 < le.size(); i += 4)
                ev.push_back({le[i], le[i + 1], le[i + 2], le[i + 3]});
        std::sort(ev.begin(), ev.end(), [](const auto& a, const auto& b) {
            return std::tie(a[2], a[0], a[1]) < std::tie(b[2], b[0], b[1]);
        });
        for (const auto& e : ev)
            rs.res.bit_events.insert(rs.res.bit_events.end(), e.begin(), e.end());
        const int64_t restores = rs.res.summary.restores;
        rs.res.summary = summarize(rs.res);
        rs.res.summary.restores = restores;
        out.push_back(std::move(rs.res));
    }
    return out;
}

}  // namespace kvs::sim
