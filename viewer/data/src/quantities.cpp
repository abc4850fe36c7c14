// Matrices, per-unit metrics and curves from results runs (see quantities.h).
#include "viewdata/quantities.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>

namespace kvs::view {

namespace {
const char* kQuantityNames[kNumQuantities] = {"attention", "attention (cumulative)", "held", "bits",
                                              "score"};
const char* kMetricNames[kNumMetrics] = {"budget (tokens)", "held (tokens)", "recall",
                                         "output error",    "output cosine", "bytes"};
const char* kCurveNames[kNumCurves] = {"cache bytes", "compression ratio", "recall", "output error",
                                       "held (tokens)"};
}  // namespace

const char* quantity_name(Quantity q) {
    return kQuantityNames[int(q)];
}

bool quantity_from_name(const std::string& s, Quantity* out) {
    for (int i = 0; i < kNumQuantities; ++i)
        if (s == kQuantityNames[i]) {
            *out = Quantity(i);
            return true;
        }
    return false;
}

bool quantity_needs_results(Quantity q) {
    return q == Quantity::Held || q == Quantity::Bits || q == Quantity::Score;
}

const char* metric_name(Metric m) {
    return kMetricNames[int(m)];
}
const char* curve_name(Curve c) {
    return kCurveNames[int(c)];
}

std::vector<Unit> select_units(const RunData& r, int layer, int kv_head) {
    std::vector<Unit> u;
    int l0 = 0, l1 = int(r.L);
    if (layer >= 0) {
        const int li = r.layer_index(layer);
        if (li < 0) return u;
        l0 = li;
        l1 = li + 1;
    }
    for (int l = l0; l < l1; ++l)
        for (int h = 0; h < int(r.H); ++h)
            if (kv_head < 0 || kv_head == h) u.push_back({l, h});
    return u;
}

int uniform_bits(const RunData& r) {
    int w = 0;
    for (uint8_t b : r.ckpt_bits) {
        if (b == 0 || b == w) continue;
        if (w != 0) return 0;
        w = b;
    }
    return w;
}

std::string quantity_provenance(const RunData& r, Quantity q) {
    const std::string ck = std::to_string(r.C) + " checkpoint" + (r.C == 1 ? "" : "s");
    switch (q) {
        case Quantity::Held:
            return "exact at every step (from evicted_at)";
        case Quantity::Bits:
            if (r.has_bit_events) return "exact at every step (from bit_events and evicted_at)";
            if (const int w = uniform_bits(r))
                return "exact at every step: held tokens are all " + std::to_string(w) + "-bit";
            return "bits carried forward from the last of " + ck +
                   " (staircase: this file has no bit_events); evictions exact at every step";
        case Quantity::Score:
            return "scores carried forward from the last of " + ck +
                   " (staircase); evictions exact at every step";
        default:
            return "";
    }
}

namespace {

// Bits from bit_events, exact at every step: per unit, replay its events in step order over a
// width per token (16 before the first event), add the width of each held token to the cell;
// then the mean over the units. Cells [s0, s1) x [j0, j1) of the [S, T] matrix into out.
void bits_from_events(const RunData& r, const std::vector<Unit>& units, int64_t s0, int64_t s1,
                      int64_t j0, int64_t j1, float* out) {
    const int64_t nc = j1 - j0;
    for (int64_t s = s0; s < s1; ++s) {
        float* o = out + (s - s0) * nc;
        const int64_t jmax = std::min<int64_t>(r.steps[size_t(s)], r.T - 1);
        for (int64_t j = j0; j < j1; ++j) o[j - j0] = j <= jmax ? 0.0f : kNaN;
    }
    // Each selected unit's events (token, step, bits), in step order.
    std::vector<int> slot(static_cast<size_t>(r.L * r.H), -1);
    for (size_t k = 0; k < units.size(); ++k) slot[size_t(units[k].l * r.H + units[k].h)] = int(k);
    std::vector<std::vector<int32_t>> ev(units.size());
    for (size_t e = 0; e + 3 < r.bit_events.size(); e += 4) {
        const int k = slot[size_t(r.bit_events[e])];
        if (k >= 0)
            ev[size_t(k)].insert(ev[size_t(k)].end(), r.bit_events.begin() + std::ptrdiff_t(e) + 1,
                                 r.bit_events.begin() + std::ptrdiff_t(e) + 4);
    }
    std::vector<uint8_t> w(static_cast<size_t>(r.T));
    for (size_t k = 0; k < units.size(); ++k) {
        const Unit& u = units[k];
        const std::vector<int32_t>& uev = ev[k];
        std::fill(w.begin(), w.end(), uint8_t(16));
        const int32_t* evicted = r.evicted_at.data() + r.lht(u.l, u.h, 0);
        size_t e = 0;
        for (int64_t s = s0; s < s1; ++s) {
            const int64_t t = r.steps[size_t(s)];
            for (; e + 2 < uev.size() && uev[e + 1] <= t; e += 3)
                w[size_t(uev[e])] = uint8_t(uev[e + 2]);
            float* o = out + (s - s0) * nc;
            const int64_t jmax = std::min<int64_t>(t, j1 - 1);
            for (int64_t j = j0; j <= jmax; ++j) {
                const int32_t ej = evicted[j];
                if (ej < 0 || t < ej) o[j - j0] += float(w[size_t(j)]);
            }
        }
    }
    const float inv = 1.0f / float(units.size());
    for (int64_t i = 0; i < (s1 - s0) * nc; ++i) out[i] *= inv;  // NaN stays NaN
}

}  // namespace

int token_bits(const RunData& r, int l, int h, int64_t j, int64_t t, bool* exact) {
    if (exact) *exact = r.has_bit_events;
    if (j < 0 || j >= r.T || !r.held_at(l, h, j, t)) return 0;
    if (r.has_bit_events) {
        const int32_t unit = int32_t(l * r.H + h);
        int b = 16;
        for (size_t e = 0; e + 3 < r.bit_events.size() && r.bit_events[e + 2] <= t; e += 4)
            if (r.bit_events[e] == unit && r.bit_events[e + 1] == j) b = r.bit_events[e + 3];
        return b;
    }
    auto it = std::upper_bound(r.ckpt_steps.begin(), r.ckpt_steps.end(), int32_t(t));
    if (it == r.ckpt_steps.begin()) return -1;
    const int64_t c = (it - r.ckpt_steps.begin()) - 1;
    if (j > r.ckpt_steps[size_t(c)]) return -1;
    return r.ckpt_bits[r.clht(c, l, h, j)];
}

void results_block(const RunData& r, Quantity q, const std::vector<Unit>& units, int64_t s0,
                   int64_t s1, int64_t j0, int64_t j1, float* out) {
    const int64_t nc = j1 - j0;
    std::fill(out, out + (s1 - s0) * nc, kNaN);
    if (units.empty() || quantity_needs_results(q) == false) return;
    if (q == Quantity::Bits && r.has_bit_events)
        return bits_from_events(r, units, s0, s1, j0, j1, out);
    // One width for every held token: bits are exact at every step, like held.
    const int ubits = q == Quantity::Bits ? uniform_bits(r) : 0;
    const bool exact = q == Quantity::Held || ubits > 0;
    for (int64_t s = s0; s < s1; ++s) {
        const int64_t t = r.steps[size_t(s)];
        float* o = out + (s - s0) * nc;
        // The last checkpoint at or before this step.
        int64_t c = -1;
        if (!exact) {
            auto it = std::upper_bound(r.ckpt_steps.begin(), r.ckpt_steps.end(), int32_t(t));
            c = int64_t(it - r.ckpt_steps.begin()) - 1;
            if (c < 0) continue;
        }
        const int64_t tc = c >= 0 ? r.ckpt_steps[size_t(c)] : t;
        const int64_t jmax = std::min<int64_t>(exact ? t : tc, j1 - 1);
        for (int64_t j = j0; j <= jmax; ++j) {
            double acc = 0;
            int n = 0;
            for (const Unit& u : units) {
                const bool held = r.held_at(u.l, u.h, j, t);
                if (q == Quantity::Held) {
                    acc += held ? 1 : 0;
                    ++n;
                } else if (ubits > 0) {
                    acc += held ? ubits : 0;
                    ++n;
                } else if (q == Quantity::Bits) {
                    acc += held ? r.ckpt_bits[r.clht(c, u.l, u.h, j)] : 0;
                    ++n;
                } else if (held) {
                    const float sc = r.ckpt_score[r.clht(c, u.l, u.h, j)];
                    if (std::isfinite(sc)) {
                        acc += sc;
                        ++n;
                    }
                }
            }
            o[j - j0] = n > 0 ? float(acc / n) : kNaN;
        }
    }
}

Matrix results_matrix(const RunData& r, Quantity q, int layer, int kv_head) {
    Matrix m(r.S, r.T, kNaN);
    results_block(r, q, select_units(r, layer, kv_head), 0, r.S, 0, r.T, m.v.data());
    return m;
}

void folded_block(const RunData& r, const std::vector<Unit>& units, int64_t s0, int64_t s1,
                  int64_t j0, int64_t j1, float* out) {
    const int64_t nc = j1 - j0;
    for (int64_t s = s0; s < s1; ++s) {
        const int64_t jmax = std::min<int64_t>(r.steps[size_t(s)], r.T - 1);
        for (int64_t j = j0; j < j1; ++j) out[(s - s0) * nc + j - j0] = j <= jmax ? 0.0f : kNaN;
    }
    if (units.empty() || !r.has_merges) return;
    const float w = 1.0f / float(units.size());
    for (const Unit& u : units)
        for (int64_t j = j0; j < j1; ++j) {
            if (r.merged_at[r.lht(u.l, u.h, j)] < 0) continue;
            // Folded from its first fold (evicted_at) on, until its entry leaves: the steps
            // are few per token, token_state() decides each.
            const int32_t first = r.evicted_at[r.lht(u.l, u.h, j)];
            auto it = std::lower_bound(r.steps.begin(), r.steps.end(), first);
            for (int64_t s = std::max<int64_t>(s0, it - r.steps.begin()); s < s1; ++s) {
                if (r.token_state(u.l, u.h, j, r.steps[size_t(s)]) != TokenState::Folded) break;
                out[(s - s0) * nc + j - j0] += w;
            }
        }
}

Matrix folded_matrix(const RunData& r, int layer, int kv_head) {
    Matrix m(r.S, r.T, kNaN);
    folded_block(r, select_units(r, layer, kv_head), 0, r.S, 0, r.T, m.v.data());
    return m;
}

Matrix difference(const Matrix& a, const std::vector<int32_t>& row_steps_a, const Matrix& b,
                  const std::vector<int32_t>& row_steps_b) {
    const int64_t cols = std::min(a.cols, b.cols);
    Matrix d(a.rows, cols, kNaN);
    for (int64_t r = 0; r < a.rows; ++r) {
        const int32_t st = r < int64_t(row_steps_a.size()) ? row_steps_a[size_t(r)] : int32_t(r);
        auto it = std::lower_bound(row_steps_b.begin(), row_steps_b.end(), st);
        if (it == row_steps_b.end() || *it != st) continue;
        const int64_t rb = it - row_steps_b.begin();
        if (rb >= b.rows) continue;
        for (int64_t j = 0; j < cols; ++j) d.at(r, j) = a.at(r, j) - b.at(rb, j);
    }
    return d;
}

std::unique_ptr<TiledHeat> results_heat(std::shared_ptr<const ResultsFile> fa, int ia,
                                        std::shared_ptr<const ResultsFile> fb, int ib, Quantity q,
                                        int layer, int kv_head, bool folded, size_t budget_bytes) {
    const RunData& a = fa->runs.at(size_t(ia));
    const RunData* b = fb ? &fb->runs.at(size_t(ib)) : nullptr;
    const std::vector<Unit> ua = select_units(a, layer, kv_head);
    const std::vector<Unit> ub = b ? select_units(*b, layer, kv_head) : std::vector<Unit>{};
    const int64_t cols = b ? std::min(a.T, b->T) : a.T;
    if (a.S <= 0 || cols <= 0) return nullptr;
    TiledHeat::BlockFn fn;
    if (folded) {
        fn = [fa, &a, ua](int64_t s0, int64_t s1, int64_t j0, int64_t j1, float* out) {
            folded_block(a, ua, s0, s1, j0, j1, out);
        };
    } else if (!b) {
        fn = [fa, &a, ua, q](int64_t s0, int64_t s1, int64_t j0, int64_t j1, float* out) {
            results_block(a, q, ua, s0, s1, j0, j1, out);
        };
    } else {
        fn = [fa, fb, &a, b, ua, ub, q](int64_t s0, int64_t s1, int64_t j0, int64_t j1,
                                        float* out) {
            // A's rows, and B's rows at the same step values (one block over their span).
            const int64_t nc = j1 - j0;
            results_block(a, q, ua, s0, s1, j0, j1, out);
            std::vector<int64_t> rb(size_t(s1 - s0), -1);
            int64_t lo = b->S, hi = -1;
            for (int64_t s = s0; s < s1; ++s) {
                auto it = std::lower_bound(b->steps.begin(), b->steps.end(), a.steps[size_t(s)]);
                if (it == b->steps.end() || *it != a.steps[size_t(s)]) continue;
                rb[size_t(s - s0)] = it - b->steps.begin();
                lo = std::min(lo, rb[size_t(s - s0)]);
                hi = std::max(hi, rb[size_t(s - s0)]);
            }
            std::vector<float> bv(hi >= lo ? size_t((hi - lo + 1) * nc) : 0);
            if (hi >= lo) results_block(*b, q, ub, lo, hi + 1, j0, j1, bv.data());
            for (int64_t s = s0; s < s1; ++s) {
                float* o = out + (s - s0) * nc;
                const int64_t r = rb[size_t(s - s0)];
                for (int64_t j = 0; j < nc; ++j)
                    o[j] = r < 0 ? kNaN : o[j] - bv[size_t((r - lo) * nc + j)];
            }
        };
    }
    auto heat = std::make_unique<TiledHeat>(a.S, cols, budget_bytes, fn);
    std::vector<float> band;
    for (int64_t s0 = 0; s0 < a.S; s0 += heat->band_rows()) {
        const int64_t n = std::min(heat->band_rows(), a.S - s0);
        band.resize(size_t(n * cols));
        fn(s0, s0 + n, 0, cols, band.data());
        heat->add_band(s0, n, band.data());
    }
    heat->finish();
    return heat;
}

float unit_metric(const RunData& r, Metric m, int64_t s, int l, int h) {
    const size_t i = r.slh(s, l, h);
    switch (m) {
        case Metric::Budget:
            return r.budget_tokens[i] < 0 ? kNaN : float(r.budget_tokens[i]);
        case Metric::Held:
            return float(r.held[i]);
        case Metric::Recall:
            return r.recall[i];
        case Metric::OutErr:
            return r.out_rel_err[i];
        case Metric::OutCos:
            return r.out_cos[i];
        case Metric::Bytes:
            return float(r.bytes[i]);
    }
    return kNaN;
}

std::vector<double> curve(const RunData& r, Curve c, int layer) {
    const std::vector<Unit> units = select_units(r, layer, -1);
    std::vector<double> out(static_cast<size_t>(r.S), std::nan(""));
    if (units.empty()) return out;
    for (int64_t s = 0; s < r.S; ++s) {
        double sum = 0, full = 0;
        int n = 0;
        for (const Unit& u : units) {
            const size_t i = r.slh(s, u.l, u.h);
            switch (c) {
                case Curve::CacheBytes:
                case Curve::Ratio:
                    sum += double(r.bytes[i]);
                    full += double(r.full_bytes[size_t(s)]);
                    break;
                case Curve::Recall:
                    sum += r.recall[i];
                    break;
                case Curve::OutErr:
                    sum += r.out_rel_err[i];
                    break;
                case Curve::Held:
                    sum += r.held[i];
                    break;
            }
            ++n;
        }
        if (c == Curve::CacheBytes)
            out[size_t(s)] = sum;
        else if (c == Curve::Ratio)
            out[size_t(s)] = sum > 0 ? full / sum : std::nan("");
        else
            out[size_t(s)] = sum / n;
    }
    return out;
}

std::vector<float> answer_kept(const RunData& r, const std::vector<int32_t>& positions, int64_t t) {
    std::vector<float> out;
    const std::vector<Unit> units = select_units(r, -1, -1);
    for (int32_t j : positions) {
        if (j < 0 || j >= r.T || units.empty()) {
            out.push_back(kNaN);
            continue;
        }
        int n = 0;
        for (const Unit& u : units) n += r.held_at(u.l, u.h, j, t) ? 1 : 0;
        out.push_back(float(n) / float(units.size()));
    }
    return out;
}

bool answer_all_kept(const RunData& r, const std::vector<int32_t>& positions, int64_t t) {
    for (float f : answer_kept(r, positions, t))
        if (!(f >= 1.0f)) return false;
    return !positions.empty();
}

}  // namespace kvs::view
