// Policy panel (in the sidebar): the open runs (A, and B to compare), whether each kept the
// answer's tokens, and running another policy on the open trace in the background through the
// replay backend (in-process by default: the layer on screen first, then all), with progress and
// cancel.
#include <imgui.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "app.h"
#include "widgets.h"

namespace kvs::view {

void draw_policy_panel(App& app) {
    const bool has_answer = app.trace && !app.trace->info.task.answer_positions.empty();
    if (app.runs.empty()) ImGui::TextDisabled("no results open");
    if (app.runs.size() > 1) {
        ImGui::TextDisabled("plot in curves:");
        ImGui::SameLine();
        if (ImGui::SmallButton("all"))
            for (RunEntry& e : app.runs) e.plot = true;
        ImGui::SameLine();
        if (ImGui::SmallButton("none (A, B)"))
            for (RunEntry& e : app.runs) e.plot = false;
    }
    for (size_t i = 0; i < app.runs.size(); ++i) {
        const RunData& r = app.runs[i].run();
        ImGui::PushID(int(i));
        const ImVec2 p = ImGui::GetCursorScreenPos();
        const float fh = ImGui::GetFontSize();
        // The run's colour in the curves view; grey when it is not plotted.
        const bool plotted = app.plotted(int(i));
        ImGui::GetWindowDrawList()->AddRectFilled(
            ImVec2(p.x, p.y + 3), ImVec2(p.x + fh * 0.7f, p.y + fh),
            plotted ? app.plot_color(int(i)) : IM_COL32(70, 70, 78, 255));
        if (plotted && app.plot_dashed(int(i)))  // dashed in the plots: a notch in the swatch
            ImGui::GetWindowDrawList()->AddRectFilled(ImVec2(p.x, p.y + fh * 0.5f),
                                                      ImVec2(p.x + fh * 0.7f, p.y + fh * 0.65f),
                                                      IM_COL32(15, 15, 18, 255));
        ImGui::Dummy(ImVec2(fh * 0.8f, fh));
        ImGui::SameLine();
        if (ImGui::RadioButton("A", app.run_a == int(i))) app.run_a = int(i);
        ImGui::SameLine();
        bool b = app.run_b == int(i);
        if (ImGui::Checkbox("B", &b)) app.run_b = b ? int(i) : -1;
        if (ImGui::IsItemHovered()) ImGui::SetTooltip("compare: A - B heatmaps, both in the grid");
        ImGui::SameLine();
        const bool ab = int(i) == app.run_a || int(i) == app.run_b;
        bool pl = plotted;
        if (ab) ImGui::BeginDisabled();
        if (ImGui::Checkbox("plot", &pl)) app.runs[i].plot = pl;
        if (ab) ImGui::EndDisabled();
        if (ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled))
            ImGui::SetTooltip(ab ? "A and B are always plotted in the curves view"
                                 : "draw this run in the curves view");
        ImGui::SameLine();
        // Cut to the sidebar's width ("..."): the tooltip has the whole label and spec.
        const std::string shown =
            fit_text(app.runs[i].label, std::max(fh * 2, ImGui::GetContentRegionAvail().x));
        ImGui::TextUnformatted(shown.c_str());
        if (ImGui::IsItemHovered()) {
            ImGui::BeginTooltip();
            ImGui::Text("%s", app.runs[i].label.c_str());
            ImGui::Text("spec %s", r.info.spec.c_str());
            ImGui::Text("file %s (%s)", app.runs[i].file->path.c_str(), r.info.group.c_str());
            ImGui::Text("mode %s, %lld steps, %lld layers, %lld KV heads, %lld checkpoints",
                        r.info.mode.c_str(), (long long)r.S, (long long)r.L, (long long)r.H,
                        (long long)r.C);
            for (const auto& [k, v] : r.info.summary)
                ImGui::Text("%s = %s", k.c_str(), fmt_value(v).c_str());
            ImGui::EndTooltip();
        }
        auto sm = [&](const char* k) {
            auto it = r.info.summary.find(k);
            return it == r.info.summary.end() ? std::string("-") : fmt_value(it->second);
        };
        const auto& cl = r.info.closed_loop;
        auto cm = [&](const char* k) {
            auto it = cl.find(k);
            return it == cl.end() ? std::string("-") : fmt_value(it->second);
        };
        if (r.info.is_closed_loop() && cl.count("kl_mean")) {
            // A kvscope eval run: its closed-loop metrics (it has no replay metrics).
            ImGui::TextDisabled("   closed loop: KL %s, d ppl %s, %sx", cm("kl_mean").c_str(),
                                cm("delta_ppl").c_str(), sm("ratio_mean").c_str());
            if (ImGui::IsItemHovered())
                ImGui::SetTooltip(
                    "kvscope eval (closed loop): mean KL(full || compressed) of the next-token "
                    "distribution, perplexity minus the full model's, compression ratio of its "
                    "last window (full / compressed bytes); the Closed loop view has the rest");
        } else if (r.info.is_closed_loop()) {
            ImGui::TextDisabled("   closed loop: accuracy %s, %sx", cm("accuracy").c_str(),
                                sm("ratio_mean").c_str());
            if (ImGui::IsItemHovered())
                ImGui::SetTooltip(
                    "kvscope eval (closed loop): exact-match accuracy over the grid, compression "
                    "ratio of its last item; the Closed loop view has the rest");
        } else {
            ImGui::TextDisabled("   recall %s, err %s, %sx", sm("recall_mean").c_str(),
                                sm("err_mean").c_str(), sm("ratio_mean").c_str());
            if (ImGui::IsItemHovered())
                ImGui::SetTooltip(
                    "means over every step and unit: attention recall, relative output error, "
                    "compression ratio (full / compressed bytes)");
        }
        if (has_answer) {
            const auto& pos = app.trace->info.task.answer_positions;
            const bool kept = answer_all_kept(r, pos, r.T - 1);
            const auto frac = answer_kept(r, pos, r.T - 1);
            float mn = 1;
            for (float f : frac) mn = std::min(mn, std::isnan(f) ? 0.0f : f);
            // "answer: kept" / "answer: lost" after the metrics when it fits, else below them.
            char note[64];
            if (kept)
                std::snprintf(note, sizeof note, "answer: kept");
            else
                std::snprintf(note, sizeof note, "answer: lost");
            same_line_if_fits(ImGui::CalcTextSize(note).x + fh);
            ImGui::TextColored(kept ? ImVec4(0.3f, 0.85f, 0.5f, 1) : ImVec4(1, 0.45f, 0.35f, 1),
                               "%s%s", ImGui::GetCursorPosX() < fh ? "   " : " ", note);
            if (ImGui::IsItemHovered())
                ImGui::SetTooltip(kept ? "every answer token is held in every unit at the last step"
                                       : "at the last step, %.0f%% of the units (layer, KV head) "
                                         "miss at least one answer token",
                                  100 * (1 - mn));
        }
        ImGui::PopID();
    }
    ImGui::Separator();
    if (app.open_policy_panel) {  // --run-policy: show the job and its outcome
        ImGui::SetNextItemOpen(true);
        app.open_policy_panel = false;
    }
    if (!ImGui::TreeNode("run a policy on the open trace")) return;
    struct Pop {
        ~Pop() { ImGui::TreePop(); }
    } pop;
    ImGui::PushStyleColor(ImGuiCol_Text, ImGui::GetStyleColorVec4(ImGuiCol_TextDisabled));
    ImGui::TextWrapped("backend: %s", app.backend ? app.backend->describe().c_str() : "-");
    ImGui::PopStyleColor();
    if (!app.trace) {
        ImGui::TextDisabled("(open a trace first)");
        return;
    }
    if (app.policies.empty() && !app.policies_job) {
        if (!app.policies_error.empty()) {
            ImGui::TextWrapped("cannot list policies: %s", app.policies_error.c_str());
            if (ImGui::Button("Retry")) {
                app.policies_error.clear();
                app.load_policies();
            }
        } else {
            app.load_policies();
        }
        return;
    }
    if (app.policies_job) {
        ImGui::TextDisabled("listing policies ...");
        return;
    }
    static int sel = 0;
    static std::map<std::string, std::string> values;  // "policy.param" -> value
    sel = std::clamp(sel, 0, int(app.policies.size()) - 1);
    const PolicyDesc& pd = app.policies[size_t(sel)];
    if (ImGui::BeginCombo("policy", pd.name.c_str())) {
        for (size_t i = 0; i < app.policies.size(); ++i)
            if (ImGui::Selectable(app.policies[i].name.c_str(), int(i) == sel)) sel = int(i);
        ImGui::EndCombo();
    }
    if (!pd.summary.empty()) ImGui::TextWrapped("%s", pd.summary.c_str());
    std::vector<std::pair<std::string, std::string>> params;
    for (const PolicyParam& pp : pd.params) {
        const std::string key = pd.name + "." + pp.name;
        if (!values.count(key)) values[key] = pp.default_value;
        char buf[128];
        std::snprintf(buf, sizeof buf, "%s", values[key].c_str());
        if (ImGui::InputText(pp.name.c_str(), buf, sizeof buf)) values[key] = buf;
        if (ImGui::IsItemHovered() && !pp.help.empty()) ImGui::SetTooltip("%s", pp.help.c_str());
        params.emplace_back(pp.name, values[key]);
    }
    const std::string spec = make_spec(pd.name, params);
    ImGui::TextWrapped("spec: %s", spec.c_str());
    if (app.replay_job && !app.replay_job->done()) {
        ImGui::TextWrapped("running: %s", app.replay_spec.c_str());
        // kvscope replay --quiet prints no progress: a sliding bar and the elapsed seconds
        // (a real fraction if a "progress a/b" line ever arrives).
        const float f = app.replay_job->progress();
        const double sec = app.replay_job->seconds();
        char ov[64];
        if (f >= 0 && f < 1)
            std::snprintf(ov, sizeof ov, "%.0f%%, %.0f s", 100.0 * double(f), sec);
        else
            std::snprintf(ov, sizeof ov, "%.0f s elapsed", sec);
        if (f > 0 && f < 1)
            ImGui::ProgressBar(f, ImVec2(-70, 0), ov);
        else
            busy_bar(sec, ImVec2(-70, 0), ov);
        ImGui::SameLine();
        if (ImGui::Button("Cancel")) app.replay_job->cancel();
    } else if (ImGui::Button("Run")) {
        app.start_replay(spec);
    }
    if (!app.replay_result.empty() && !(app.replay_job && !app.replay_job->done())) {
        ImGui::TextDisabled("last: %s", app.replay_spec.c_str());
        if (app.replay_failed) ImGui::TextColored(ImVec4(1, 0.45f, 0.35f, 1), "failed:");
        ImGui::PushStyleColor(ImGuiCol_Text, app.replay_failed ? ImVec4(1, 0.6f, 0.5f, 1)
                                                               : ImVec4(0.55f, 0.8f, 0.6f, 1));
        ImGui::TextWrapped("%s", app.replay_result.c_str());
        ImGui::PopStyleColor();
    }
}

}  // namespace kvs::view
