// kvscope-view: look at what a KV-cache policy did to a trace, and try another one.
//   kvscope-view [trace.h5] [results.h5 ...]                 interactive
//   kvscope-view trace.h5 results.h5 --screenshot out.png
//       [--view timeline|tokens|grid|curves|closed-loop] [--layer L] [--head H] [--step S]
//       [--size 1600x1000] [--scale 2] [--frames N] [--csv out.csv]
//                                                            headless figure (run under xvfb-run)
//   kvscope-view trace.h5 --run-policy h2o:budget=256 --screenshot out.png
//                                   run a policy like the policy panel's Run button, then the
//                                   figure
//   kvscope-view trace.h5 --bench-pan 300                    frames/s while panning the timeline
//   kvscope-view trace.h5 results.h5 --view curves --bench-pan 300
//                                   frames/s of the curves view while the step cursor moves
#include <GLFW/glfw3.h>
#include <imgui.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "app.h"
#include "engine/error.h"
#include "gl_backend.h"

namespace kvs::view {
extern double timeline_reduce_ms;
}

using namespace kvs::view;

namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// Crops RGB pixels to [x0, x1) x [y0, y1).
std::vector<uint8_t> crop(const std::vector<uint8_t>& rgb, int w, int h, int x0, int y0, int x1,
                          int y1) {
    x0 = std::clamp(x0, 0, w);
    x1 = std::clamp(x1, x0, w);
    y0 = std::clamp(y0, 0, h);
    y1 = std::clamp(y1, y0, h);
    std::vector<uint8_t> out(size_t(x1 - x0) * size_t(y1 - y0) * 3);
    for (int y = y0; y < y1; ++y)
        std::copy(rgb.begin() + (ptrdiff_t(y) * w + x0) * 3,
                  rgb.begin() + (ptrdiff_t(y) * w + x1) * 3,
                  out.begin() + ptrdiff_t(y - y0) * (x1 - x0) * 3);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App cli{
        "kvscope-view: token importance, bit allocation and eviction over time; "
        "compare policies and run new ones. Files: kvscope traces and results files, "
        "in any order."};
    std::vector<std::string> files;
    std::string screenshot, view_name, size, quantity, colormap, reduce, csv_out, zoom;
    int layer = -2, head = -2, frames = 3, bench = 0, run_a = -1, run_b = -1, heat_cache_mb = 256;
    int64_t step = -2;
    float scale = 1;
    bool no_settings = false;
    cli.add_option("files", files, "trace.h5 and/or results.h5");
    cli.add_option("--screenshot", screenshot, "render without interaction, write this PNG, exit");
    cli.add_option("--view", view_name, "timeline, tokens, grid, curves or closed-loop")
        ->check(CLI::IsMember({"timeline", "tokens", "grid", "curves", "closed-loop"}));
    cli.add_option("--csv", csv_out,
                   "with --screenshot: also write the view's data as CSV (the sidebar's Export "
                   "CSV) when the screenshot is taken");
    cli.add_option("--layer", layer, "model layer to show (-1: mean over layers)");
    cli.add_option("--head", head, "KV head to show (-1: mean over KV heads)");
    cli.add_option("--step", step, "selected decode step (token index; -1: the last)");
    cli.add_option("--size", size, "window size WxH (default 1600x1000 for screenshots)");
    cli.add_option("--scale", scale, "screenshot scale: 2 renders a 2x larger, sharper image")
        ->check(CLI::Range(1.0f, 4.0f));
    cli.add_option("--frames", frames, "frames to render before the screenshot (after loading)");
    cli.add_option("--quantity", quantity,
                   "attention, \"attention (cumulative)\", held, bits or score");
    cli.add_option("--colormap", colormap, "viridis, cividis, magma or rdbu");
    cli.add_option("--reduce", reduce, "per pixel: mean, min or max");
    cli.add_option("--a", run_a, "run shown as A (index over the runs of the files, in order)");
    cli.add_option("--b", run_b, "run B: compare A - B");
    std::vector<int> plot_runs;
    cli.add_option("--plot", plot_runs,
                   "runs drawn in the curves view besides A and B (indices, comma-separated; "
                   "default: the first 6)")
        ->delimiter(',');
    cli.add_option("--bench-pan", bench,
                   "pan the timeline (with --view curves: move the step cursor) for N frames, "
                   "print frames/s, exit");
    std::vector<std::string> run_policies;
    cli.add_option("--run-policy", run_policies,
                   "run this policy spec on the open trace as the policy panel's Run button does "
                   "(kvscope replay in the background; repeatable, one after another), add the "
                   "results to the run list, then go on (--screenshot: after it finished)")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    cli.add_flag("--no-settings", no_settings, "neither read nor write the settings file");
    cli.add_option("--zoom", zoom,
                   "timeline region S0,S1,T0,T1: decode steps [S0, S1) by tokens [T0, T1)");
    cli.add_option("--heat-cache-mb", heat_cache_mb,
                   "full-resolution tiles an attention heatmap keeps, in MiB (default 256; "
                   "evicted tiles are recomputed when shown)")
        ->check(CLI::Range(0, 1 << 20));
    CLI11_PARSE(cli, argc, argv);

    const bool headless = !screenshot.empty() || bench > 0;
    if (headless) no_settings = true;  // figures do not depend on (or change) the user's state
    const std::string sdir = settings_dir();
    const std::string spath = sdir.empty() ? "" : sdir + "/viewer.json";
    Settings settings;
    std::string warn;
    if (!no_settings && !spath.empty()) settings = load_settings(spath, &warn);
    int w = headless ? 1600 : settings.win_w, h = headless ? 1000 : settings.win_h;
    if (!size.empty() && std::sscanf(size.c_str(), "%dx%d", &w, &h) != 2) {
        std::fprintf(stderr, "kvscope-view: --size wants WxH, e.g. 1600x1000\n");
        return 2;
    }
    try {
        Window win(w, h, "kvscope-view", !headless);
        static std::string ini;
        if (!no_settings && !sdir.empty()) {
            std::error_code ec;
            std::filesystem::create_directories(sdir, ec);
            ini = sdir + "/imgui.ini";
            ImGui::GetIO().IniFilename = ini.c_str();
            ImGui::LoadIniSettingsFromDisk(ini.c_str());
        }
        App app(settings, spath);
        app.heat_cache_bytes = size_t(heat_cache_mb) << 20;
        if (!warn.empty()) app.messages.push_back(warn);
        bool quantity_set = false;
        if (!quantity.empty()) {
            if (!quantity_from_name(quantity, &app.quantity)) {
                std::fprintf(stderr, "kvscope-view: unknown --quantity '%s'\n", quantity.c_str());
                return 2;
            }
            quantity_set = true;
        } else if (headless) {
            app.quantity = Quantity::Attention;
        }
        if (!colormap.empty() && !colormap_from_name(colormap, &app.cmap)) {
            std::fprintf(stderr, "kvscope-view: unknown --colormap '%s'\n", colormap.c_str());
            return 2;
        }
        if (!reduce.empty() && !reduce_from_name(reduce, &app.reduce)) {
            std::fprintf(stderr, "kvscope-view: unknown --reduce '%s'\n", reduce.c_str());
            return 2;
        }
        if (!view_name.empty()) view_from_name(view_name, &app.view);
        app.force_view = true;
        if (layer != -2) app.layer = layer;
        if (head != -2) app.kv_head = head;
        if (step != -2) app.step = step;
        if (!zoom.empty()) {
            double z[4];
            char tail = 0;
            if (std::sscanf(zoom.c_str(), "%lf,%lf,%lf,%lf%c", &z[0], &z[1], &z[2], &z[3], &tail) !=
                    4 ||
                !(z[0] >= 0 && z[1] > z[0] && z[2] >= 0 && z[3] > z[2])) {
                std::fprintf(stderr,
                             "kvscope-view: --zoom '%s': expected S0,S1,T0,T1 with S0 < S1 and "
                             "T0 < T1, all >= 0\n",
                             zoom.c_str());
                return 2;
            }
            app.zoom_request = std::array<double, 4>{z[0], z[1], z[2], z[3]};
        }
        for (const auto& f : files) app.open_file(f);
        if (!headless)
            glfwSwapInterval(1);
        else
            glfwSwapInterval(0);

        int idle = 0, frame_no = 0;
        bool applied_runs = false, requested = run_policies.empty();
        const double t_start = now_s();
        double bench_t0 = 0;
        int bench_frames = -1;
        double reduce_sum = 0, t_ui = 0, t_render = 0, t_swap = 0;
        while (!win.should_close()) {
            // PNG export of the current view, at a scale, offscreen.
            if (!app.export_req.png_path.empty()) {
                const ExportRequest req = app.export_req;
                app.export_req = {};
                win.begin_frame(0, req.scale);
                app.frame(win);
                std::vector<uint8_t> rgb;
                int fw = 0, fh = 0;
                win.render(true, &rgb, &fw, &fh, req.scale);
                const float s = float(fw) / ImGui::GetIO().DisplaySize.x;
                const auto c = crop(rgb, fw, fh, int(app.view_min.x * s), int(app.view_min.y * s),
                                    int(app.view_max.x * s), int(app.view_max.y * s));
                const int cw = int(app.view_max.x * s) - int(app.view_min.x * s);
                const int ch = int(c.size() / 3 / size_t(std::max(1, cw)));
                if (write_png(req.png_path, cw, ch, c.data()))
                    app.last_export = "wrote " + req.png_path + " (" + std::to_string(cw) + " x " +
                                      std::to_string(ch) + ")";
                else
                    app.messages.push_back("cannot write " + req.png_path);
                continue;
            }
            const bool active = app.busy() || app.replay_active() || app.playing || bench > 0 ||
                                !screenshot.empty();
            const double tf0 = now_s();
            win.begin_frame(active ? 0 : 0.25, headless && scale != 1 ? scale : 0);
            app.frame(win);
            const double tf1 = now_s();
            ++frame_no;
            // --run-policy: once the files are open, queue the specs for the policy panel's Run
            // path (App::start_replay, one after another, frames keep drawing meanwhile).
            if (!requested && !app.busy()) {
                for (const auto& spec : run_policies) app.request_replay(spec);
                requested = true;
            }
            // Results arrive in the background: apply --a/--b and the default quantity once.
            if (!applied_runs && !app.runs.empty() && !app.busy()) {
                if (run_a >= 0 && run_a < int(app.runs.size())) app.run_a = run_a;
                if (run_b >= 0 && run_b < int(app.runs.size())) app.run_b = run_b;
                if (!plot_runs.empty()) {
                    for (RunEntry& e : app.runs) e.plot = false;
                    for (int i : plot_runs)
                        if (i >= 0 && i < int(app.runs.size())) app.runs[size_t(i)].plot = true;
                }
                if (!quantity_set && !quantity_needs_results(app.quantity))
                    app.quantity = Quantity::Held;
                applied_runs = true;
            }
            idle = app.busy() || !requested || app.replay_active() ? 0 : idle + 1;
            if (!screenshot.empty()) {
                const bool ready = idle >= std::max(frames, 2) &&
                                   (applied_runs || app.runs.empty() || !app.messages.empty());
                const bool timeout = now_s() - t_start > 600;
                if (ready || timeout) {
                    if (timeout)
                        std::fprintf(
                            stderr,
                            "kvscope-view: still busy after 600 s; writing what is drawn\n");
                    std::vector<uint8_t> rgb;
                    int fw = 0, fh = 0;
                    win.render(true, &rgb, &fw, &fh, scale != 1 ? scale : 0);
                    for (const auto& m : app.messages)
                        std::fprintf(stderr, "kvscope-view: %s\n", m.c_str());
                    if (!write_png(screenshot, fw, fh, rgb.data())) {
                        std::fprintf(stderr, "kvscope-view: cannot write %s\n", screenshot.c_str());
                        return 1;
                    }
                    if (!csv_out.empty()) {
                        const size_t n_msg = app.messages.size();
                        app.export_csv(csv_out);
                        for (size_t i = n_msg; i < app.messages.size(); ++i)
                            std::fprintf(stderr, "kvscope-view: %s\n", app.messages[i].c_str());
                        if (app.messages.size() > n_msg) return 1;
                    }
                    if (!run_policies.empty() && !app.replay_result.empty() && !app.replay_failed)
                        std::printf("replay %s: %s\n", app.replay_spec.c_str(),
                                    app.replay_result.c_str());
                    std::printf("wrote %s (%d x %d, %s view, %zu run%s)\n", screenshot.c_str(), fw,
                                fh, kViewNames[int(app.view)], app.runs.size(),
                                app.runs.size() == 1 ? "" : "s");
                    return 0;
                }
            } else if (bench > 0 && idle >= 2) {
                // Pan the timeline: a quarter of the steps visible, all tokens, moving right
                // then left by 1/200 of the trace per frame. In the curves view: move the step
                // cursor by 1/200 of the trace per frame instead (the plots redraw every frame).
                const bool curves = app.view == ViewKind::Curves;
                if (bench_frames < 0 && curves) {
                    bench_frames = 0;
                    bench_t0 = now_s();
                    reduce_sum = 0;
                } else if (curves) {
                    const int64_t T = std::max<int64_t>(1, app.n_tokens());
                    app.step = (int64_t(bench_frames) * std::max<int64_t>(1, T / 200)) % T;
                    if (++bench_frames >= bench) {
                        const double dt = now_s() - bench_t0;
                        std::printf(
                            "bench-pan (curves view, %zu runs plotted): %d frames in %.2f s = "
                            "%.1f frames/s; per frame: UI %.2f ms, render %.2f ms, swap %.2f ms; "
                            "%d x %d window; %s; %lld tokens\n",
                            app.plotted_runs().size(), bench, dt, bench / dt, 1e3 * t_ui / bench,
                            1e3 * t_render / bench, 1e3 * t_swap / bench, w, h,
                            win.gl_renderer().c_str(), (long long)app.n_tokens());
                        return 0;
                    }
                } else if (bench_frames < 0) {
                    app.view = ViewKind::Timeline;
                    app.force_view = true;
                    const double rows = app.vx1 > 0 ? app.vx1 : double(app.n_tokens());
                    app.vx0 = 0;
                    app.vx1 = rows / 4;
                    bench_frames = 0;
                    bench_t0 = now_s();
                    reduce_sum = 0;
                } else {
                    const double T = double(app.n_tokens()), d = T / 200;
                    const double dir = (bench_frames / int(150)) % 2 ? -1 : 1;
                    app.vx0 += dir * d;
                    app.vx1 += dir * d;
                    if (app.vx0 < 0) {
                        app.vx1 -= app.vx0;
                        app.vx0 = 0;
                    }
                    if (app.vx1 > T) {
                        app.vx0 -= app.vx1 - T;
                        app.vx1 = T;
                    }
                    reduce_sum += timeline_reduce_ms;
                    if (++bench_frames >= bench) {
                        const double dt = now_s() - bench_t0;
                        std::printf(
                            "bench-pan: %d frames in %.2f s = %.1f frames/s; per frame: UI "
                            "%.2f ms (of which heatmap texture %.2f ms), render %.2f ms, "
                            "swap %.2f ms; %d x %d window; %s; %lld tokens\n",
                            bench, dt, bench / dt, 1e3 * t_ui / bench, reduce_sum / bench,
                            1e3 * t_render / bench, 1e3 * t_swap / bench, w, h,
                            win.gl_renderer().c_str(), (long long)app.n_tokens());
                        return 0;
                    }
                }
            }
            win.render(false, nullptr, nullptr, nullptr, headless && scale != 1 ? scale : 0);
            const double tf2 = now_s();
            win.swap();
            if (bench_frames > 0) {
                t_ui += tf1 - tf0;
                t_render += tf2 - tf1;
                t_swap += now_s() - tf2;
            }
        }
        if (!no_settings && !spath.empty()) {
            int ww = 0, wh = 0;
            win.window_size(&ww, &wh);
            app.settings.win_w = ww;
            app.settings.win_h = wh;
            save_settings(app.settings, spath);
            if (!ini.empty()) ImGui::SaveIniSettingsToDisk(ini.c_str());
        }
    } catch (const kvs::Error& e) {
        std::fprintf(stderr, "kvscope-view: %s\n", e.what());
        return 1;
    }
    return 0;
}
