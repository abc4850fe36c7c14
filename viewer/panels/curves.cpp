// Curves over time: cache bytes, compression ratio, recall and output error per step for the
// plotted runs (A, B and those ticked 'plot' in the run list; per layer or aggregated), one
// legend above the four plots; for a trace alone, each token's log-probability.
#include <imgui.h>

#include <cmath>

#include "app.h"
#include "viewdata/series.h"
#include "widgets.h"

namespace kvs::view {

void draw_curves(App& app) {
    const float fh = ImGui::GetFontSize();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const float top = ImGui::GetCursorScreenPos().y;
    const double cursor = double(app.cur_step());
    if (app.runs.empty()) {
        if (!app.trace) return;
        ImGui::TextDisabled(
            "trace only: open a results file (or run a policy) for cache bytes, "
            "compression ratio, recall and output error");
        Series s;
        s.name = "log p(next token)";
        for (size_t t = 0; t + 1 < app.trace->logprob.size(); ++t) {
            s.x.push_back(double(t));
            s.y.push_back(app.trace->logprob[t]);
        }
        const double c = line_plot("lp", ImVec2(avail.x, avail.y - fh * 2), {s},
                                   "log-probability of the next token", "token index",
                                   "log p (nats)", false, cursor);
        if (std::isfinite(c)) app.step = int64_t(c);
        return;
    }
    const std::vector<int> shown = app.plotted_runs();
    ImGui::Text("%s; %zu of %zu runs (tick 'plot' in the run list); click a plot to select a step",
                app.layer < 0 ? "all layers (bytes summed, the rest averaged over units)"
                              : ("layer " + std::to_string(app.layer)).c_str(),
                shown.size(), app.runs.size());
    same_line_if_fits(ImGui::CalcTextSize("log error axis").x + fh * 2);
    ImGui::Checkbox("log error axis", &app.err_log);
    if (ImGui::IsItemHovered())
        ImGui::SetTooltip(
            "output error on a log axis: spikes of one run no longer flatten the others");
    // One legend for the four plots, above them (same colours in every plot and the run list).
    std::vector<Series> legend;
    for (int i : shown) {
        Series s;
        s.name = (i == app.run_a ? "A: " : i == app.run_b ? "B: " : "") + app.runs[size_t(i)].label;
        s.color = app.plot_color(i);
        s.dashed = app.plot_dashed(i);
        legend.push_back(std::move(s));
    }
    int hov = -1;
    legend_row(legend, avail.x, &hov);
    if (hov >= 0)
        ImGui::SetTooltip("%s", app.runs[size_t(shown[size_t(hov)])].run().info.spec.c_str());
    const float used = ImGui::GetCursorScreenPos().y - top;
    const Curve kinds[4] = {Curve::CacheBytes, Curve::Ratio, Curve::Recall, Curve::OutErr};
    const char* ylabels[4] = {"K+V bytes", "full / compressed", "attention recall",
                              "relative L2 error"};
    const ImVec2 cell((avail.x - 8) / 2, std::max(fh * 8, (avail.y - used - fh * 0.5f) / 2));
    for (int k = 0; k < 4; ++k) {
        std::vector<Series> ss;
        for (size_t n = 0; n < shown.size(); ++n) {
            // Cached per (run, curve, layer) with its per-column reduction (per plot width and
            // x range): a frame only draws.
            const RunData& r = app.runs[size_t(shown[n])].run();
            CurveCache::Entry& e = app.curve_cache.get(r, kinds[k], app.layer);
            Series s = legend[n];
            s.xy = &e.xy;
            s.dec = &e.dec;
            ss.push_back(std::move(s));
        }
        if (k % 2) ImGui::SameLine();
        const bool log_y = kinds[k] == Curve::OutErr && app.err_log;
        const double c =
            line_plot(curve_name(kinds[k]), cell, ss,
                      log_y ? "output error (log axis)" : curve_name(kinds[k]), "decode step",
                      ylabels[k], log_y, cursor, kinds[k] == Curve::CacheBytes, false);
        if (std::isfinite(c)) app.step = int64_t(c);
    }
}

}  // namespace kvs::view
