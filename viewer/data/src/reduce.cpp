// Reductions of a matrix to a pixel grid (see reduce.h).
#include "viewdata/reduce.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace kvs::view {

Range finite_range(const float* v, size_t n) {
    Range r;
    for (size_t i = 0; i < n; ++i) {
        const float x = v[i];
        if (!std::isfinite(x)) continue;
        r.lo = std::min(r.lo, x);
        r.hi = std::max(r.hi, x);
    }
    return r;
}

float finite_percentile(const float* v, size_t n, double p) {
    std::vector<float> f;
    f.reserve(n);
    for (size_t i = 0; i < n; ++i)
        if (std::isfinite(v[i])) f.push_back(v[i]);
    if (f.empty()) return kNaN;
    const double pos = std::clamp(p, 0.0, 100.0) / 100.0 * double(f.size() - 1);
    const size_t k = size_t(pos + 0.5);
    std::nth_element(f.begin(), f.begin() + ptrdiff_t(k), f.end());
    return f[k];
}

const char* reduce_name(Reduce r) {
    return r == Reduce::Mean ? "mean" : r == Reduce::Min ? "min" : "max";
}

bool reduce_from_name(const std::string& s, Reduce* out) {
    for (Reduce r : {Reduce::Mean, Reduce::Min, Reduce::Max})
        if (s == reduce_name(r)) {
            *out = r;
            return true;
        }
    return false;
}

Span part_span(double a0, double a1, int n, int i, int64_t len) {
    const double w = (a1 - a0) / n;
    const double a = a0 + w * i, b = a0 + w * (i + 1);
    int64_t lo = int64_t(std::floor(a + 0.5)), hi = int64_t(std::floor(b + 0.5));
    if (w >= 1) {
        // The outer parts take the cells only partly in view, so nothing visible is dropped.
        if (i == 0) lo = int64_t(std::floor(a));
        if (i == n - 1) hi = int64_t(std::ceil(b));
    }
    if (hi <= lo) {
        lo = int64_t(std::floor(0.5 * (a + b)));
        hi = lo + 1;
    }
    return {std::clamp<int64_t>(lo, 0, len), std::clamp<int64_t>(hi, 0, len)};
}

namespace {

struct Acc {
    float mn = INFINITY, mx = -INFINITY;
    double sum = 0, cnt = 0;
    void add(float v) {
        if (std::isnan(v)) return;
        mn = std::min(mn, v);
        mx = std::max(mx, v);
        sum += v;
        cnt += 1;
    }
    void add(float vmn, float vmx, float vsum, float vcnt) {
        if (vcnt <= 0) return;
        mn = std::min(mn, vmn);
        mx = std::max(mx, vmx);
        sum += vsum;
        cnt += vcnt;
    }
    float get(Reduce m) const {
        if (cnt <= 0) return kNaN;
        return m == Reduce::Min ? mn : m == Reduce::Max ? mx : float(sum / cnt);
    }
};

std::vector<Span> spans(double a0, double a1, int n, int64_t len) {
    std::vector<Span> s(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) s[size_t(i)] = part_span(a0, a1, n, i, len);
    return s;
}

}  // namespace

std::vector<float> reduce_brute(const Matrix& m, double r0, double r1, double c0, double c1,
                                int n_r, int n_c, Reduce mode) {
    KVS_ASSERT(n_r > 0 && n_c > 0);
    std::vector<float> out(size_t(n_r) * size_t(n_c));
    for (int i = 0; i < n_r; ++i) {
        const Span sr = part_span(r0, r1, n_r, i, m.rows);
        for (int k = 0; k < n_c; ++k) {
            const Span sc = part_span(c0, c1, n_c, k, m.cols);
            Acc a;
            for (int64_t r = sr.lo; r < sr.hi; ++r)
                for (int64_t c = sc.lo; c < sc.hi; ++c) a.add(m.at(r, c));
            out[size_t(i) * n_c + k] = a.get(mode);
        }
    }
    return out;
}

void PooledLevel::reset(int64_t r, int64_t c) {
    rows = r;
    cols = c;
    const size_t n = size_t(r * c);
    mn.assign(n, INFINITY);
    mx.assign(n, -INFINITY);
    sum.assign(n, 0.0f);
    cnt.assign(n, 0.0f);
}

Pyramid::Pyramid(const Matrix* m) : m_(m) {
    build_from(m->rows, m->cols);
}

Pyramid::Pyramid(PooledLevel base, int base_level) : first_(base_level) {
    KVS_ASSERT(base_level >= 0);
    const int64_t rows = base.rows, cols = base.cols;
    lv_.push_back(std::move(base));
    build_from(rows, cols);
}

void Pyramid::build_from(int64_t rows, int64_t cols) {
    while (rows > 1 || cols > 1) {
        const PooledLevel* prev = lv_.empty() ? nullptr : &lv_.back();
        PooledLevel L;
        L.reset((rows + 1) / 2, (cols + 1) / 2);
        for (int64_t r = 0; r < L.rows; ++r) {
            for (int64_t c = 0; c < L.cols; ++c) {
                Acc a;
                for (int64_t dr = 0; dr < 2; ++dr) {
                    const int64_t sr = 2 * r + dr;
                    if (sr >= rows) break;
                    for (int64_t dc = 0; dc < 2; ++dc) {
                        const int64_t sc = 2 * c + dc;
                        if (sc >= cols) break;
                        if (!prev) {
                            a.add(m_->at(sr, sc));
                        } else {
                            const size_t j = size_t(sr * prev->cols + sc);
                            a.add(prev->mn[j], prev->mx[j], prev->sum[j], prev->cnt[j]);
                        }
                    }
                }
                const size_t j = size_t(r * L.cols + c);
                if (a.cnt > 0) {
                    L.mn[j] = a.mn;
                    L.mx[j] = a.mx;
                    L.sum[j] = float(a.sum);
                    L.cnt[j] = float(a.cnt);
                }
            }
        }
        rows = L.rows;
        cols = L.cols;
        lv_.push_back(std::move(L));
    }
}

size_t Pyramid::bytes() const {
    size_t n = 0;
    for (const PooledLevel& L : lv_) n += L.bytes();
    return n;
}

int64_t Pyramid::level_rows(int k) const {
    return k == 0 && m_ ? m_->rows : lv_[size_t(k - first_)].rows;
}
int64_t Pyramid::level_cols(int k) const {
    return k == 0 && m_ ? m_->cols : lv_[size_t(k - first_)].cols;
}

int Pyramid::level_for(double span_r, double span_c) const {
    const double s = std::min(span_r, span_c);
    if (!(s >= 2)) return first_level();
    const int k = int(std::floor(std::log2(s)));
    return std::clamp(k, first_level(), levels() - 1);
}

std::vector<float> Pyramid::reduce(double r0, double r1, double c0, double c1, int n_r, int n_c,
                                   Reduce mode) const {
    const int k = level_for((r1 - r0) / n_r, (c1 - c0) / n_c);
    return reduce_at(k, r0, r1, c0, c1, n_r, n_c, mode);
}

std::vector<float> Pyramid::reduce_at(int k, double r0, double r1, double c0, double c1, int n_r,
                                      int n_c, Reduce mode) const {
    KVS_ASSERT(n_r > 0 && n_c > 0 && k >= first_level() && k < levels());
    const double s = std::ldexp(1.0, -k);
    const int64_t rows = level_rows(k), cols = level_cols(k);
    const std::vector<Span> sr = spans(r0 * s, r1 * s, n_r, rows);
    const std::vector<Span> sc = spans(c0 * s, c1 * s, n_c, cols);
    std::vector<float> out(size_t(n_r) * size_t(n_c));
    const PooledLevel* L = k == 0 && m_ ? nullptr : &lv_[size_t(k - first_)];
    if (!L) {
        // Level 0, the common case while zoomed in: plain loops per mode.
        for (int i = 0; i < n_r; ++i) {
            float* o = out.data() + size_t(i) * n_c;
            const Span ri = sr[size_t(i)];
            for (int kk = 0; kk < n_c; ++kk) {
                const Span b = sc[size_t(kk)];
                float mn = INFINITY, mx = -INFINITY, sum = 0;
                int cnt = 0;
                for (int64_t r = ri.lo; r < ri.hi; ++r) {
                    const float* row = m_->row(r);
                    for (int64_t c = b.lo; c < b.hi; ++c) {
                        const float x = row[c];
                        if (x != x) continue;
                        mn = x < mn ? x : mn;
                        mx = x > mx ? x : mx;
                        sum += x;
                        ++cnt;
                    }
                }
                o[kk] = cnt == 0              ? kNaN
                        : mode == Reduce::Min ? mn
                        : mode == Reduce::Max ? mx
                                              : sum / float(cnt);
            }
        }
        return out;
    }
    for (int i = 0; i < n_r; ++i) {
        float* o = out.data() + size_t(i) * n_c;
        for (int kk = 0; kk < n_c; ++kk) {
            const Span& b = sc[size_t(kk)];
            Acc a;
            for (int64_t r = sr[size_t(i)].lo; r < sr[size_t(i)].hi; ++r) {
                if (!L) {
                    const float* row = m_->row(r);
                    for (int64_t c = b.lo; c < b.hi; ++c) a.add(row[c]);
                } else {
                    const size_t base = size_t(r * cols);
                    for (int64_t c = b.lo; c < b.hi; ++c)
                        a.add(L->mn[base + c], L->mx[base + c], L->sum[base + c], L->cnt[base + c]);
                }
            }
            o[kk] = a.get(mode);
        }
    }
    return out;
}

}  // namespace kvs::view
