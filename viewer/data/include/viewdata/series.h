// Per-step curves as (x, y) series for line plots, and their reduction to the pixels of a plot:
// per pixel column the first, lowest, highest and last point, so a 4096-step curve drawn 500
// pixels wide keeps its spikes, its first step and its last step.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "viewdata/quantities.h"
#include "viewdata/results.h"

namespace kvs::view {

struct XY {
    std::vector<double> x, y;
};

// The curve `c` of a run over the selected layer (-1 = all): one point per evaluated step,
// x = the step's token index (steps[s]), y = curve(r, c, layer)[s].
XY curve_series(const RunData& r, Curve c, int layer);

// Indices of the points to draw, ascending, for x values ascending: with the x range [x0, x1]
// split into `columns` equal columns, per column the first and last point and the points with
// the lowest and highest finite y; for each run of non-finite y its first point (the line
// breaks there). Every index when there are no more than 4 points per column.
std::vector<size_t> decimate_minmax(const std::vector<double>& x, const std::vector<double>& y,
                                    double x0, double x1, int columns);

// decimate_minmax() kept with what it was computed for: valid while the series (n points), the
// x range and the column count are the same.
struct Decimation {
    double x0 = 0, x1 = 0;
    int columns = 0;
    size_t n = 0;
    bool valid = false;
    std::vector<size_t> idx;
    // The indices for this range and width: computed on the first call and when they changed.
    const std::vector<size_t>& get(const std::vector<double>& x, const std::vector<double>& y,
                                   double x0, double x1, int columns);
};

// The curves view's per-run series, so that a frame does not recompute them: curve_series() per
// (run, curve, layer), with a Decimation each (per plot width and x range). Runs are keyed by
// address and step count (the viewer never frees an open run). Not thread-safe (the UI thread).
class CurveCache {
  public:
    struct Entry {
        XY xy;
        Decimation dec;
    };
    // The entry for (r, c, layer), computed on first use.
    Entry& get(const RunData& r, Curve c, int layer);
    size_t size() const { return map_.size(); }
    size_t computed() const { return computed_; }  // curve_series() calls so far
    void clear() { map_.clear(); }

  private:
    std::map<std::tuple<const RunData*, int64_t, int, int>, std::unique_ptr<Entry>> map_;
    size_t computed_ = 0;
};

}  // namespace kvs::view
