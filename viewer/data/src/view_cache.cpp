// The timeline texture's region (see view_cache.h).
#include "viewdata/view_cache.h"

#include <algorithm>
#include <cmath>

namespace kvs::view {

namespace {
bool is_cells(double lo, double hi, int px) {
    return hi - lo <= std::max(px, 1);
}
}  // namespace

AxisRegion axis_region(double lo, double hi, int64_t len, int px, double margin, int max_n) {
    px = std::max(px, 1);
    AxisRegion r;
    if (is_cells(lo, hi, px)) {
        // Whole cells: the visible ones, then as many more on each side as fit.
        const double a = std::max(0.0, std::floor(lo)), b = std::min(double(len), std::ceil(hi));
        const double nv = std::max(1.0, b - a);
        const double extra =
            std::max(0.0, std::min(std::floor(margin * nv), std::floor((max_n - nv) / 2)));
        const double a2 = std::max(0.0, a - extra),
                     b2 = std::max(a2 + 1, std::min(double(len), b + extra));
        r.r0 = a2;
        r.r1 = b2;
        r.n = int(b2 - a2);
        r.cells = true;
        r.w = 1;
        return r;
    }
    // Bins of the view's width per pixel, whole bins added on each side; the view's own ends
    // are kept exactly, so a region without margins is the view itself.
    const double w = (hi - lo) / px;
    const double m =
        std::max(0.0, std::min(std::floor(margin * px), std::floor((max_n - px) / 2.0)));
    const double k0 = std::max(0.0, std::min(m, std::floor(lo / w)));
    const double k1 = std::max(0.0, std::min(m, std::ceil((double(len) - hi) / w - 1e-9)));
    r.r0 = k0 > 0 ? lo - k0 * w : lo;
    r.r1 = k1 > 0 ? hi + k1 * w : hi;
    r.n = px + int(k0) + int(k1);
    r.cells = false;
    r.w = w;
    return r;
}

bool axis_region_covers(const AxisRegion& r, double lo, double hi, int64_t len, int px) {
    px = std::max(px, 1);
    if (r.n <= 0) return false;
    if (is_cells(lo, hi, px) != r.cells) return false;
    if (r.cells)
        return std::max(0.0, std::floor(lo)) >= r.r0 &&
               std::min(double(len), std::ceil(hi)) <= r.r1;
    const double w = (hi - lo) / px;
    if (std::fabs(w - r.w) > 1e-9 * r.w) return false;
    const double eps = 1e-6 * r.w;
    return lo >= r.r0 - eps && hi <= r.r1 + eps;
}

AxisRegion axis_region_exact(double lo, double hi, int64_t len, int px) {
    return axis_region(lo, hi, len, px, 0, 0);
}

bool axis_region_is_exact(const AxisRegion& r, double lo, double hi, int64_t len, int px) {
    if (!axis_region_covers(r, lo, hi, len, px)) return false;
    if (r.cells) return true;
    const AxisRegion e = axis_region_exact(lo, hi, len, px);
    return r.r0 == e.r0 && r.r1 == e.r1 && r.n == e.n;
}

}  // namespace kvs::view
