// The region of a heatmap reduced into the timeline's texture, wider than the view so that
// panning at a constant zoom only moves texture coordinates (issue: 60 frames/s while panning).
//
// Per axis, a view [lo, hi) over `len` source cells drawn on `px` pixels is one of:
//   cells   zoomed in (hi - lo <= px): one texel per whole source cell; the region is whole
//           cells, so any view inside it, at any zoom that stays zoomed in, is exact.
//   binned  zoomed out: one texel per pixel bin of width w = (hi - lo) / px. The region is the
//           view extended by whole bins on each side (anchored at the view's lo when built), so
//           it reduces the same bins reduce() gives for that view (but for the view's outermost
//           pixels, which reduce() widens to the cells only partly in view). A later view at the
//           same w is drawn from it with UVs: each screen pixel then shows the bin under its
//           centre, a shift of under half a pixel while the view moves. The caller rebuilds with
//           axis_region_exact() once the view is at rest, which is reduce() of the view itself.
#pragma once
#include <cstdint>

namespace kvs::view {

struct AxisRegion {
    double r0 = 0, r1 = 0;  // the region handed to reduce() (source cells)
    int n = 0;              // texels
    bool cells = false;     // one texel per source cell (zoomed in)
    double w = 0;           // binned: the bin width (source cells per texel)
};

// The region for the view [lo, hi): the visible cells or bins plus up to `margin` times as
// many on each side, clamped to the data [0, len), at most `max_n` texels in all (never fewer
// than the view's own).
AxisRegion axis_region(double lo, double hi, int64_t len, int px, double margin, int max_n);

// Whether `r` (built for an axis of `len` cells) still serves the view [lo, hi) on `px`
// pixels: the same mode, the same bin width (binned), and the view inside the region.
bool axis_region_covers(const AxisRegion& r, double lo, double hi, int64_t len, int px);

// The region without margins: exactly what reduce() gets for the view [lo, hi) alone.
AxisRegion axis_region_exact(double lo, double hi, int64_t len, int px);

// At rest, whether `r` shows the view exactly as axis_region_exact() would: any covering
// region when zoomed in (texels are cells), else only the exact region itself.
bool axis_region_is_exact(const AxisRegion& r, double lo, double hi, int64_t len, int px);

// Texture coordinates of the view [lo, hi) in the region.
inline float axis_region_u(const AxisRegion& r, double x) {
    return float((x - r.r0) / (r.r1 - r.r0));
}

}  // namespace kvs::view
