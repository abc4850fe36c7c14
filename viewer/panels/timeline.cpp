// Timeline panel: decode step (x) by token position (y), coloured by the selected quantity,
// drawn as one texture reduced to the panel's pixels. Zoom and pan like a profiler timeline.
#include <imgui.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "app.h"
#include "viewdata/view_cache.h"
#include "widgets.h"

namespace kvs::view {

namespace {

struct TexState {
    Texture tex;
    std::string key;
    std::vector<uint32_t> rgba;
    AxisRegion rx, ry;    // the region in the texture: wider than the view while panning
    double last[6] = {};  // the view and plot size of the last frame, to tell when it is at rest
    double reduce_ms = 0;
};

// The texture holds up to this many times the visible steps / tokens on each side, so that
// panning at a constant zoom only moves texture coordinates until the view leaves it.
constexpr double kMargin = 1.0;
constexpr int kMaxTexels = 8192;

}  // namespace

double timeline_reduce_ms = 0;  // this frame's texture update (0 when none), for --bench-pan

void draw_timeline(App& app) {
    static TexState st;
    const Heat* h = app.heat();
    const float fh = ImGui::GetFontSize();
    const float prog = app.heat_progress();
    if (!h) {
        if (prog > -2) {
            ImGui::Text("computing %s ...", quantity_name(app.quantity));
            ImGui::ProgressBar(prog < 0 ? 0.0f : prog, ImVec2(300, 0));
        } else {
            ImGui::TextWrapped("Nothing to show for '%s': %s", quantity_name(app.quantity),
                               quantity_needs_results(app.quantity)
                                   ? "open a results file (kvscope replay) or run a policy."
                                   : "open a trace.");
        }
        return;
    }
    const int64_t m_rows = h->rows(), m_cols = h->cols();
    if (!app.view_init || app.vx1 > double(m_rows) + 1e-9 || app.vy1 > double(m_cols) + 1e-9)
        app.reset_view();
    {
        std::string title = h->title;
        if (h->run_a >= 0) {
            title += "  [" + app.run_label(h->run_a);
            if (h->run_b >= 0) title += "  minus  " + app.run_label(h->run_b);
            title += "]";
        }
        ImGui::TextUnformatted(title.c_str());
        if (ImGui::IsItemHovered() && h->run_a >= 0)
            ImGui::SetTooltip(
                "A: %s%s%s", app.runs[size_t(h->run_a)].run().info.spec.c_str(),
                h->run_b >= 0 ? "\nB: " : "",
                h->run_b >= 0 ? app.runs[size_t(h->run_b)].run().info.spec.c_str() : "");
        if (!h->note.empty()) {
            // How exact it is: after the title when it fits, else wrapped on the next line.
            const std::string note = "(" + h->note + ")";
            same_line_if_fits(ImGui::CalcTextSize(note.c_str()).x + fh * 3);
            ImGui::PushStyleColor(ImGuiCol_Text, ImGui::GetStyleColorVec4(ImGuiCol_TextDisabled));
            ImGui::TextWrapped("%s", note.c_str());
            ImGui::PopStyleColor();
        }
    }
    if (prog > -2) {
        same_line_if_fits(160);
        ImGui::ProgressBar(prog < 0 ? 0.0f : prog, ImVec2(160, 0), "updating");
    }
    // The mouse help: a marker with a tooltip (it no longer competes with the note for the
    // title line).
    same_line_if_fits(fh * 3);
    ImGui::TextDisabled("(?)");
    if (ImGui::IsItemHovered())
        ImGui::SetTooltip(
            "wheel: zoom (shift: steps only, ctrl: tokens only)\ndrag: pan\nclick: select the "
            "step\ndouble-click: show everything\nhover: the exact value of a cell");

    const ImVec2 p = ImGui::GetCursorScreenPos();
    const ImVec2 avail = ImGui::GetContentRegionAvail();
    const float left = fh * 7.5f, bottom = fh * 3.6f, right = fh * 6.5f, top = fh * 1.8f;
    const ImVec2 a(p.x + left, p.y + top), b(p.x + avail.x - right, p.y + avail.y - bottom);
    if (b.x - a.x < 20 || b.y - a.y < 20) return;
    ImGui::SetCursorScreenPos(a);
    ImGui::InvisibleButton("heat", ImVec2(b.x - a.x, b.y - a.y));
    const bool hovered = ImGui::IsItemHovered();
    ImGuiIO& io = ImGui::GetIO();
    const double W = b.x - a.x, H = b.y - a.y;
    double &x0 = app.vx0, &x1 = app.vx1, &y0 = app.vy0, &y1 = app.vy1;
    const double rows = double(m_rows), cols = double(m_cols);
    auto clamp_view = [&](double& lo, double& hi, double len) {
        double w = std::clamp(hi - lo, std::min(4.0, len), len);
        lo = std::clamp(lo, 0.0, len - w);
        hi = lo + w;
    };
    // Zoom around the mouse, pan by dragging.
    if (hovered && io.MouseWheel != 0) {
        const double f = std::pow(0.85, double(io.MouseWheel));
        const double mx = x0 + (io.MousePos.x - a.x) / W * (x1 - x0);
        const double my = y0 + (io.MousePos.y - a.y) / H * (y1 - y0);
        if (!io.KeyCtrl) {
            x0 = mx - (mx - x0) * f;
            x1 = mx + (x1 - mx) * f;
        }
        if (!io.KeyShift) {
            y0 = my - (my - y0) * f;
            y1 = my + (y1 - my) * f;
        }
    }
    if (ImGui::IsItemActive() && ImGui::IsMouseDragging(ImGuiMouseButton_Left, 2)) {
        const double dx = io.MouseDelta.x / W * (x1 - x0), dy = io.MouseDelta.y / H * (y1 - y0);
        x0 -= dx;
        x1 -= dx;
        y0 -= dy;
        y1 -= dy;
    }
    clamp_view(x0, x1, rows);
    clamp_view(y0, y1, cols);
    if (hovered && ImGui::IsMouseDoubleClicked(ImGuiMouseButton_Left)) app.reset_view();
    const int64_t mouse_r =
        std::clamp<int64_t>(int64_t(x0 + (io.MousePos.x - a.x) / W * (x1 - x0)), 0, m_rows - 1);
    const int64_t mouse_c =
        std::clamp<int64_t>(int64_t(y0 + (io.MousePos.y - a.y) / H * (y1 - y0)), 0, m_cols - 1);
    if (hovered && ImGui::IsMouseReleased(ImGuiMouseButton_Left) &&
        ImGui::GetMouseDragDelta(ImGuiMouseButton_Left, 0).x == 0 &&
        ImGui::GetMouseDragDelta(ImGuiMouseButton_Left, 0).y == 0)
        app.step = h->row_steps[size_t(mouse_r)];

    // The texture: reduced to the pixels of the plot (framebuffer pixels when exporting).
    const float fbs = io.DisplayFramebufferScale.x;
    // Panning reduces a region wider than the view once and moves texture coordinates; at rest
    // the texture is the view alone, reduced as before (see viewdata/view_cache.h).
    const int px_x = int(W * fbs), px_y = int(H * fbs);
    const ColorScale cs = app.color_scale(*h);
    const ColorMap cm = app.color_map(*h);
    char key[512];
    // A tiled heatmap's texture is redrawn as its missing tiles arrive.
    std::snprintf(
        key, sizeof key, "%s|%p|%lld|%lld|%d|%d|%g|%g|%d|%lld", h->key.c_str(),
        static_cast<const void*>(h), (long long)m_rows, (long long)m_cols, int(app.reduce), int(cm),
        double(cs.lo), double(cs.hi), int(cs.log),
        (long long)(h->tiled->tiles_computed() + (h->folded ? h->folded->tiles_computed() : 0)));
    const double now[6] = {x0, x1, y0, y1, double(px_x), double(px_y)};
    const bool rest = std::equal(now, now + 6, st.last);
    // Panning (the same widths and plot size as the last frame) gets the wider region; a zoom
    // reduces the view alone, as before.
    auto same = [](double a, double b) { return std::fabs(a - b) <= 1e-9 * std::fabs(b); };
    const bool pan = !rest && same(x1 - x0, st.last[1] - st.last[0]) &&
                     same(y1 - y0, st.last[3] - st.last[2]) && now[4] == st.last[4] &&
                     now[5] == st.last[5];
    std::copy(now, now + 6, st.last);
    bool rebuild = st.key != key;
    if (rest)
        rebuild = rebuild || !axis_region_is_exact(st.rx, x0, x1, m_rows, px_x) ||
                  !axis_region_is_exact(st.ry, y0, y1, m_cols, px_y);
    else
        rebuild = rebuild || !axis_region_covers(st.rx, x0, x1, m_rows, px_x) ||
                  !axis_region_covers(st.ry, y0, y1, m_cols, px_y);
    if (rebuild) {
        const auto t0 = std::chrono::steady_clock::now();
        const double margin = pan ? kMargin : 0.0;
        st.rx = axis_region(x0, x1, m_rows, px_x, margin, kMaxTexels);
        st.ry = axis_region(y0, y1, m_cols, px_y, margin, kMaxTexels);
        const AxisRegion &ax = st.rx, &ay = st.ry;
        bool complete = true;
        const std::vector<float> red =
            h->tiled->reduce(ax.r0, ax.r1, ay.r0, ay.r1, ax.n, ay.n, app.reduce, &complete);
        // Missing full-resolution tiles: drawn from the coarse level meanwhile.
        if (!complete)
            app.request_tiles(h, h->tiled.get(),
                              h->tiled->missing(ax.r0, ax.r1, ay.r0, ay.r1, ax.n, ay.n));
        colorize_transposed(red.data(), ax.n, ay.n, cm, cs, IM_COL32(38, 38, 44, 255), &st.rgba);
        if (h->folded) {
            // Folded tokens (run A merges entries): their own colour over the quantity's.
            bool fcomplete = true;
            const std::vector<float> fr =
                h->folded->reduce(ax.r0, ax.r1, ay.r0, ay.r1, ax.n, ay.n, Reduce::Mean, &fcomplete);
            if (!fcomplete && complete)
                app.request_tiles(h, h->folded.get(),
                                  h->folded->missing(ax.r0, ax.r1, ay.r0, ay.r1, ax.n, ay.n));
            overlay_transposed(fr.data(), ax.n, ay.n, kFoldedRgb, &st.rgba);
        }
        st.tex.upload(ax.n, ay.n, st.rgba.data());
        st.key = key;
        st.reduce_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count();
    }
    timeline_reduce_ms = rebuild ? st.reduce_ms : 0;
    const AxisRegion &ax = st.rx, &ay = st.ry;
    ImDrawList* dl = ImGui::GetWindowDrawList();
    dl->AddImage(st.tex.id(), a, b, ImVec2(axis_region_u(ax, x0), axis_region_u(ay, y0)),
                 ImVec2(axis_region_u(ax, x1), axis_region_u(ay, y1)));
    dl->AddRect(ImVec2(a.x - 1, a.y - 1), ImVec2(b.x + 1, b.y + 1), IM_COL32(140, 140, 150, 255));

    auto X = [&](double r) { return float(a.x + (r - x0) / (x1 - x0) * W); };
    auto Y = [&](double c) { return float(a.y + (c - y0) / (y1 - y0) * H); };
    const ImU32 text = ImGui::GetColorU32(ImGuiCol_Text);
    const ImU32 folded_col = IM_COL32(kFoldedRgb.r, kFoldedRgb.g, kFoldedRgb.b, 255);
    dl->PushClipRect(a, b, true);
    // Folded cells large enough to see get a hatch line too (the colour alone at other zooms).
    if (h->folded && W / (x1 - x0) >= 8 && H / (y1 - y0) >= 8) {
        const int64_t r0 = int64_t(std::floor(x0)),
                      r1 = std::min<int64_t>(m_rows, int64_t(std::ceil(x1)));
        const int64_t c0 = int64_t(std::floor(y0)),
                      c1 = std::min<int64_t>(m_cols, int64_t(std::ceil(y1)));
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c)
                if (h->folded->at(r, c) > 0)
                    dl->AddLine(ImVec2(X(double(r)), Y(double(c + 1))),
                                ImVec2(X(double(r + 1)), Y(double(c))), IM_COL32(60, 0, 40, 200),
                                1.0f);
    }
    // Where generation starts, and the selected step.
    if (app.trace) {
        auto it = std::lower_bound(h->row_steps.begin(), h->row_steps.end(),
                                   int32_t(app.trace->info.prompt_len));
        const double r = double(it - h->row_steps.begin());
        if (r > x0 && r < x1) {
            for (float y = a.y; y < b.y; y += 8)
                dl->AddLine(ImVec2(X(r), y), ImVec2(X(r), std::min(b.y, y + 4)),
                            IM_COL32(255, 255, 255, 200), 1.5f);
            const char* gl = "generated ->";
            const float gw = ImGui::CalcTextSize(gl).x;
            if (X(r) + 4 + gw < b.x)
                dl->AddText(ImVec2(X(r) + 4, a.y + 2), IM_COL32(255, 255, 255, 230), gl);
            else
                dl->AddText(ImVec2(X(r) - 4 - gw, a.y + 2), IM_COL32(255, 255, 255, 230),
                            "prompt | generated");
        }
    }
    {
        auto it =
            std::lower_bound(h->row_steps.begin(), h->row_steps.end(), int32_t(app.cur_step()));
        const double r = double(it - h->row_steps.begin()) + 0.5;
        dl->AddLine(ImVec2(X(r), a.y), ImVec2(X(r), b.y), IM_COL32(255, 80, 80, 220), 1.5f);
    }
    dl->PopClipRect();
    // The answer's tokens (passkey / needle): red ticks on both sides of the plot.
    if (app.trace)
        for (int32_t j : app.trace->info.task.answer_positions) {
            const float y = Y(j + 0.5);
            if (y < a.y || y > b.y) continue;
            dl->AddTriangleFilled(ImVec2(a.x - 9, y - 5), ImVec2(a.x - 9, y + 5),
                                  ImVec2(a.x - 2, y), IM_COL32(255, 60, 60, 255));
            dl->AddTriangleFilled(ImVec2(b.x + 9, y - 5), ImVec2(b.x + 9, y + 5),
                                  ImVec2(b.x + 2, y), IM_COL32(255, 60, 60, 255));
        }
    // Axes: steps along x (labelled with the step's token index), tokens along y; token text
    // replaces the numbers once a row is tall enough to read.
    for (double t : nice_ticks(x0, x1, std::max(2, int(W / (fh * 6))))) {
        const size_t r = size_t(std::clamp<double>(t, 0, rows - 1));
        const std::string l = std::to_string(h->row_steps[r]);
        const ImVec2 ls = ImGui::CalcTextSize(l.c_str());
        dl->AddLine(ImVec2(X(t + 0.5), b.y + 1), ImVec2(X(t + 0.5), b.y + 5), text);
        dl->AddText(ImVec2(X(t + 0.5) - ls.x / 2, b.y + 6), text, l.c_str());
    }
    const char* xl = "decode step (query token index)";
    const ImVec2 xs = ImGui::CalcTextSize(xl);
    dl->AddText(ImVec2((a.x + b.x - xs.x) / 2, b.y + fh + 10), text, xl);
    const double row_px = H / (y1 - y0);
    if (row_px >= fh + 1 && app.trace) {
        for (int64_t j = int64_t(std::floor(y0)); j < int64_t(std::ceil(y1)); ++j) {
            std::string l = app.token_text(j);
            if (l.size() > 10) l = l.substr(0, 9) + "~";
            const ImVec2 ls = ImGui::CalcTextSize(l.c_str());
            const float y = Y(j + 0.5);
            if (y < a.y || y > b.y) continue;
            dl->AddText(ImVec2(a.x - ls.x - 12, y - ls.y / 2),
                        app.trace->is_answer(j) ? IM_COL32(255, 90, 90, 255) : text, l.c_str());
        }
    } else {
        for (double t : nice_ticks(y0, y1, std::max(2, int(H / (fh * 3))))) {
            const std::string l = fmt_value(t);
            const ImVec2 ls = ImGui::CalcTextSize(l.c_str());
            dl->AddLine(ImVec2(a.x - 5, Y(t + 0.5)), ImVec2(a.x - 1, Y(t + 0.5)), text);
            dl->AddText(ImVec2(a.x - ls.x - 12, Y(t + 0.5) - ls.y / 2), text, l.c_str());
        }
    }
    if (h->folded) {
        // Legend of the folded colour, above the plot's right end.
        const char* fl = "folded into a merged entry";
        const float fw = ImGui::CalcTextSize(fl).x;
        const ImVec2 s0(b.x - fw - fh * 1.6f, a.y - fh * 1.35f);
        dl->AddRectFilled(s0, ImVec2(s0.x + fh, s0.y + fh), folded_col);
        dl->AddLine(ImVec2(s0.x, s0.y + fh), ImVec2(s0.x + fh, s0.y), IM_COL32(60, 0, 40, 200));
        dl->AddRect(s0, ImVec2(s0.x + fh, s0.y + fh), IM_COL32(160, 160, 160, 255));
        dl->AddText(ImVec2(s0.x + fh * 1.4f, s0.y), text, fl);
    }
    draw_text_vertical(dl, ImVec2(p.x + fh * 0.7f, (a.y + b.y) / 2), text,
                       "token position (key)  -  top: first token");
    std::string ctitle = quantity_name(app.quantity);
    if (h->diverging) ctitle += " A-B";
    draw_colorbar(dl, ImVec2(b.x + fh * 1.2f, a.y + fh * 1.5f), ImVec2(b.x + fh * 2.4f, b.y), cm,
                  cs, ctitle.c_str());
    ImGui::SetCursorScreenPos(ImVec2(p.x, b.y + bottom));
    char info[160];
    std::snprintf(info, sizeof info, "%s per pixel; texture %d x %d (updated in %.1f ms)",
                  reduce_name(app.reduce), ax.n, ay.n, st.reduce_ms);
    dl->AddText(ImVec2(p.x, b.y + 2 * fh + 12), IM_COL32(150, 150, 150, 255), info);

    // Hover: the cell under the mouse, exact (not reduced).
    if (hovered && !ImGui::IsMouseDragging(ImGuiMouseButton_Left, 2)) {
        const int64_t r = mouse_r, j = mouse_c;
        const int64_t t = h->row_steps[size_t(r)];
        ImGui::BeginTooltip();
        ImGui::Text("step %lld, token %lld", (long long)t, (long long)j);
        if (app.trace) {
            ImGui::Text("token text: \"%s\"", app.token_text(j).c_str());
            ImGui::Text("position %d%s", app.trace->positions[size_t(j)],
                        j < app.trace->info.prompt_len ? " (prompt)" : " (generated)");
            if (app.trace->is_answer(j))
                ImGui::TextColored(ImVec4(1, 0.4f, 0.4f, 1), "part of the answer");
        }
        ImGui::Text("%s: %s", quantity_name(app.quantity), fmt_value(h->at(r, j)).c_str());
        if (const RunData* run = app.run(app.run_a)) {
            const auto units = select_units(*run, app.layer, app.kv_head);
            if (!units.empty() && j < run->T) {
                int held = 0;
                int32_t ev = -1;
                for (const Unit& u : units) {
                    held += run->held_at(u.l, u.h, j, t);
                    ev = std::max(ev, run->evicted_at[run->lht(u.l, u.h, j)]);
                }
                ImGui::Separator();
                ImGui::Text("run A: %s", app.run_label(app.run_a).c_str());
                if (units.size() == 1) {
                    const Unit& u = units[0];
                    ImGui::Text("held at this step: %s", held ? "yes" : "no");
                    const size_t i = run->lht(u.l, u.h, j);
                    const int32_t e = run->evicted_at[i];
                    const int32_t into = run->merged_into[i], at = run->merged_at[i];
                    const ImVec4 fc(kFoldedRgb.r / 255.0f, kFoldedRgb.g / 255.0f,
                                    kFoldedRgb.b / 255.0f, 1);
                    if (into >= 0 && t >= e) {
                        // Folded (by this step, or earlier and its entry has gone since).
                        const bool now = run->token_state(u.l, u.h, j, t) == TokenState::Folded;
                        if (t >= at)
                            ImGui::TextColored(now ? fc : ImGui::GetStyleColorVec4(ImGuiCol_Text),
                                               "folded into entry at position %d at step %d", into,
                                               at);
                        else
                            ImGui::TextColored(fc,
                                               "folded at step %d into an entry itself folded into "
                                               "entry at position %d at step %d",
                                               e, into, at);
                        if (!now)
                            ImGui::Text("that entry was evicted at step %d",
                                        run->evicted_at[run->lht(u.l, u.h, into)]);
                    } else if (into >= 0) {
                        ImGui::Text("folded later: into entry at position %d at step %d", into, at);
                    } else if (e >= 0) {
                        ImGui::Text("evicted at step %d", e);
                    } else {
                        ImGui::Text("never evicted");
                    }
                    if (held) {
                        const auto sf = run->stands_for(u.l, u.h, j, t);
                        if (sf.size() > 1)
                            ImGui::TextColored(fc, "merged entry: stands for %zu tokens",
                                               sf.size());
                    }
                    bool exact = false;
                    const int bits = token_bits(*run, u.l, u.h, j, t, &exact);
                    if (exact) ImGui::Text("bits at this step: %d (exact, from bit_events)", bits);
                    auto it = std::upper_bound(run->ckpt_steps.begin(), run->ckpt_steps.end(),
                                               int32_t(t));
                    if (it != run->ckpt_steps.begin()) {
                        const int64_t c = (it - run->ckpt_steps.begin()) - 1;
                        ImGui::Text("checkpoint step %d: %d bits, score %s",
                                    run->ckpt_steps[size_t(c)],
                                    int(run->ckpt_bits[run->clht(c, u.l, u.h, j)]),
                                    fmt_value(run->ckpt_score[run->clht(c, u.l, u.h, j)]).c_str());
                    }
                } else {
                    ImGui::Text("held by %d of %zu units; last eviction at step %d", held,
                                units.size(), ev);
                    if (run->has_merges) {
                        int folded = 0;
                        for (const Unit& u : units)
                            folded += run->token_state(u.l, u.h, j, t) == TokenState::Folded;
                        ImGui::Text("folded into a merged entry in %d of %zu units", folded,
                                    units.size());
                    }
                }
            }
        }
        ImGui::EndTooltip();
    }
}

}  // namespace kvs::view
