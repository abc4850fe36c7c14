// Closed loop vs replay: the open results files' runs grouped by (policy spec, mode), replay's
// metrics (open loop: kvscope replay / sweep) beside the closed loop's (kvscope eval -o, the runs
// with closed_loop_json) for the same spec, and a scatter of replay's mean output error against
// the closed loop's KL (or 1 - accuracy for passkey / needle) per matched spec.
#include <imgui.h>

#include <algorithm>
#include <cmath>

#include "app.h"
#include "viewdata/closed_loop.h"
#include "widgets.h"

namespace kvs::view {

namespace {

const ImVec4 kReplayCol(0.34f, 0.71f, 0.91f, 1);  // sky blue (Okabe-Ito)
const ImVec4 kEvalCol(0.90f, 0.62f, 0.0f, 1);     // orange

std::string cell_text(const ClosedLoopColumn& c, double v) {
    if (!std::isfinite(v)) return "-";
    if (c.bytes) {
        char b[32];
        std::snprintf(b, sizeof b, "%.2f", v / double(1 << 20));
        return b;
    }
    return fmt_value(v);
}

}  // namespace

void draw_closed_loop(App& app) {
    const float fh = ImGui::GetFontSize();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const float top = ImGui::GetCursorScreenPos().y;
    const std::vector<ClosedLoopRow> rows = app.closed_loop_rows();
    const auto& cols = closed_loop_columns();
    int n_matched = 0, n_eval = 0, n_replay = 0;
    for (const auto& r : rows) {
        n_matched += r.matched();
        n_eval += !r.eval_runs.empty();
        n_replay += !r.replay_runs.empty();
    }
    ImGui::Text("%zu specs: %d replayed, %d in the closed loop, %d both", rows.size(), n_replay,
                n_eval, n_matched);
    ImGui::SameLine();
    ImGui::TextDisabled("(?)");
    if (ImGui::IsItemHovered())
        ImGui::SetTooltip(
            "One row per (policy spec, mode) over every open results file.\n"
            "replay (open loop): runs of kvscope replay / sweep; each layer replayed from the "
            "trace as if the layers below were exact.\n"
            "closed loop: runs of kvscope eval -o (their closed_loop_json): the model ran with "
            "the compressed cache.\n"
            "Several runs of one spec (other traces, texts or prefill lengths) are averaged; "
            "the runs column counts them.\nMiB: mean K+V bytes per step. Click a row: its first "
            "run becomes A.");
    if (n_matched == 0) {
        ImGui::PushStyleColor(ImGuiCol_Text, ImVec4(1.0f, 0.75f, 0.35f, 1));
        ImGui::TextWrapped(
            "%s",
            n_eval == 0
                ? "No closed-loop run is open: open the results of kvscope eval ... -o R.h5 "
                  "beside a replay's (kvscope-view replay.h5 eval.h5)."
            : n_replay == 0
                ? "No replay run is open: open the results of kvscope replay / sweep of the "
                  "same specs beside the closed loop's."
                : "Nothing matches: no spec (with its budget and mode) was both replayed and run "
                  "in the closed loop.");
        ImGui::PopStyleColor();
    }
    // The scatter's points; their rows get the point's colour as a swatch in the table.
    const ClosedLoopPoints pts = closed_loop_points(rows);
    std::vector<int> point_of(rows.size(), -1);
    for (size_t i = 0; i < pts.row.size(); ++i) point_of[size_t(pts.row[i])] = int(i);
    // The columns shown: those with a header and a value in some row.
    std::vector<size_t> shown;
    for (size_t k = 0; k < cols.size(); ++k) {
        if (!cols[k].header) continue;
        bool any = false;
        for (const auto& r : rows) any |= std::isfinite(r.values[k]);
        if (any) shown.push_back(k);
    }
    const int ncol = 2 + int(shown.size());
    if (!rows.empty()) {
        ImGui::TextColored(kReplayCol, "replay (open loop): kvscope replay / sweep");
        ImGui::SameLine(0, fh * 1.5f);
        ImGui::TextColored(kEvalCol, "closed loop: kvscope eval");
        ImGui::SameLine(0, fh * 1.5f);
        ImGui::TextDisabled("MiB: mean K+V bytes per step");
    }
    // The whole table when it fits in under half the panel, else a scrolling one.
    const float row_h = ImGui::GetTextLineHeight() + 2 * ImGui::GetStyle().CellPadding.y + 1;
    const float need = row_h * float(rows.size() + 1) + 2;
    const float max_h = std::max(row_h * 6, avail.y * 0.45f);
    ImGuiTableFlags tf =
        ImGuiTableFlags_Borders | ImGuiTableFlags_RowBg | ImGuiTableFlags_SizingFixedFit;
    if (need > max_h) tf |= ImGuiTableFlags_ScrollY;
    if (!rows.empty() &&
        ImGui::BeginTable("closed_loop", ncol, tf, ImVec2(avail.x, need > max_h ? max_h : 0))) {
        ImGui::TableSetupScrollFreeze(1, 1);
        ImGui::TableSetupColumn("spec", ImGuiTableColumnFlags_WidthFixed, fh * 11);
        ImGui::TableSetupColumn("runs");
        for (size_t k : shown) ImGui::TableSetupColumn(cols[k].header);
        ImGui::TableNextRow(ImGuiTableRowFlags_Headers);
        for (int c = 0; c < ncol; ++c) {
            ImGui::TableSetColumnIndex(c);
            const char* name = c == 0   ? "spec"
                               : c == 1 ? "runs"
                                        : cols[shown[size_t(c - 2)]].header;
            if (c >= 2) {
                const ClosedLoopColumn& col = cols[shown[size_t(c - 2)]];
                ImGui::PushStyleColor(ImGuiCol_Text, col.replay ? kReplayCol : kEvalCol);
                ImGui::TableHeader(name);
                ImGui::PopStyleColor();
                if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", col.tooltip);
            } else {
                ImGui::TableHeader(name);
                if (c == 1 && ImGui::IsItemHovered())
                    ImGui::SetTooltip("replay runs / closed-loop runs of this spec");
            }
        }
        for (size_t i = 0; i < rows.size(); ++i) {
            const ClosedLoopRow& r = rows[i];
            ImGui::TableNextRow();
            ImGui::TableSetColumnIndex(0);
            ImGui::PushID(int(i));
            {
                // The swatch (the point's colour in the scatter), or a gap of its width.
                const ImVec2 q = ImGui::GetCursorScreenPos();
                const float sw = fh * 0.6f, y = q.y + (ImGui::GetTextLineHeight() - sw) / 2;
                if (point_of[i] >= 0)
                    ImGui::GetWindowDrawList()->AddRectFilled(
                        ImVec2(q.x, y), ImVec2(q.x + sw, y + sw), run_color(point_of[i]));
                ImGui::SetCursorScreenPos(ImVec2(q.x + sw + 4, q.y));
            }
            const std::string lab = fit_text(r.label, fh * 10.4f - 8);
            if (ImGui::Selectable(lab.c_str(), false, ImGuiSelectableFlags_SpanAllColumns)) {
                const std::vector<int>& src = r.replay_runs.empty() ? r.eval_runs : r.replay_runs;
                if (!src.empty()) app.run_a = src.front();  // rows index app.runs
            }
            if (ImGui::IsItemHovered()) {
                std::string pl;
                for (int64_t v : r.prefill_lens) pl += (pl.empty() ? "" : ", ") + std::to_string(v);
                ImGui::SetTooltip("%s\nmode %s%s%s%s%s", r.spec.c_str(), r.mode.c_str(),
                                  pl.empty() ? "" : ", prefill ", pl.c_str(),
                                  r.task.empty() ? "" : "\nclosed-loop task: ", r.task.c_str());
            }
            ImGui::PopID();
            ImGui::TableSetColumnIndex(1);
            ImGui::Text("%zu / %zu", r.replay_runs.size(), r.eval_runs.size());
            for (size_t c = 0; c < shown.size(); ++c) {
                ImGui::TableSetColumnIndex(int(c) + 2);
                const double v = r.values[shown[c]];
                const std::string t = cell_text(cols[shown[c]], v);
                if (std::isfinite(v))
                    ImGui::TextUnformatted(t.c_str());
                else
                    ImGui::TextDisabled("%s", t.c_str());
            }
        }
        ImGui::EndTable();
    }
    // The scatter: replay's output error against the closed loop's KL, one point per matched
    // spec (colours in the table's order of matched specs).
    ImGui::Checkbox("log x", &app.closed_loop_log_x);
    ImGui::SameLine();
    ImGui::Checkbox("log y", &app.closed_loop_log_y);
    ImGui::SameLine();
    const double rho = spearman(pts.x, pts.y);
    if (std::isfinite(rho))
        ImGui::Text("Spearman rank correlation %.3f over %zu specs", rho, pts.x.size());
    else
        ImGui::TextDisabled("Spearman: needs 2 or more matched specs with different values");
    std::vector<ScatterPoint> sp;
    for (size_t i = 0; i < pts.x.size(); ++i) {
        ScatterPoint q;
        q.x = pts.x[i];
        q.y = pts.y[i];
        q.label = rows[size_t(pts.row[i])].label;
        q.color = run_color(int(i));
        sp.push_back(std::move(q));
    }
    const bool kl = pts.y_key != "1-accuracy";
    const float used = ImGui::GetCursorScreenPos().y - top;
    const ImVec2 size(avail.x, std::max(fh * 12, avail.y - used - 4));
    scatter_plot("cl_scatter", size, sp,
                 kl ? "replay's output error vs the closed loop's KL, per policy spec"
                    : "replay's output error vs the closed loop's error rate, per policy spec",
                 "replay: mean relative output error (open loop)",
                 kl ? "closed loop: KL mean (nats)" : "closed loop: 1 - accuracy",
                 app.closed_loop_log_x, app.closed_loop_log_y,
                 "no spec both replayed and run in the closed loop: nothing to plot");
}

}  // namespace kvs::view
