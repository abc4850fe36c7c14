// Drawing helpers (see widgets.h).
#include "widgets.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "viewdata/series.h"

namespace kvs::view {

std::vector<double> nice_ticks(double lo, double hi, int n) {
    std::vector<double> t;
    if (!(hi > lo) || n < 1) return t;
    const double raw = (hi - lo) / n;
    const double mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 5.0, 10.0})
        if (m * mag >= raw) {
            step = m * mag;
            break;
        }
    for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step)
        t.push_back(std::fabs(v) < 1e-12 * step ? 0.0 : v);
    return t;
}

std::vector<double> log_ticks(double lo, double hi) {
    std::vector<double> t;
    if (!(lo > 0) || !(hi > lo)) return t;
    for (int e = int(std::ceil(std::log10(lo) - 1e-9)); e <= int(std::floor(std::log10(hi) + 1e-9));
         ++e)
        t.push_back(std::pow(10.0, e));
    return t;
}

std::string fmt_value(double v) {
    char b[32];
    if (std::isnan(v)) return "-";
    const double a = std::fabs(v);
    if (a == 0)
        return "0";
    else if (a >= 1e6 || a < 1e-3)
        std::snprintf(b, sizeof b, "%.2g", v);
    else if (a >= 100 && v == std::floor(v))
        std::snprintf(b, sizeof b, "%.0f", v);
    else if (a >= 100)
        std::snprintf(b, sizeof b, "%.1f", v);
    else
        std::snprintf(b, sizeof b, "%.3g", v);
    return b;
}

std::string fmt_bytes(double v) {
    char b[32];
    const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (std::fabs(v) >= 1024 && i < 4) {
        v /= 1024;
        ++i;
    }
    std::snprintf(b, sizeof b, i == 0 ? "%.0f %s" : "%.3g %s", v, u[i]);
    return b;
}

void draw_text_vertical(ImDrawList* dl, ImVec2 center, ImU32 col, const char* text) {
    // Draw horizontally, then rotate the new vertices by 90 degrees around the centre.
    const ImVec2 sz = ImGui::CalcTextSize(text);
    const int v0 = dl->VtxBuffer.Size;
    // AddText drops glyphs outside the clip rect as laid out horizontally: lift the clip.
    dl->PushClipRectFullScreen();
    dl->AddText(ImVec2(center.x - sz.x / 2, center.y - sz.y / 2), col, text);
    dl->PopClipRect();
    for (int i = v0; i < dl->VtxBuffer.Size; ++i) {
        ImDrawVert& v = dl->VtxBuffer[i];
        const float dx = v.pos.x - center.x, dy = v.pos.y - center.y;
        v.pos = ImVec2(center.x + dy, center.y - dx);
    }
}

void draw_colorbar(ImDrawList* dl, ImVec2 p0, ImVec2 p1, ColorMap cm, const ColorScale& s,
                   const char* title) {
    const ImU32 text = ImGui::GetColorU32(ImGuiCol_Text);
    const float h = p1.y - p0.y;
    const int n = 64;
    for (int i = 0; i < n; ++i) {
        // Top = high values.
        const float t0 = float(i) / n, t1 = float(i + 1) / n;
        const Rgb8 c = colormap_at(cm, 1.0f - (t0 + t1) / 2);
        dl->AddRectFilled(ImVec2(p0.x, p0.y + t0 * h), ImVec2(p1.x, p0.y + t1 * h + 1),
                          IM_COL32(c.r, c.g, c.b, 255));
    }
    dl->AddRect(p0, p1, IM_COL32(160, 160, 160, 255));
    const ImVec2 ts = ImGui::CalcTextSize(title);
    dl->AddText(ImVec2(p0.x - 4, p0.y - ts.y - 4), text, title);
    std::vector<double> ticks;
    if (s.log)
        ticks = log_ticks(s.lo, s.hi);
    else
        ticks = nice_ticks(s.lo, s.hi, 5);
    if (ticks.size() < 2) ticks = {s.lo, s.hi};
    const float fh = ImGui::GetFontSize();
    for (double v : ticks) {
        const float t = s.normalize(float(v));
        const float y = p1.y - t * h;
        dl->AddLine(ImVec2(p1.x, y), ImVec2(p1.x + 4, y), text);
        const std::string l = fmt_value(v);
        dl->AddText(ImVec2(p1.x + 6, y - fh / 2), text, l.c_str());
    }
}

namespace {

// A polyline, solid or dashed (6 px on, 4 px off, measured along the line).
void stroke(ImDrawList* dl, const std::vector<ImVec2>& pts, ImU32 col, bool dashed, float thick) {
    if (pts.size() < 2) return;
    if (!dashed) {
        dl->AddPolyline(pts.data(), int(pts.size()), col, 0, thick);
        return;
    }
    const float on = 6, period = 10;
    float phase = 0;  // distance along the line, modulo the period
    for (size_t i = 1; i < pts.size(); ++i) {
        const ImVec2 p = pts[i - 1], q = pts[i];
        const float dx = q.x - p.x, dy = q.y - p.y;
        const float len = std::sqrt(dx * dx + dy * dy);
        float d = 0;
        while (d < len) {
            const float left = phase < on ? on - phase : period - phase;
            const float e = std::min(len, d + left);
            if (!(e > d)) {
                // float rounding left no progress (phase a hair below a boundary): snap to it,
                // or this loops forever (found with a dashed run on a 2054-step curve).
                phase = phase < on ? on : 0.0f;
                if (left <= 0 || d + left <= d) d = std::nextafter(d, len);
                continue;
            }
            if (phase < on)
                dl->AddLine(ImVec2(p.x + dx * d / len, p.y + dy * d / len),
                            ImVec2(p.x + dx * e / len, p.y + dy * e / len), col, thick);
            phase = std::fmod(phase + (e - d), period);
            d = e;
        }
    }
}

// The frame every plot draws in: an invisible button of `size` (hover, click), the title on
// top, room for the y label and ticks on the left and for the x ticks and label at the bottom.
struct PlotFrame {
    ImVec2 p, a, b;  // the button's corner; the plotting area's corners
    ImDrawList* dl;
    float fh;
    ImU32 text, grid;
    bool hovered, clicked;
};

PlotFrame plot_frame(const char* button, ImVec2 size, const char* title) {
    PlotFrame f;
    f.p = ImGui::GetCursorScreenPos();
    ImGui::InvisibleButton(button, size);
    f.hovered = ImGui::IsItemHovered();
    f.clicked = ImGui::IsItemClicked();
    f.dl = ImGui::GetWindowDrawList();
    f.fh = ImGui::GetFontSize();
    f.text = ImGui::GetColorU32(ImGuiCol_Text);
    f.grid = IM_COL32(80, 80, 90, 255);
    const float left = 16 + f.fh * 4.2f, bottom = f.fh * 2.6f, top = f.fh * 1.6f, right = 12;
    f.a = ImVec2(f.p.x + left, f.p.y + top);
    f.b = ImVec2(f.p.x + size.x - right, f.p.y + size.y - bottom);
    f.dl->AddRectFilled(f.a, f.b, IM_COL32(24, 24, 28, 255));
    f.dl->AddText(ImVec2(f.a.x, f.p.y + 2), f.text, title);
    return f;
}

// A message in the middle of a plot that has nothing to show.
void plot_message(const PlotFrame& f, const char* m) {
    const ImVec2 ms = ImGui::CalcTextSize(m);
    f.dl->AddText(ImVec2((f.a.x + f.b.x - ms.x) / 2, (f.a.y + f.b.y - ms.y) / 2), f.text, m);
}

// An axis range: log axes to whole decades; linear ones from 0 when it is near, padded by
// `pad` of the span.
void axis_range(double& lo, double& hi, bool lg, double pad) {
    if (lg) {
        lo = std::pow(10.0, std::floor(std::log10(lo)));
        hi = std::pow(10.0, std::ceil(std::log10(hi)));
        if (hi <= lo) hi = lo * 10;
        return;
    }
    if (lo >= 0 && lo < 0.5 * hi) lo = 0;
    const double d = (hi - lo) * pad + (hi == lo ? std::max(1e-9, std::fabs(hi) * 0.1) : 0);
    hi += d;
    if (lo != 0) lo -= d;
}

// Grid lines and tick labels of both axes (X, Y: value -> pixel; x ticks every ~6 font sizes,
// y ticks every ~3, decades on log axes), then the axis labels.
template <class FX, class FY>
void plot_axes(const PlotFrame& f, double x0, double x1, bool log_x, FX X, double y0, double y1,
               bool log_y, FY Y, bool bytes_y, const char* xlabel, const char* ylabel) {
    const std::vector<double> xt =
        log_x ? log_ticks(x0, x1)
              : nice_ticks(x0, x1, std::max(2, int((f.b.x - f.a.x) / (f.fh * 6))));
    for (double t : xt) {
        f.dl->AddLine(ImVec2(X(t), f.a.y), ImVec2(X(t), f.b.y), f.grid);
        const std::string l = fmt_value(t);
        const ImVec2 ls = ImGui::CalcTextSize(l.c_str());
        f.dl->AddText(ImVec2(X(t) - ls.x / 2, f.b.y + 3), f.text, l.c_str());
    }
    const std::vector<double> yt =
        log_y ? log_ticks(y0, y1)
              : nice_ticks(y0, y1, std::max(2, int((f.b.y - f.a.y) / (f.fh * 3))));
    for (double t : yt) {
        f.dl->AddLine(ImVec2(f.a.x, Y(t)), ImVec2(f.b.x, Y(t)), f.grid);
        const std::string l = bytes_y ? fmt_bytes(t) : fmt_value(t);
        const ImVec2 ls = ImGui::CalcTextSize(l.c_str());
        f.dl->AddText(ImVec2(f.a.x - ls.x - 4, Y(t) - ls.y / 2), f.text, l.c_str());
    }
    const ImVec2 xs = ImGui::CalcTextSize(xlabel);
    f.dl->AddText(ImVec2((f.a.x + f.b.x - xs.x) / 2, f.b.y + f.fh + 6), f.text, xlabel);
    draw_text_vertical(f.dl, ImVec2(f.p.x + f.fh * 0.6f + 2, (f.a.y + f.b.y) / 2), f.text, ylabel);
}

}  // namespace

bool same_line_if_fits(float width) {
    ImGui::SameLine();
    if (ImGui::GetContentRegionAvail().x >= width) return true;
    ImGui::NewLine();
    return false;
}

std::string fit_text(const std::string& text, float width) {
    if (ImGui::CalcTextSize(text.c_str()).x <= width) return text;
    std::string s = text;
    while (!s.empty() && ImGui::CalcTextSize((s + "...").c_str()).x > width) s.pop_back();
    return s + "...";
}

void busy_bar(double seconds, ImVec2 size, const char* overlay) {
    // An empty bar with the overlay, then the sliding segment drawn over its frame.
    ImGui::ProgressBar(0.0f, size, "");
    const ImVec2 a = ImGui::GetItemRectMin(), b = ImGui::GetItemRectMax();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const float w = b.x - a.x, seg = std::max(8.0f, w * 0.25f);
    const double ph = std::fmod(std::max(0.0, seconds) / 1.5, 2.0);  // 1.5 s per sweep
    const float f = float(ph < 1 ? ph : 2 - ph);
    const float x = a.x + f * (w - seg);
    dl->AddRectFilled(ImVec2(x, a.y + 2), ImVec2(x + seg, b.y - 2),
                      ImGui::GetColorU32(ImGuiCol_PlotHistogram), 2.0f);
    if (overlay && *overlay) {
        const ImVec2 ts = ImGui::CalcTextSize(overlay);
        const ImVec2 tp((a.x + b.x - ts.x) / 2, (a.y + b.y - ts.y) / 2);
        dl->AddRectFilled(ImVec2(tp.x - 3, tp.y), ImVec2(tp.x + ts.x + 3, tp.y + ts.y),
                          IM_COL32(20, 20, 24, 190), 2.0f);
        dl->AddText(tp, ImGui::GetColorU32(ImGuiCol_Text), overlay);
    }
}

void legend_row(const std::vector<Series>& series, float width, int* hovered) {
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const ImVec2 p0 = ImGui::GetCursorScreenPos();
    const float fh = ImGui::GetFontSize(), sample = fh * 1.6f, gap = fh * 1.2f;
    const ImU32 text = ImGui::GetColorU32(ImGuiCol_Text);
    const ImVec2 m = ImGui::GetIO().MousePos;
    float x = 0, y = 0;
    if (hovered) *hovered = -1;
    for (size_t i = 0; i < series.size(); ++i) {
        const Series& s = series[i];
        const ImVec2 ns = ImGui::CalcTextSize(s.name.c_str());
        const float w = sample + 6 + ns.x;
        if (x > 0 && x + w > width) {
            x = 0;
            y += fh + 4;
        }
        const ImVec2 a(p0.x + x, p0.y + y);
        stroke(dl, {ImVec2(a.x, a.y + fh / 2), ImVec2(a.x + sample, a.y + fh / 2)}, s.color,
               s.dashed, 3);
        dl->AddText(ImVec2(a.x + sample + 6, a.y), text, s.name.c_str());
        if (hovered && m.x >= a.x && m.x < a.x + w && m.y >= a.y && m.y < a.y + fh + 4)
            *hovered = int(i);
        x += w + gap;
    }
    ImGui::Dummy(ImVec2(width, series.empty() ? 0 : y + fh + 4));
}

double line_plot(const char* id, ImVec2 size, const std::vector<Series>& series, const char* title,
                 const char* xlabel, const char* ylabel, bool log_y, double x_cursor,
                 bool bytes_axis, bool legend) {
    ImGui::PushID(id);
    const PlotFrame f = plot_frame("plot", size, title);
    const ImVec2 a = f.a, b = f.b;
    ImDrawList* dl = f.dl;
    const ImU32 text = f.text;
    const bool hovered = f.hovered, clicked = f.clicked;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (const Series& s : series) {
        const std::vector<double>&sx = s.xs(), &sy = s.ys();
        for (size_t i = 0; i < sx.size() && i < sy.size(); ++i) {
            if (!std::isfinite(sy[i]) || (log_y && sy[i] <= 0)) continue;
            x0 = std::min(x0, sx[i]);
            x1 = std::max(x1, sx[i]);
            y0 = std::min(y0, sy[i]);
            y1 = std::max(y1, sy[i]);
        }
    }
    double result = std::numeric_limits<double>::quiet_NaN();
    if (!(x1 >= x0)) {
        plot_message(f, "no data");
        ImGui::PopID();
        return result;
    }
    if (x1 == x0) x1 = x0 + 1;
    axis_range(y0, y1, log_y, 0.05);
    auto X = [&](double x) { return float(a.x + (x - x0) / (x1 - x0) * (b.x - a.x)); };
    auto Y = [&](double y) {
        const double t = log_y ? (std::log10(std::max(y, 1e-300)) - std::log10(y0)) /
                                     (std::log10(y1) - std::log10(y0))
                               : (y - y0) / (y1 - y0);
        return float(b.y - t * (b.y - a.y));
    };
    plot_axes(f, x0, x1, false, X, y0, y1, log_y, Y, bytes_axis, xlabel, ylabel);
    dl->PushClipRect(a, b, true);
    std::vector<ImVec2> pts;
    std::vector<size_t> local;
    for (const Series& s : series) {
        const std::vector<double>&sx = s.xs(), &sy = s.ys();
        // Per pixel column: first, lowest, highest, last (spikes and the last step survive);
        // kept in s.dec between frames when the caller gives one.
        const int cols = std::max(1, int(b.x - a.x));
        const std::vector<size_t>* idx = &local;
        if (s.dec)
            idx = &s.dec->get(sx, sy, x0, x1, cols);
        else
            local = decimate_minmax(sx, sy, x0, x1, cols);
        pts.clear();
        for (size_t i : *idx) {
            if (!std::isfinite(sy[i]) || (log_y && sy[i] <= 0)) {
                stroke(dl, pts, s.color, s.dashed, 2.0f);
                pts.clear();
                continue;
            }
            pts.push_back(ImVec2(X(sx[i]), Y(sy[i])));
        }
        stroke(dl, pts, s.color, s.dashed, 2.0f);
    }
    if (std::isfinite(x_cursor))
        dl->AddLine(ImVec2(X(x_cursor), a.y), ImVec2(X(x_cursor), b.y),
                    IM_COL32(255, 255, 255, 160));
    dl->PopClipRect();
    dl->AddRect(a, b, IM_COL32(140, 140, 150, 255));
    // Legend, top right (only for a few short series: many share a legend_row instead).
    float ly = a.y + 4;
    for (size_t k = 0; legend && k < series.size(); ++k) {
        const Series& s = series[k];
        const ImVec2 ns = ImGui::CalcTextSize(s.name.c_str());
        const float lx = b.x - ns.x - 30;
        dl->AddRectFilled(ImVec2(lx - 4, ly - 1), ImVec2(b.x - 2, ly + ns.y + 1),
                          IM_COL32(24, 24, 28, 200));
        stroke(dl, {ImVec2(lx, ly + ns.y / 2), ImVec2(lx + 18, ly + ns.y / 2)}, s.color, s.dashed,
               3);
        dl->AddText(ImVec2(lx + 24, ly), text, s.name.c_str());
        ly += ns.y + 2;
    }
    const ImVec2 m = ImGui::GetIO().MousePos;
    if (hovered && m.x >= a.x && m.x <= b.x) {
        const double xv = x0 + (m.x - a.x) / (b.x - a.x) * (x1 - x0);
        ImGui::BeginTooltip();
        ImGui::Text("%s %s", xlabel, fmt_value(std::round(xv)).c_str());
        for (const Series& s : series) {
            const std::vector<double>&sx = s.xs(), &sy = s.ys();
            if (sx.empty()) continue;
            auto it = std::lower_bound(sx.begin(), sx.end(), xv);
            size_t i = size_t(std::min<ptrdiff_t>(it - sx.begin(), ptrdiff_t(sx.size()) - 1));
            if (i < sy.size())
                ImGui::TextColored(
                    ImGui::ColorConvertU32ToFloat4(s.color), "%s: %s", s.name.c_str(),
                    bytes_axis ? fmt_bytes(sy[i]).c_str() : fmt_value(sy[i]).c_str());
        }
        ImGui::EndTooltip();
        if (clicked) result = xv;
    }
    ImGui::PopID();
    return result;
}

}  // namespace kvs::view

namespace kvs::view {

int scatter_plot(const char* id, ImVec2 size, const std::vector<ScatterPoint>& points,
                 const char* title, const char* xlabel, const char* ylabel, bool log_x, bool log_y,
                 const char* empty) {
    ImGui::PushID(id);
    const PlotFrame f = plot_frame("scatter", size, title);
    const ImVec2 a = f.a, b = f.b;
    ImDrawList* dl = f.dl;
    const float fh = f.fh;
    const bool hovered = f.hovered;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (const ScatterPoint& q : points) {
        if (!std::isfinite(q.x) || !std::isfinite(q.y)) continue;
        x0 = std::min(x0, q.x);
        x1 = std::max(x1, q.x);
        y0 = std::min(y0, q.y);
        y1 = std::max(y1, q.y);
    }
    if (!(x1 >= x0)) {
        plot_message(f, empty);
        ImGui::PopID();
        return -1;
    }
    log_x = log_x && x0 > 0;
    log_y = log_y && y0 > 0;
    axis_range(x0, x1, log_x, 0.08);
    axis_range(y0, y1, log_y, 0.08);
    auto frac = [](double v, double lo, double hi, bool lg) {
        return lg ? (std::log10(std::max(v, 1e-300)) - std::log10(lo)) /
                        (std::log10(hi) - std::log10(lo))
                  : (v - lo) / (hi - lo);
    };
    // A margin inside the frame so that points on the range's edge are drawn whole.
    const float m = fh * 0.6f;
    auto X = [&](double x) {
        return float(a.x + m + frac(x, x0, x1, log_x) * (b.x - a.x - 2 * m));
    };
    auto Y = [&](double y) {
        return float(b.y - m - frac(y, y0, y1, log_y) * (b.y - a.y - 2 * m));
    };
    plot_axes(f, x0, x1, log_x, X, y0, y1, log_y, Y, false, xlabel, ylabel);
    dl->PushClipRect(a, b, true);
    const float r = std::max(3.0f, fh * 0.35f);
    int hov = -1;
    float best = r * 2.5f;
    const ImVec2 mouse = ImGui::GetIO().MousePos;
    std::vector<ImVec4> placed;  // label rects (x0, y0, x1, y1)
    for (size_t i = 0; i < points.size(); ++i) {
        const ScatterPoint& q = points[i];
        if (!std::isfinite(q.x) || !std::isfinite(q.y)) continue;
        const ImVec2 c(X(q.x), Y(q.y));
        dl->AddCircleFilled(c, r, q.color);
        dl->AddCircle(c, r, IM_COL32(0, 0, 0, 200));
        const float d = std::hypot(mouse.x - c.x, mouse.y - c.y);
        if (hovered && d < best) {
            best = d;
            hov = int(i);
        }
        if (q.label.empty()) continue;
        const ImVec2 ls = ImGui::CalcTextSize(q.label.c_str());
        float lx = c.x + r + 4, ly = c.y - ls.y / 2;
        if (lx + ls.x > b.x - 2) lx = c.x - r - 4 - ls.x;
        for (int tries = 0; tries < 6; ++tries) {
            bool clash = false;
            for (const ImVec4& o : placed)
                if (lx < o.z && lx + ls.x > o.x && ly < o.w && ly + ls.y > o.y) clash = true;
            if (!clash) break;
            ly += ls.y;
        }
        placed.push_back(ImVec4(lx, ly, lx + ls.x, ly + ls.y));
        dl->AddText(ImVec2(lx, ly), q.color, q.label.c_str());
    }
    dl->PopClipRect();
    if (hov >= 0) {
        const ScatterPoint& q = points[size_t(hov)];
        ImGui::SetTooltip("%s\n%s: %s\n%s: %s", q.label.c_str(), xlabel, fmt_value(q.x).c_str(),
                          ylabel, fmt_value(q.y).c_str());
    }
    ImGui::PopID();
    return hov;
}

}  // namespace kvs::view
