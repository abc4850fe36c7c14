// Per-step curves as (x, y) series for line plots, and their reduction to the pixels of a plot:
// per pixel column the first, lowest, highest and last point, so a 4096-step curve drawn 500
// pixels wide keeps its spikes, its first step and its last step.
#pragma once
#include <cstddef>
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

}  // namespace kvs::view
