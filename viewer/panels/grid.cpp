// Layer x head grid: per unit (layer, KV head) budget, held tokens, recall, output error or
// bytes at the selected step for results runs (PyramidKV-style budgets show here); for a trace
// alone, the attention entropy of each unit and the attention it gives the answer's tokens.
#include <imgui.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "app.h"
#include "viewdata/attention.h"
#include "widgets.h"

namespace kvs::view {

namespace {

// Draws a [n_layer x n_head] grid of values (rows = layers, top = first) with a colour bar.
void grid_plot(const char* title, ImVec2 size, const std::vector<int>& layer_ids, int n_head,
               const std::function<float(int, int)>& value, ColorMap cm, ColorScale cs,
               const char* legend) {
    const float fh = ImGui::GetFontSize();
    const ImVec2 p = ImGui::GetCursorScreenPos();
    ImGui::Dummy(size);
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const ImU32 text = ImGui::GetColorU32(ImGuiCol_Text);
    const int L = int(layer_ids.size());
    const float left = fh * 4.0f, top = fh * 3.2f, bottom = fh * 1.5f, right = fh * 7;
    const float cw = std::min(fh * 6, (size.x - left - right) / float(std::max(1, n_head)));
    const float ch = std::min(fh * 2, (size.y - top - bottom) / float(std::max(1, L)));
    const ImVec2 a(p.x + left, p.y + top), b(a.x + cw * n_head, a.y + ch * L);
    dl->AddText(ImVec2(p.x, p.y), text, title);
    const ImVec2 hm = ImGui::GetIO().MousePos;
    int hl = -1, hh = -1;
    for (int l = 0; l < L; ++l)
        for (int h = 0; h < n_head; ++h) {
            const float v = value(l, h);
            const ImVec2 c0(a.x + h * cw, a.y + l * ch), c1(c0.x + cw - 1, c0.y + ch - 1);
            ImU32 col = IM_COL32(45, 45, 52, 255);
            ImU32 tc = text;
            if (std::isfinite(v)) {
                const Rgb8 c = colormap_at(cm, cs.normalize(v));
                col = IM_COL32(c.r, c.g, c.b, 255);
                tc = 0.2126f * c.r + 0.7152f * c.g + 0.0722f * c.b > 140
                         ? IM_COL32(0, 0, 0, 255)
                         : IM_COL32(255, 255, 255, 255);
            }
            dl->AddRectFilled(c0, c1, col);
            if (ch >= fh + 2 && cw >= fh * 3) {
                const std::string s = fmt_value(v);
                const ImVec2 ts = ImGui::CalcTextSize(s.c_str());
                dl->AddText(ImVec2((c0.x + c1.x - ts.x) / 2, (c0.y + c1.y - ts.y) / 2), tc,
                            s.c_str());
            }
            if (hm.x >= c0.x && hm.x < c1.x && hm.y >= c0.y && hm.y < c1.y) {
                hl = l;
                hh = h;
            }
        }
    // Axes.
    const int lstep = std::max(1, int(std::ceil((fh + 2) / ch)));
    for (int l = 0; l < L; l += lstep) {
        const std::string s = std::to_string(layer_ids[size_t(l)]);
        const ImVec2 ts = ImGui::CalcTextSize(s.c_str());
        dl->AddText(ImVec2(a.x - ts.x - 6, a.y + l * ch + (ch - ts.y) / 2), text, s.c_str());
    }
    for (int h = 0; h < n_head; ++h) {
        const std::string s = std::to_string(h);
        const ImVec2 ts = ImGui::CalcTextSize(s.c_str());
        dl->AddText(ImVec2(a.x + h * cw + (cw - ts.x) / 2, a.y - ts.y - 2), text, s.c_str());
    }
    const char* xl = "KV head";
    dl->AddText(ImVec2((a.x + b.x - ImGui::CalcTextSize(xl).x) / 2, a.y - 2.2f * fh), text, xl);
    draw_text_vertical(dl, ImVec2(p.x + fh * 0.7f, (a.y + b.y) / 2), text, "layer");
    draw_colorbar(dl, ImVec2(b.x + fh * 1.2f, a.y + fh * 0.2f),
                  ImVec2(b.x + fh * 2.4f, std::max(b.y, a.y + fh * 8)), cm, cs, legend);
    if (hl >= 0 && ImGui::IsWindowHovered()) {
        ImGui::BeginTooltip();
        ImGui::Text("layer %d, KV head %d: %s = %s", layer_ids[size_t(hl)], hh, legend,
                    fmt_value(value(hl, hh)).c_str());
        ImGui::EndTooltip();
    }
}

}  // namespace

void draw_grid(App& app) {
    static int metric = int(Metric::Recall);
    static int trace_metric = 0;
    const float fh = ImGui::GetFontSize();
    const int64_t step = app.cur_step();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const RunData* a = app.run(app.run_a);
    const RunData* b = app.run_b != app.run_a ? app.run(app.run_b) : nullptr;
    if (a) {
        ImGui::SetNextItemWidth(fh * 12);
        const char* names[kNumMetrics];
        for (int i = 0; i < kNumMetrics; ++i) names[i] = metric_name(Metric(i));
        ImGui::Combo("metric", &metric, names, kNumMetrics);
        ImGui::SameLine();
        ImGui::Text("   at step %lld", (long long)step);
        const Metric m = Metric(metric);
        std::vector<const RunData*> show = {a};
        if (b) show.push_back(b);
        // One colour scale for all shown runs, over every step (so scrubbing keeps it).
        Range rg;
        for (const RunData* r : show)
            for (int64_t s = 0; s < r->S; ++s)
                for (int l = 0; l < int(r->L); ++l)
                    for (int h = 0; h < int(r->H); ++h) {
                        const float v = unit_metric(*r, m, s, l, h);
                        if (std::isfinite(v)) {
                            rg.lo = std::min(rg.lo, v);
                            rg.hi = std::max(rg.hi, v);
                        }
                    }
        ColorScale cs{rg.valid() ? rg.lo : 0, rg.valid() ? rg.hi : 1, false};
        if (m == Metric::Recall || m == Metric::OutCos)
            cs = {std::min(cs.lo, 0.0f) < 0 ? cs.lo : std::min(cs.lo, 1.0f), 1, false};
        if (m == Metric::OutErr) cs.lo = 0;
        const float w = avail.x / float(show.size());
        for (size_t i = 0; i < show.size(); ++i) {
            const RunData* r = show[i];
            int s = r->step_index(step);
            if (s < 0) {
                auto it = std::upper_bound(r->steps.begin(), r->steps.end(), int32_t(step));
                s = int(it - r->steps.begin()) - 1;
            }
            if (i) ImGui::SameLine();
            ImGui::BeginGroup();
            const std::string title =
                std::string(i == 0 ? "A: " : "B: ") + app.run_label(i == 0 ? app.run_a : app.run_b);
            if (s < 0) {
                ImGui::Text("%s: no step at or before %lld", title.c_str(), (long long)step);
            } else {
                std::vector<int> ids(r->layers.begin(), r->layers.end());
                grid_plot(
                    title.c_str(), ImVec2(w - 8, avail.y - fh * 3), ids, int(r->H),
                    [&](int l, int h) { return unit_metric(*r, m, s, l, h); }, app.cmap, cs,
                    metric_name(m));
            }
            ImGui::EndGroup();
        }
        return;
    }
    if (!app.trace) return;
    const char* tm[] = {"attention entropy (nats)", "attention on the answer",
                        "attention on token 0"};
    const bool has_answer = !app.trace->info.task.answer_positions.empty();
    ImGui::SetNextItemWidth(fh * 14);
    ImGui::Combo("metric", &trace_metric, tm, 3);
    if (trace_metric == 1 && !has_answer) trace_metric = 0;
    ImGui::SameLine();
    ImGui::Text("   query at step %lld (trace only: open a results file for budgets and recall)",
                (long long)step);
    const std::vector<float>* att = app.step_attention();
    if (!att || att->empty()) {
        ImGui::Text("computing attention at step %lld ...", (long long)step);
        return;
    }
    const auto& I = app.trace->info;
    const int64_t T = I.n_tokens;
    const int HK = I.n_head_kv;
    auto value = [&](int l, int h) -> float {
        const float* p = att->data() + (size_t(l) * size_t(HK) + size_t(h)) * size_t(T);
        if (trace_metric == 0) return float(row_entropy(p, T));
        if (trace_metric == 2) return p[0];
        double s = 0;
        for (int32_t j : I.task.answer_positions)
            if (j < T && std::isfinite(p[j])) s += p[j];
        return float(s);
    };
    Range rg;
    for (int l = 0; l < int(I.layers.size()); ++l)
        for (int h = 0; h < HK; ++h) {
            const float v = value(l, h);
            if (std::isfinite(v)) {
                rg.lo = std::min(rg.lo, v);
                rg.hi = std::max(rg.hi, v);
            }
        }
    ColorScale cs{rg.valid() ? std::min(rg.lo, 0.0f) : 0, rg.valid() ? rg.hi : 1, false};
    grid_plot(tm[trace_metric], ImVec2(avail.x, avail.y - fh * 3), I.layers, HK, value, app.cmap,
              cs, trace_metric == 0 ? "entropy" : "attention");
}

}  // namespace kvs::view
