// Token strip: the prompt and generated text as tokens, coloured by the selected quantity at the
// selected step; evicted tokens dimmed and struck out, the answer's tokens outlined.
#include <imgui.h>

#include <algorithm>
#include <cmath>

#include "app.h"
#include "widgets.h"

namespace kvs::view {

void draw_tokens(App& app) {
    const Heat* h = app.heat();
    const float fh = ImGui::GetFontSize();
    if (!h) {
        ImGui::TextWrapped("computing %s ...", quantity_name(app.quantity));
        return;
    }
    const int64_t step = app.cur_step();
    auto it = std::lower_bound(h->row_steps.begin(), h->row_steps.end(), int32_t(step));
    const bool have_row = it != h->row_steps.end() && *it == step;
    const int64_t r = it - h->row_steps.begin();
    const ColorScale cs = app.color_scale(*h);
    const ColorMap cm = app.color_map(*h);
    const RunData* run = app.run(app.run_a);
    const std::vector<Unit> units =
        run ? select_units(*run, app.layer, app.kv_head) : std::vector<Unit>{};
    const int64_t T = app.trace ? app.trace->n_tokens() : h->cols();
    const std::vector<float> row_v = have_row && r < h->rows() ? h->row(r) : std::vector<float>{};
    // Merged entries (run A merges): per token, the units where it is folded into an entry, and
    // where its own entry stands for several tokens (with one unit selected: how many).
    const bool merges = run && run->has_merges && !units.empty();
    std::vector<int32_t> n_folded, n_merged;
    if (merges) {
        n_folded.assign(size_t(run->T), 0);
        n_merged.assign(size_t(run->T), 0);
        for (const Unit& u : units) {
            const std::vector<int32_t> sz = run->entry_sizes(u.l, u.h, step);
            for (int64_t j = 0; j < run->T; ++j) {
                n_folded[size_t(j)] += run->token_state(u.l, u.h, j, step) == TokenState::Folded;
                if (units.size() == 1)
                    n_merged[size_t(j)] = sz[size_t(j)] > 1 ? sz[size_t(j)] : 0;
                else
                    n_merged[size_t(j)] += sz[size_t(j)] > 1;
            }
        }
    }
    const ImU32 folded_col = IM_COL32(kFoldedRgb.r, kFoldedRgb.g, kFoldedRgb.b, 255);

    ImGui::Text("step %lld", (long long)step);
    if (app.trace && step < T) {
        ImGui::SameLine();
        ImGui::Text("(query token \"%s\")", app.token_text(step).c_str());
    }
    ImGui::SameLine();
    ImGui::TextDisabled(
        "  colour: %s at this step%s%s%s", quantity_name(app.quantity),
        h->diverging ? " (A - B)" : "", run ? "; dimmed + struck out: evicted by run A" : "",
        app.trace && app.trace->info.task.has_answer() ? "; red outline: the answer" : "");
    if (merges) {
        // Its own line: the line above is often full.
        ImGui::TextColored(
            ImVec4(kFoldedRgb.r / 255.0f, kFoldedRgb.g / 255.0f, kFoldedRgb.b / 255.0f, 1),
            "pink strike: folded into a merged entry; pink outline: a merged entry (hover it: "
            "the tokens it stands for)");
    }
    if (!have_row)
        ImGui::TextColored(ImVec4(1, 0.6f, 0.3f, 1),
                           "no data at this step (prefill mode runs start later)");

    const ImVec2 p = ImGui::GetCursorScreenPos();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const float right = fh * 6.5f;
    ImGui::BeginChild("strip", ImVec2(avail.x - right, avail.y), true);
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const float x_min = ImGui::GetCursorScreenPos().x, width = ImGui::GetContentRegionAvail().x;
    const float y_start = ImGui::GetCursorScreenPos().y;
    const float line_h = fh + 8, pad = 3;
    float x = 0, y = 0;
    const ImVec2 clip_a = ImGui::GetWindowPos();
    const float clip_y0 = clip_a.y, clip_y1 = clip_a.y + ImGui::GetWindowHeight();
    const ImVec2 mouse = ImGui::GetIO().MousePos;
    int64_t hover = -1;
    for (int64_t j = 0; j < T; ++j) {
        if (app.trace && j == app.trace->info.prompt_len && j > 0) {
            // Generated text starts on a new line.
            x = 0;
            y += line_h + 6;
            dl->AddText(ImVec2(x_min, y_start + y), IM_COL32(200, 200, 200, 255), "generated:");
            x = ImGui::CalcTextSize("generated: ").x;
        }
        std::string txt = app.trace ? app.token_text(j) : std::to_string(j);
        const bool newline =
            app.trace && app.trace->text[size_t(j)].find('\n') != std::string::npos;
        if (txt.empty()) txt = " ";
        const float w = ImGui::CalcTextSize(txt.c_str()).x + 2 * pad;
        if (x + w > width && x > 0) {
            x = 0;
            y += line_h;
        }
        const ImVec2 a(x_min + x, y_start + y), b(x_min + x + w, y_start + y + fh + 4);
        if (b.y >= clip_y0 && a.y <= clip_y1) {
            const float v = j < int64_t(row_v.size()) ? row_v[size_t(j)] : kNaN;
            const bool future = j > step;
            double held = 1;
            if (!units.empty() && j < run->T) {
                int n = 0;
                for (const Unit& u : units) n += run->held_at(u.l, u.h, j, step);
                held = double(n) / double(units.size());
            }
            ImU32 bg = IM_COL32(45, 45, 52, 255), fg = IM_COL32(150, 150, 150, 255);
            if (!future && std::isfinite(v)) {
                const Rgb8 c = colormap_at(cm, cs.normalize(v));
                bg = IM_COL32(c.r, c.g, c.b, 255);
                const float lum = 0.2126f * c.r + 0.7152f * c.g + 0.0722f * c.b;
                fg = lum > 140 ? IM_COL32(0, 0, 0, 255) : IM_COL32(255, 255, 255, 255);
            }
            if (!future && held < 1) {
                // Evicted (in every selected unit: dimmed; in some: dimmed less).
                const int alpha = held <= 0 ? 70 : 150;
                bg = (bg & 0x00FFFFFFu) | (ImU32(alpha) << 24);
                fg = (fg & 0x00FFFFFFu) | (ImU32(alpha + 60) << 24);
            }
            dl->AddRectFilled(a, b, bg, 2);
            dl->AddText(ImVec2(a.x + pad, a.y + 2), fg, txt.c_str());
            const bool folded = merges && j < run->T && n_folded[size_t(j)] > 0;
            if (!future && held < 1)
                dl->AddLine(ImVec2(a.x, (a.y + b.y) / 2), ImVec2(b.x, (a.y + b.y) / 2),
                            folded ? folded_col : IM_COL32(255, 255, 255, 200),
                            folded ? 2.5f : 1.5f);
            if (merges && j < run->T && n_merged[size_t(j)] > 0)
                dl->AddRect(ImVec2(a.x - 1, a.y - 1), ImVec2(b.x + 1, b.y + 1), folded_col, 2, 0,
                            2);
            if (app.trace && app.trace->is_answer(j))
                dl->AddRect(ImVec2(a.x - 1, a.y - 1), ImVec2(b.x + 1, b.y + 1),
                            IM_COL32(255, 50, 50, 255), 2, 0, 2.5f);
            if (j == step)
                dl->AddRect(ImVec2(a.x - 2, a.y - 2), ImVec2(b.x + 2, b.y + 2),
                            IM_COL32(255, 255, 255, 255), 2, 0, 2);
            if (ImGui::IsWindowHovered() && mouse.x >= a.x && mouse.x < b.x && mouse.y >= a.y &&
                mouse.y < b.y)
                hover = j;
        }
        x += w + 2;
        if (newline) {
            x = 0;
            y += line_h;
        }
    }
    ImGui::Dummy(ImVec2(width, y + line_h));
    if (hover >= 0) {
        ImGui::BeginTooltip();
        ImGui::Text("token %lld \"%s\"", (long long)hover, app.token_text(hover).c_str());
        const float v = hover < int64_t(row_v.size()) ? row_v[size_t(hover)] : kNaN;
        ImGui::Text("%s at step %lld: %s", quantity_name(app.quantity), (long long)step,
                    fmt_value(v).c_str());
        if (run && hover < run->T && !units.empty()) {
            int n = 0;
            for (const Unit& u : units) n += run->held_at(u.l, u.h, hover, step);
            ImGui::Text("held by %d of %zu units (run A)", n, units.size());
        }
        if (merges && hover < run->T) {
            const ImVec4 fc(kFoldedRgb.r / 255.0f, kFoldedRgb.g / 255.0f, kFoldedRgb.b / 255.0f, 1);
            if (units.size() == 1) {
                const Unit& u = units[0];
                const size_t i = run->lht(u.l, u.h, hover);
                if (n_folded[size_t(hover)] > 0 && step >= run->merged_at[i])
                    ImGui::TextColored(fc, "folded into entry at position %d at step %d",
                                       run->merged_into[i], run->merged_at[i]);
                else if (n_folded[size_t(hover)] > 0)  // folded twice: the file names the last
                    ImGui::TextColored(fc,
                                       "folded at step %d into an entry itself folded into entry "
                                       "at position %d at step %d",
                                       run->evicted_at[i], run->merged_into[i], run->merged_at[i]);
                const std::vector<int32_t> sf = run->stands_for(u.l, u.h, hover, step);
                if (sf.size() > 1) {
                    ImGui::TextColored(
                        fc,
                        "a merged entry: it stands for %zu tokens (position, text):", sf.size());
                    // One line per token, the first 40 (a centroid can hold hundreds).
                    const size_t shown = std::min<size_t>(sf.size(), 40);
                    for (size_t k = 0; k < shown; ++k)
                        ImGui::Text("  %d  \"%s\"%s", sf[k], app.token_text(sf[k]).c_str(),
                                    sf[k] == hover ? "  (its representative)" : "");
                    if (shown < sf.size()) ImGui::Text("  ... and %zu more", sf.size() - shown);
                }
            } else {
                ImGui::Text("folded into a merged entry in %d of %zu units",
                            n_folded[size_t(hover)], units.size());
                ImGui::Text("a merged entry in %d of %zu units%s", n_merged[size_t(hover)],
                            units.size(),
                            n_merged[size_t(hover)] > 0
                                ? " (select one layer and KV head to list its tokens)"
                                : "");
            }
        }
        ImGui::EndTooltip();
        if (ImGui::IsMouseClicked(ImGuiMouseButton_Left)) app.step = std::max<int64_t>(hover, 0);
    }
    ImGui::EndChild();
    ImDrawList* wdl = ImGui::GetWindowDrawList();
    std::string ctitle = quantity_name(app.quantity);
    if (h->diverging) ctitle += " A-B";
    draw_colorbar(wdl, ImVec2(p.x + avail.x - right + fh * 1.2f, p.y + fh * 1.5f),
                  ImVec2(p.x + avail.x - right + fh * 2.4f, p.y + std::min(avail.y - fh, fh * 20)),
                  cm, cs, ctitle.c_str());
}

}  // namespace kvs::view
