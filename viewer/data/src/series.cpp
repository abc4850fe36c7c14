// Curves as series and their per-column reduction (see series.h).
#include "viewdata/series.h"

#include <algorithm>
#include <cmath>

namespace kvs::view {

XY curve_series(const RunData& r, Curve c, int layer) {
    XY s;
    s.y = curve(r, c, layer);
    s.x.resize(s.y.size());
    for (size_t i = 0; i < s.x.size() && i < r.steps.size(); ++i) s.x[i] = double(r.steps[i]);
    return s;
}

std::vector<size_t> decimate_minmax(const std::vector<double>& x, const std::vector<double>& y,
                                    double x0, double x1, int columns) {
    const size_t n = std::min(x.size(), y.size());
    std::vector<size_t> out;
    if (n == 0) return out;
    if (columns < 1 || !(x1 > x0) || n <= size_t(columns) * 4) {
        out.resize(n);
        for (size_t i = 0; i < n; ++i) out[i] = i;
        return out;
    }
    out.reserve(size_t(columns) * 4 + 2);
    const double scale = double(columns) / (x1 - x0);
    auto column = [&](size_t i) { return int64_t(std::floor((x[i] - x0) * scale)); };
    size_t i = 0;
    bool prev_finite = true;
    while (i < n) {
        const int64_t col = column(i);
        size_t first = i, last = i, lo = n, hi = n;
        size_t k = i;
        for (; k < n && column(k) == col; ++k) {
            last = k;
            if (!std::isfinite(y[k])) {
                if (prev_finite) out.push_back(k);  // keep the break in the line
                prev_finite = false;
                continue;
            }
            prev_finite = true;
            if (lo == n || y[k] < y[lo]) lo = k;
            if (hi == n || y[k] > y[hi]) hi = k;
        }
        for (size_t idx : {first, lo, hi, last})
            if (idx < n && std::isfinite(y[idx])) out.push_back(idx);
        i = k;
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

const std::vector<size_t>& Decimation::get(const std::vector<double>& x,
                                           const std::vector<double>& y, double x0_, double x1_,
                                           int columns_) {
    const size_t n_ = std::min(x.size(), y.size());
    if (!valid || x0_ != x0 || x1_ != x1 || columns_ != columns || n_ != n) {
        idx = decimate_minmax(x, y, x0_, x1_, columns_);
        x0 = x0_;
        x1 = x1_;
        columns = columns_;
        n = n_;
        valid = true;
    }
    return idx;
}

CurveCache::Entry& CurveCache::get(const RunData& r, Curve c, int layer) {
    auto& e = map_[{&r, r.S, int(c), layer}];
    if (!e) {
        e = std::make_unique<Entry>();
        e->xy = curve_series(r, c, layer);
        ++computed_;
    }
    return *e;
}

}  // namespace kvs::view
