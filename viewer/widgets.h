// Drawing helpers shared by the panels: axis ticks, number formatting, colour bars, line plots.
#pragma once
#include <imgui.h>

#include <string>
#include <vector>

#include "viewdata/colormap.h"
#include "viewdata/series.h"

namespace kvs::view {

// About n "nice" tick values (1, 2, 5 x 10^k steps) covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int n);
// Powers of ten in [lo, hi] (lo > 0), for log axes.
std::vector<double> log_ticks(double lo, double hi);
std::string fmt_value(double v);  // "0.0123", "1.2e-05", "4096", "1.5 MB" (bytes: fmt_bytes)
std::string fmt_bytes(double v);

// A vertical colour bar in [p0, p1] with ticks and a title above it.
void draw_colorbar(ImDrawList* dl, ImVec2 p0, ImVec2 p1, ColorMap cm, const ColorScale& s,
                   const char* title);

// Text drawn rotated 90 degrees counter-clockwise, its centre at `center`.
void draw_text_vertical(ImDrawList* dl, ImVec2 center, ImU32 col, const char* text);

struct Series {
    std::string name;
    std::vector<double> x, y;
    ImU32 color = IM_COL32(230, 159, 0, 255);
    bool dashed = false;
    // Cached data instead of x, y (not copied each frame), and where to keep the per-column
    // reduction between frames (CurveCache); both optional.
    const XY* xy = nullptr;
    Decimation* dec = nullptr;
    const std::vector<double>& xs() const { return xy ? xy->x : x; }
    const std::vector<double>& ys() const { return xy ? xy->y : y; }
};

// SameLine() when an item `width` wide still fits on the current line, else a new line (so
// that text is not cut at a child window's edge). Returns whether it stayed on the line.
bool same_line_if_fits(float width);
// `text` shortened with "..." to fit `width` (logical pixels) in the current font.
std::string fit_text(const std::string& text, float width);

// A progress bar for work of unknown length (kvscope replay --quiet prints no progress): a
// segment sliding back and forth, `overlay` (e.g. the elapsed seconds) on top. `seconds` drives
// the animation. Width <= 0: the available width minus -width (as ImGui::ProgressBar).
void busy_bar(double seconds, ImVec2 size, const char* overlay);

// A line plot filling `size` (logical pixels): axes with ticks, labels, a legend in the top
// right corner when `legend` (for one or two short series; plots of many runs share a
// legend_row above them instead), a vertical cursor at x_cursor (NaN: none), a tooltip with the
// values under the mouse. Each series is reduced to the first, lowest, highest and last point per
// pixel column (decimate_minmax), so spikes and the last step are drawn. Returns the x under the
// mouse when it was clicked (NaN otherwise).
double line_plot(const char* id, ImVec2 size, const std::vector<Series>& series, const char* title,
                 const char* xlabel, const char* ylabel, bool log_y, double x_cursor,
                 bool bytes_axis = false, bool legend = true);

// A scatter plot filling `size`: axes with ticks (log10 axes when asked and every value > 0),
// the title on top, each point a filled circle with its label beside it (moved down when it
// would cover an earlier label; to the left at the right edge), a tooltip (the label and x, y)
// for the point under the mouse; `empty` in the middle when there is no point. Returns the index
// of the hovered point (-1: none).
struct ScatterPoint {
    double x = 0, y = 0;
    std::string label;
    ImU32 color = IM_COL32(230, 159, 0, 255);
};
int scatter_plot(const char* id, ImVec2 size, const std::vector<ScatterPoint>& points,
                 const char* title, const char* xlabel, const char* ylabel, bool log_x, bool log_y,
                 const char* empty = "no data");

// A legend laid out in rows across `width` (logical pixels) at the cursor: a line sample (dashed
// like the series) and the name of each series. Advances the cursor below it. `hovered` gets the
// index of the entry under the mouse (-1: none) when not null.
void legend_row(const std::vector<Series>& series, float width, int* hovered = nullptr);

}  // namespace kvs::view
