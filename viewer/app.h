// kvscope-view's state: the open trace and results, the selection (quantity, layer, KV head,
// step), the matrices being shown and the background jobs computing them, the settings. The
// panels (panels/*.cpp) read and change it; app.cpp draws the frame around them.
#pragma once
#include <imgui.h>

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gl_backend.h"
#include "viewdata/closed_loop.h"
#include "viewdata/colormap.h"
#include "viewdata/jobs.h"
#include "viewdata/quantities.h"
#include "viewdata/reduce.h"
#include "viewdata/replay_backend.h"
#include "viewdata/results.h"
#include "viewdata/series.h"
#include "viewdata/settings.h"
#include "viewdata/tiled_heat.h"
#include "viewdata/trace_data.h"

namespace kvs::view {

enum class ViewKind { Timeline, Tokens, Grid, Curves, ClosedLoop };
inline constexpr const char* kViewNames[] = {"timeline", "tokens", "grid", "curves", "closed-loop"};
inline constexpr int kNumViews = 5;
bool view_from_name(const std::string& s, ViewKind* out);

// A [steps, tokens] matrix ready to draw: the data, its pyramid, what its rows mean.
struct Heat {
    std::string key;  // what it was computed from
    // The cells, kept as a TiledHeat (attention_heat() or results_heat()): memory bounded by
    // the tile budget whatever the trace's length.
    std::unique_ptr<TiledHeat> tiled;
    int64_t rows() const { return tiled->rows(); }
    int64_t cols() const { return tiled->cols(); }
    float at(int64_t r, int64_t c) const { return tiled->at(r, c); }
    std::vector<float> row(int64_t r) const { return tiled->row(r); }
    size_t bytes() const;            // what the cache accounts for it
    std::vector<int32_t> row_steps;  // row r = step row_steps[r]
    Range range;                     // finite range
    float p_lo = 0, p_hi = 1;        // percentiles used by the automatic colour scale
    bool diverging = false;          // a difference: symmetric scale, diverging colours
    std::string title;               // "attention, layer 3, KV head 1"
    int run_a = -1, run_b = -1;      // the runs it shows (A, and B for A - B); -1: none
    std::string note;                // how exact it is ("carried forward from 16 checkpoints")
    // Run A's folded tokens (folded_matrix(): a run with merged entries, not A - B), drawn over
    // the heatmap in kFoldedRgb; empty (no pyramid) otherwise.
    std::unique_ptr<TiledHeat> folded;
};

// One run of an open results file.
struct RunEntry {
    std::shared_ptr<ResultsFile> file;
    int index = 0;
    const RunData& run() const { return file->runs[size_t(index)]; }
    std::string label;  // short: "h2o 256", "quant bits=2" (labels.h); the full spec without
                        // kvscope's policy list
    bool plot = false;  // drawn in the curves view (A and B always are)
};

// The panel the user is in, its rect (logical pixels) for exports.
struct ExportRequest {
    std::string png_path;
    float scale = 1;
};

class App {
  public:
    App(Settings s, std::string settings_path);
    ~App();

    // --- files ---------------------------------------------------------------------------------
    void open_file(const std::string& path);  // trace or results, in the background
    void frame(Window& win);                  // draws one frame (the whole window)
    // A job is running, or the last frame drew data that is about to change.
    bool busy() const;
    std::string status_line() const;

    // --- selection -----------------------------------------------------------------------------
    Settings settings;
    std::string settings_path;
    ViewKind view = ViewKind::Timeline;
    bool force_view = false;  // select the view's tab on the next frame
    Quantity quantity = Quantity::Attention;
    Reduce reduce = Reduce::Mean;
    ColorMap cmap = ColorMap::Viridis;
    bool log_scale = true, auto_range = true;
    float range_lo = 0, range_hi = 1;
    int layer = -1, kv_head = -1;  // -1 = all
    int64_t step = -1;             // token index of the selected step (-1 = last)
    int run_a = -1, run_b = -1;    // index into runs; B >= 0: compare (A - B)
    bool err_log = true;           // curves view: output error on a log axis
    bool playing = false;

    std::shared_ptr<TraceData> trace;
    std::vector<RunEntry> runs;
    // Full-resolution tiles an attention heatmap keeps (--heat-cache-mb); the viewer's memory
    // for a heatmap is this plus a fixed coarse pyramid, whatever the trace's length.
    size_t heat_cache_bytes = size_t(256) << 20;
    // --zoom S0,S1,T0,T1: applied by reset_view() to the first heatmap large enough for it.
    std::optional<std::array<double, 4>> zoom_request;
    // Starts computing the tiles that t (h's cells or folded overlay) lacks for the view (no-op
    // while a tile job runs).
    void request_tiles(const Heat* h, TiledHeat* t, std::vector<TiledHeat::TileId> ids);
    std::vector<std::string> messages;  // errors shown in the window

    // --- derived data ----------------------------------------------------------------------------
    // The heatmap for the current selection (nullptr until computed); starts a job when the
    // selection changed.
    const Heat* heat();
    std::string heat_key() const;
    float heat_progress() const;  // < 0 when no job
    ColorScale color_scale(const Heat& h) const;
    ColorMap color_map(const Heat& h) const { return h.diverging ? ColorMap::RdBu : cmap; }
    // Attention of the selected step, [L, HK, T] (trace only; nullptr until computed).
    const std::vector<float>* step_attention();
    int64_t n_tokens() const;
    int64_t last_step() const;
    int64_t cur_step() const { return step < 0 ? last_step() : step; }
    const RunData* run(int i) const {
        return i >= 0 && i < int(runs.size()) ? &runs[size_t(i)].run() : nullptr;
    }
    std::string run_label(int i) const {
        return i >= 0 && i < int(runs.size()) ? runs[size_t(i)].label : "";
    }
    // The runs the curves view draws, in run order: A, B and those with `plot` set.
    bool plotted(int i) const { return i == run_a || i == run_b || runs[size_t(i)].plot; }
    std::vector<int> plotted_runs() const;
    // Colour and dash of run i in plots: by its place among the plotted runs (7 colours, then
    // the same dashed), so up to 7 plotted runs never share a colour.
    ImU32 plot_color(int i) const;
    bool plot_dashed(int i) const;
    void relabel();  // short labels from the policy list (after it arrives)
    std::string token_text(int64_t j) const;
    std::vector<int> layer_choices() const;  // model layers
    int n_kv_heads() const;

    // --- policy panel ----------------------------------------------------------------------------
    std::unique_ptr<ReplayBackend> backend;
    std::vector<PolicyDesc> policies;
    std::string policies_error;
    std::unique_ptr<Job> policies_job, replay_job;
    std::string replay_out;   // the results file the running replay writes
    std::string replay_spec;  // the spec it runs (or ran last)
    // The last replay's outcome for the panel: "" while none finished, else "ok: ..." or the
    // error (replay_failed).
    std::string replay_result;
    bool replay_failed = false;
    bool open_policy_panel = false;  // open the panel's "run a policy" node on the next frame
    void load_policies();
    // The Run button: starts `kvscope replay TRACE --policy spec` in the background; when it
    // ends, App::frame() opens its results file (the run joins the list, becomes A and is
    // plotted) or shows its error in the window.
    void start_replay(const std::string& spec);
    // --run-policy: queued specs, started one after another through start_replay() once the
    // files are open (messages say why when there is no trace).
    void request_replay(const std::string& spec);
    bool replay_active() const { return replay_job != nullptr || !replay_queue_.empty(); }

    // --- curves view
    // ------------------------------------------------------------------------------
    CurveCache curve_cache;  // per (run, curve, layer) series and their reduction to pixels

    // --- closed-loop view
    // The table's rows over every open run (closed_loop.h); run indices are app.runs indices.
    std::vector<ClosedLoopRow> closed_loop_rows() const;
    bool closed_loop_log_x = false, closed_loop_log_y = false;

    // --- exports and figures -------------------------------------------------------------------
    ImVec2 view_min{0, 0}, view_max{0, 0};  // the current view's rect, logical pixels
    ExportRequest export_req;               // png_path non-empty: export on the next frame
    std::string last_export;
    void export_csv(const std::string& path);
    // Timeline view window, shared with the benchmark: rows (steps) x0..x1, tokens y0..y1.
    double vx0 = 0, vx1 = 0, vy0 = 0, vy1 = 0;
    bool view_init = false;
    void reset_view();

  private:
    std::vector<std::string> replay_queue_;
    size_t runs_before_replay_ = 0;
    bool await_replay_run_ = false;  // a replay succeeded: its run becomes A once loaded
    std::string replay_first_out_;   // the running replay's first-layer results file ("": none)
    std::string replay_out_loaded_;  // the finished replay's results file, being loaded
    int replay_first_layer_ = -1;
    double replay_first_seconds_ = -1;  // when the first layer's results arrived (-1: not yet)
    struct Pending;
    std::vector<std::unique_ptr<Job>> load_jobs_;
    std::vector<std::string> open_queue_;
    void start_load(const std::string& path);
    std::shared_ptr<Pending> pending_;
    bool stale_ = false;  // this frame drew something out of date
    std::unique_ptr<Job> heat_job_;
    std::unique_ptr<Job> tile_job_;  // full-resolution tiles of a TiledHeat for the view
    std::shared_ptr<Heat> tile_heat_;
    std::string heat_job_key_;
    std::shared_ptr<std::shared_ptr<Heat>> heat_out_;
    std::string failed_key_;
    void collect_heat();
    std::shared_ptr<std::vector<float>> step_out_;
    std::shared_ptr<std::vector<PolicyDesc>> policies_out_;
    std::map<std::string, std::shared_ptr<Heat>> cache_;
    std::vector<std::string> cache_order_;
    std::shared_ptr<Heat> current_;
    std::unique_ptr<Job> step_job_;
    int64_t step_job_step_ = -2, step_att_step_ = -2;
    std::vector<float> step_att_;
    void poll_jobs();
    void start_heat_job(const std::string& key);
    void draw_sidebar();
    void draw_status();
};

// Panels (panels/<name>.cpp).
void draw_timeline(App& app);
void draw_tokens(App& app);
void draw_grid(App& app);
void draw_curves(App& app);
void draw_closed_loop(App& app);
void draw_policy_panel(App& app);

// Colours for runs in plots and lists: Okabe-Ito, colour-blind safe.
ImU32 run_color(int i);

}  // namespace kvs::view
