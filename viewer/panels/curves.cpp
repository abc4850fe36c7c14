// Curves over time: cache bytes, compression ratio, recall and output error per step for every
// open run (per layer or aggregated); for a trace alone, each token's log-probability.
#include <imgui.h>

#include <cmath>

#include "app.h"
#include "widgets.h"

namespace kvs::view {

void draw_curves(App& app) {
    const float fh = ImGui::GetFontSize();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
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
    ImGui::Text("%s; one colour per run (as in the run list); click a plot to select a step",
                app.layer < 0 ? "all layers (bytes summed, the rest averaged over units)"
                              : ("layer " + std::to_string(app.layer)).c_str());
    const Curve kinds[4] = {Curve::CacheBytes, Curve::Ratio, Curve::Recall, Curve::OutErr};
    const char* ylabels[4] = {"K+V bytes", "full / compressed", "attention recall",
                              "relative L2 error"};
    const ImVec2 cell((avail.x - 8) / 2, (avail.y - fh * 2) / 2);
    for (int k = 0; k < 4; ++k) {
        std::vector<Series> ss;
        for (size_t i = 0; i < app.runs.size(); ++i) {
            const RunData& r = app.runs[i].run();
            Series s;
            s.name = (int(i) == app.run_a   ? "A "
                      : int(i) == app.run_b ? "B "
                                            : "") +
                     app.runs[i].label;
            s.color = run_color(int(i));
            const std::vector<double> y = curve(r, kinds[k], app.layer);
            for (int64_t t = 0; t < r.S; ++t) {
                s.x.push_back(r.steps[size_t(t)]);
                s.y.push_back(y[size_t(t)]);
            }
            ss.push_back(std::move(s));
        }
        if (k % 2) ImGui::SameLine();
        const double c =
            line_plot(curve_name(kinds[k]), cell, ss, curve_name(kinds[k]), "decode step",
                      ylabels[k], false, cursor, kinds[k] == Curve::CacheBytes);
        if (std::isfinite(c)) app.step = int64_t(c);
    }
}

}  // namespace kvs::view
