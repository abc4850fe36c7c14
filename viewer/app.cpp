// kvscope-view's state and frame: files, jobs, the selection, the sidebar (see app.h).
#include "app.h"

#include <imgui.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "engine/error.h"
#include "viewdata/attention.h"
#include "viewdata/csv.h"
#include "viewdata/labels.h"
#include "widgets.h"

namespace kvs::view {

bool view_from_name(const std::string& s, ViewKind* out) {
    for (int i = 0; i < kNumViews; ++i)
        if (s == kViewNames[i]) {
            *out = ViewKind(i);
            return true;
        }
    return false;
}

ImU32 run_color(int i) {
    // Okabe-Ito: orange, sky blue, bluish green, yellow, blue, vermillion, reddish purple.
    static const ImU32 c[] = {IM_COL32(230, 159, 0, 255),  IM_COL32(86, 180, 233, 255),
                              IM_COL32(0, 158, 115, 255),  IM_COL32(240, 228, 66, 255),
                              IM_COL32(0, 114, 178, 255),  IM_COL32(213, 94, 0, 255),
                              IM_COL32(204, 121, 167, 255)};
    return c[size_t(i) % 7];
}

// What background jobs hand over to the UI thread.
struct App::Pending {
    std::mutex mu;
    std::vector<std::shared_ptr<TraceData>> traces;
    std::vector<std::shared_ptr<ResultsFile>> results;
    std::vector<std::string> errors;
    std::string first_layer_results;  // a replay's first layer is written (InProcessBackend)
};

App::App(Settings s, std::string sp)
    : settings(std::move(s)), settings_path(std::move(sp)), pending_(std::make_shared<Pending>()) {
    colormap_from_name(settings.colormap, &cmap);
    reduce_from_name(settings.reduce, &reduce);
    quantity_from_name(settings.quantity, &quantity);
    view_from_name(settings.view, &view);
    log_scale = settings.log_scale;
    // In-process replay, unless a kvscope executable is named ($KVSCOPE_BIN).
    if (const char* e = std::getenv("KVSCOPE_BIN"); e && *e)
        backend = std::make_unique<SubprocessBackend>(e);
    else
        backend = std::make_unique<InProcessBackend>();
    load_policies();  // the policy defaults give the runs short labels
}

std::vector<int> App::plotted_runs() const {
    std::vector<int> v;
    for (int i = 0; i < int(runs.size()); ++i)
        if (plotted(i)) v.push_back(i);
    return v;
}

ImU32 App::plot_color(int i) const {
    int slot = 0;
    for (int k = 0; k < i && k < int(runs.size()); ++k) slot += plotted(k) ? 1 : 0;
    return run_color(slot);
}

bool App::plot_dashed(int i) const {
    int slot = 0;
    for (int k = 0; k < i && k < int(runs.size()); ++k) slot += plotted(k) ? 1 : 0;
    return slot >= 7;
}

void App::relabel() {
    std::vector<std::string> labels;
    for (const RunEntry& e : runs) labels.push_back(short_label(e.run().info, policies));
    make_unique_labels(labels);
    for (size_t i = 0; i < runs.size(); ++i) runs[i].label = labels[i];
}

App::~App() {
    if (replay_job) replay_job->cancel();
    tile_job_.reset();  // cancels and joins before the heatmap it fills goes
}

void App::open_file(const std::string& path) {
    settings.add_recent(path);
    open_queue_.push_back(path);  // loaded one at a time, in order: runs keep the file order
}

void App::start_load(const std::string& path) {
    auto pend = pending_;
    load_jobs_.push_back(std::make_unique<Job>("loading " + path, [path, pend](Job& j) {
        j.set_progress(-1);
        try {
            const FileKind k = detect_file_kind(path);
            if (k == FileKind::Trace) {
                auto t = load_trace(path);
                std::lock_guard<std::mutex> l(pend->mu);
                pend->traces.push_back(std::move(t));
            } else if (k == FileKind::Results) {
                auto r = std::make_shared<ResultsFile>(read_results(path));
                std::lock_guard<std::mutex> l(pend->mu);
                pend->results.push_back(std::move(r));
            } else if (k == FileKind::Missing) {
                fail("'{}': no such file", path);
            } else if (k == FileKind::NotHdf5) {
                fail("'{}' is not an HDF5 file, so neither a kvscope trace nor a results file",
                     path);
            } else {
                fail(
                    "'{}' is HDF5 but neither a kvscope trace nor a results file (no 'format' "
                    "attribute naming one)",
                    path);
            }
        } catch (const std::exception& e) {
            std::lock_guard<std::mutex> l(pend->mu);
            pend->errors.push_back(e.what());
        }
    }));
}

bool App::busy() const {
    if (!open_queue_.empty()) return true;
    for (const auto& j : load_jobs_)
        if (!j->done()) return true;
    if (stale_ || heat_job_ || step_job_ || policies_job) return true;
    if (tile_job_ && !tile_job_->done()) return true;
    return !pending_->traces.empty() || !pending_->results.empty();
}

void App::poll_jobs() {
    load_jobs_.erase(std::remove_if(load_jobs_.begin(), load_jobs_.end(),
                                    [](const auto& j) { return j->done(); }),
                     load_jobs_.end());
    if (load_jobs_.empty() && !open_queue_.empty()) {
        start_load(open_queue_.front());
        open_queue_.erase(open_queue_.begin());
    }
    std::lock_guard<std::mutex> l(pending_->mu);
    for (auto& t : pending_->traces) {
        trace = std::move(t);
        view_init = false;
        if (step >= trace->n_tokens()) step = -1;
        if (layer >= 0 && trace->layer_index(layer) < 0) layer = -1;
        if (kv_head >= trace->info.n_head_kv) kv_head = -1;
    }
    pending_->traces.clear();
    if (!pending_->first_layer_results.empty()) {
        open_queue_.push_back(pending_->first_layer_results);  // not a recent file
        await_replay_run_ = true;
        pending_->first_layer_results.clear();
    }
    for (auto& r : pending_->results) {
        // A whole replay's results take the place of its first layer's, keeping the run's
        // place, its A/B role and its plot flag.
        if (!replay_first_out_.empty() && r->path == replay_out_loaded_) {
            bool replaced = false;
            for (RunEntry& e : runs)
                if (e.file->path == replay_first_out_ && size_t(e.index) < r->runs.size()) {
                    e.file = r;
                    replaced = true;
                }
            if (replaced) {
                std::error_code ec;
                std::filesystem::remove(replay_first_out_, ec);
                replay_first_out_.clear();
                relabel();
                view_init = false;
                continue;
            }
        }
        if (r->path == replay_first_out_ && replay_job)  // the first layer, loaded
            replay_first_seconds_ = replay_job->seconds();
        for (size_t i = 0; i < r->runs.size(); ++i) {
            RunEntry e;
            e.file = r;
            e.index = int(i);
            runs.push_back(std::move(e));
        }
        // Nothing picked for the curves yet: the first 6 runs.
        if (std::none_of(runs.begin(), runs.end(), [](const RunEntry& e) { return e.plot; }))
            for (size_t i = 0; i < runs.size() && i < 6; ++i) runs[i].plot = true;
        relabel();
        if (run_a < 0 && !runs.empty()) {
            run_a = 0;
            if (!trace && quantity != Quantity::Held) quantity = Quantity::Held;
        }
        view_init = false;
    }
    pending_->results.clear();
    for (auto& e : pending_->errors) messages.push_back(e);
    pending_->errors.clear();
}

int64_t App::n_tokens() const {
    if (trace) return trace->n_tokens();
    if (const RunData* r = run(run_a)) return r->T;
    return 0;
}

int64_t App::last_step() const {
    return std::max<int64_t>(0, n_tokens() - 1);
}

std::string App::token_text(int64_t j) const {
    if (trace && j >= 0 && j < int64_t(trace->text.size()))
        return printable_token(trace->text[size_t(j)]);
    return "";
}

std::vector<int> App::layer_choices() const {
    if (trace) return trace->info.layers;
    if (const RunData* r = run(run_a)) return std::vector<int>(r->layers.begin(), r->layers.end());
    return {};
}

int App::n_kv_heads() const {
    if (trace) return trace->info.n_head_kv;
    if (const RunData* r = run(run_a)) return int(r->H);
    return 0;
}

size_t Heat::bytes() const {
    return tiled->bytes() + (folded ? folded->bytes() : 0);
}

void App::request_tiles(const Heat* h, TiledHeat* t, std::vector<TiledHeat::TileId> ids) {
    if (tile_job_ && !tile_job_->done()) return;
    tile_job_.reset();
    tile_heat_.reset();
    if (!h || !t || ids.empty() || !current_ || current_.get() != h) return;
    tile_heat_ = current_;  // kept alive while the job runs (t is one of its heats)
    tile_job_ = std::make_unique<Job>(
        "tiles", [t, ids = std::move(ids)](Job& j) { t->compute(ids, &j.cancel_flag()); });
}

std::string App::heat_key() const {
    std::string k = std::string(quantity_name(quantity)) + "|" + std::to_string(layer) + "|" +
                    std::to_string(kv_head);
    if (quantity_needs_results(quantity)) {
        if (!run(run_a)) return "";
        k += "|A" + std::to_string(reinterpret_cast<uintptr_t>(&runs[size_t(run_a)].run()));
        if (run(run_b) && run_b != run_a)
            k += "|B" + std::to_string(reinterpret_cast<uintptr_t>(&runs[size_t(run_b)].run()));
    } else {
        if (!trace) return "";
        k += "|T" + std::to_string(reinterpret_cast<uintptr_t>(trace.get()));
    }
    return k;
}

void App::start_heat_job(const std::string& key) {
    auto tr = trace;
    const RunData* a = run(run_a);
    const RunData* b = run_b != run_a ? run(run_b) : nullptr;
    const Quantity q = quantity;
    const int L = layer, H = kv_head;
    auto out = std::make_shared<std::shared_ptr<Heat>>();
    std::string title = quantity_name(q);
    title += L < 0 ? ", all layers" : ", layer " + std::to_string(L);
    title += H < 0 ? ", all KV heads" : ", KV head " + std::to_string(H);
    const int ia = quantity_needs_results(q) && a ? run_a : -1;
    const int ib = ia >= 0 && b ? run_b : -1;
    const size_t budget = heat_cache_bytes;
    // The runs' files (kept alive by the heatmaps, which recompute their cells from them).
    std::shared_ptr<const ResultsFile> fa, fb;
    int xa = 0, xb = 0;
    if (ia >= 0) {
        fa = runs[size_t(ia)].file;
        xa = runs[size_t(ia)].index;
    }
    if (ib >= 0) {
        fb = runs[size_t(ib)].file;
        xb = runs[size_t(ib)].index;
    }
    heat_job_key_ = key;
    heat_job_ = std::make_unique<Job>("computing " + title, [=](Job& j) {
        auto h = std::make_shared<Heat>();
        h->key = key;
        h->title = title;
        h->run_a = ia;
        h->run_b = ib;
        if (!quantity_needs_results(q)) {
            h->tiled = attention_heat(
                tr, L, H, q == Quantity::AttentionCum, budget,
                [&](float f) { j.set_progress(0.99f * f); }, &j.cancel_flag());
            if (j.cancelled() || !h->tiled) return;
            h->row_steps.resize(size_t(h->tiled->rows()));
            for (size_t i = 0; i < h->row_steps.size(); ++i) h->row_steps[i] = int32_t(i);
        } else {
            j.set_progress(-1);
            h->tiled = results_heat(fa, xa, b ? fb : nullptr, xb, q, L, H, false, budget);
            if (!h->tiled) fail("run A has no steps");
            h->row_steps = a->steps;
            h->note = quantity_provenance(*a, q);
            if (b && quantity_provenance(*b, q) != h->note)
                h->note = "A: " + h->note + "; B: " + quantity_provenance(*b, q);
            h->diverging = b != nullptr;
            if (!b && a->has_merges)
                h->folded = results_heat(fa, xa, nullptr, 0, q, L, H, true, budget / 4);
        }
        h->range = h->tiled->range();
        h->p_lo = finite_percentile(h->tiled->sample().data(), h->tiled->sample().size(), 2);
        h->p_hi = finite_percentile(h->tiled->sample().data(), h->tiled->sample().size(), 99.9);
        j.set_progress(1);
        *out = h;
    });
    heat_out_ = out;  // handed over when done (polled in heat())
}

void App::collect_heat() {
    if (!heat_job_ || !heat_job_->done()) return;
    if (heat_out_ && *heat_out_) {
        auto h = *heat_out_;
        cache_[h->key] = h;
        cache_order_.push_back(h->key);
        // Keep a few heatmaps (a 4096-token results matrix is ~64 MB plus its pyramid; an
        // attention heatmap at most its tile budget plus ~22 MB).
        size_t bytes = 0;
        for (auto& [k, v] : cache_) bytes += v->bytes();
        while (cache_order_.size() > 1 && bytes > (size_t(700) << 20)) {
            auto victim = cache_.find(cache_order_.front());
            if (victim != cache_.end()) {
                bytes -= victim->second->bytes();
                if (victim->second != current_) cache_.erase(victim);
            }
            cache_order_.erase(cache_order_.begin());
        }
    } else if (!heat_job_->cancelled() && !heat_job_->error().empty()) {
        messages.push_back(heat_job_->error());
        failed_key_ = heat_job_key_;
    }
    heat_job_.reset();
    heat_out_.reset();
}

const Heat* App::heat() {
    collect_heat();
    const std::string key = heat_key();
    if (key.empty()) return nullptr;
    if (current_ && current_->key == key) return current_.get();
    auto it = cache_.find(key);
    if (it != cache_.end()) {
        current_ = it->second;
        return current_.get();
    }
    if (!heat_job_ && failed_key_ != key) start_heat_job(key);
    if (heat_job_ && heat_job_key_ != key) heat_job_->cancel();
    stale_ = failed_key_ != key;
    return current_.get();  // the previous one meanwhile
}

float App::heat_progress() const {
    if (!heat_job_ || heat_job_->done()) return -2;
    return heat_job_->progress();
}

ColorScale App::color_scale(const Heat& h) const {
    ColorScale s;
    if (!auto_range) {
        s.lo = range_lo;
        s.hi = range_hi;
        s.log = log_scale && !h.diverging && range_lo > 0;
        return s;
    }
    if (h.diverging) {
        const float a = std::max({std::fabs(h.p_lo), std::fabs(h.p_hi), 1e-6f});
        return {-a, a, false};
    }
    switch (quantity) {
        case Quantity::Held:
            return {0, 1, false};
        case Quantity::Bits:
            return {0, std::max(16.0f, h.range.hi), false};
        case Quantity::Attention:
        case Quantity::AttentionCum:
            // Top at the 99.9th percentile: a few outliers (attention sinks) saturate instead
            // of flattening everything else.
            if (log_scale) return {std::max(h.p_lo, std::max(1e-6f, h.p_hi * 1e-5f)), h.p_hi, true};
            return {0, h.p_hi, false};
        case Quantity::Score:
            if (log_scale && h.p_lo > 0) return {h.p_lo, h.range.hi, true};
            return {h.p_lo, h.p_hi, false};
    }
    return s;
}

const std::vector<float>* App::step_attention() {
    if (!trace) return nullptr;
    const int64_t s = cur_step();
    if (step_att_step_ == s) return &step_att_;
    stale_ = true;
    if (!step_job_) {
        auto tr = trace;
        auto out = std::make_shared<std::vector<float>>();
        step_job_step_ = s;
        step_out_ = out;
        step_job_ =
            std::make_unique<Job>("attention at step " + std::to_string(s), [tr, s, out](Job& j) {
                j.set_progress(-1);
                *out = attention_at_step(*tr, s);
            });
    }
    return step_att_step_ >= 0 ? &step_att_ : nullptr;
}

void App::reset_view() {
    if (zoom_request && current_ && (*zoom_request)[1] <= double(current_->rows()) &&
        (*zoom_request)[3] <= double(current_->cols())) {
        // --zoom: the first view of the first heatmap that holds it.
        vx0 = (*zoom_request)[0];
        vx1 = (*zoom_request)[1];
        vy0 = (*zoom_request)[2];
        vy1 = (*zoom_request)[3];
        zoom_request.reset();
        view_init = true;
        return;
    }
    const int64_t T = n_tokens();
    vx0 = 0;
    vx1 = double(std::max<int64_t>(1, current_ ? current_->rows() : T));
    vy0 = 0;
    vy1 = double(std::max<int64_t>(1, current_ ? current_->cols() : T));
    view_init = true;
}

void App::load_policies() {
    if (policies_job) return;
    ReplayBackend* be = backend.get();
    auto out = std::make_shared<std::vector<PolicyDesc>>();
    policies_out_ = out;
    policies_job =
        std::make_unique<Job>("listing policies", [be, out](Job&) { *out = be->policies(); });
}

void App::request_replay(const std::string& spec) {
    replay_queue_.push_back(spec);
    open_policy_panel = true;
}

void App::start_replay(const std::string& spec) {
    if (replay_job && !replay_job->done()) return;
    replay_spec = spec;
    replay_result.clear();
    replay_failed = false;
    if (!trace) {
        replay_failed = true;
        replay_result = "cannot run '" + spec + "': open a trace first (kvscope replays a trace)";
        messages.push_back(replay_result);
        return;
    }
    runs_before_replay_ = runs.size();
    const std::string dir = std::filesystem::temp_directory_path().string();
    static int n = 0;
    replay_out =
        dir + "/kvscope-view-" + std::to_string(::getpid()) + "-" + std::to_string(++n) + ".h5";
    ReplayBackend* be = backend.get();
    ReplayRequest req;
    req.trace = trace->info.path;
    req.spec = spec;
    req.out = replay_out;
    // The layer on screen first (none picked: the whole replay at once).
    if (layer >= 0) {
        req.first_layer = layer;
        req.first_out =
            replay_out.substr(0, replay_out.size() - 3) + "-layer" + std::to_string(layer) + ".h5";
    }
    replay_first_out_ = req.first_out;
    replay_first_layer_ = req.first_layer;
    replay_first_seconds_ = -1;
    auto pend = pending_;
    replay_job = std::make_unique<Job>("replay " + spec, [be, req, pend](Job& j) {
        be->run(
            req, [&](float f) { j.set_progress(f); }, j.cancel_flag(),
            [pend](const std::string& path) {
                std::lock_guard<std::mutex> l(pend->mu);
                pend->first_layer_results = path;
            });
    });
}

std::vector<ClosedLoopRow> App::closed_loop_rows() const {
    std::vector<const RunInfo*> infos;
    std::vector<std::string> labels;
    for (const RunEntry& e : runs) {
        infos.push_back(&e.run().info);
        labels.push_back(e.label);
    }
    return view::closed_loop_rows(infos, labels);
}

void App::export_csv(const std::string& path) {
    try {
        const Heat* h = view == ViewKind::ClosedLoop ? nullptr : heat();
        switch (view) {
            case ViewKind::Timeline: {
                if (!h) fail("nothing to export yet");
                write_matrix_csv(
                    path, h->rows(), h->cols(), [h](int64_t r) { return h->row(r); },
                    int64_t(std::floor(vx0)), int64_t(std::ceil(vx1)), int64_t(std::floor(vy0)),
                    int64_t(std::ceil(vy1)), h->row_steps, "step", "token",
                    quantity_name(quantity));
                break;
            }
            case ViewKind::Tokens: {
                if (!h) fail("nothing to export yet");
                CsvWriter w(path);
                w.row({"token", "position", "text",
                       std::string(quantity_name(quantity)) + " at step " +
                           std::to_string(cur_step()),
                       "answer"});
                auto it =
                    std::lower_bound(h->row_steps.begin(), h->row_steps.end(), int32_t(cur_step()));
                const int64_t r = it - h->row_steps.begin();
                const std::vector<float> rv =
                    r < h->rows() ? h->row(r) : std::vector<float>(size_t(h->cols()), kNaN);
                for (int64_t j = 0; j < h->cols(); ++j) {
                    const float v = rv[size_t(j)];
                    w.row({std::to_string(j),
                           trace ? std::to_string(trace->positions[size_t(j)]) : std::to_string(j),
                           trace ? trace->text[size_t(j)] : "", csv_number(v),
                           trace && trace->is_answer(j) ? "1" : "0"});
                }
                w.close();
                break;
            }
            case ViewKind::Grid: {
                CsvWriter w(path);
                const RunData* r = run(run_a);
                if (r) {
                    const int s = std::max(0, r->step_index(cur_step()));
                    std::vector<std::string> hdr = {"layer", "kv_head", "step"};
                    for (int m = 0; m < kNumMetrics; ++m) hdr.push_back(metric_name(Metric(m)));
                    w.row(hdr);
                    for (int l = 0; l < int(r->L); ++l)
                        for (int hh = 0; hh < int(r->H); ++hh) {
                            std::vector<std::string> row = {std::to_string(r->layers[size_t(l)]),
                                                            std::to_string(hh),
                                                            std::to_string(r->steps[size_t(s)])};
                            for (int m = 0; m < kNumMetrics; ++m)
                                row.push_back(csv_number(unit_metric(*r, Metric(m), s, l, hh)));
                            w.row(row);
                        }
                } else if (const auto* a = step_attention()) {
                    w.row({"layer", "kv_head", "step", "attention entropy (nats)",
                           "attention on answer tokens"});
                    const int64_t T = trace->n_tokens();
                    for (size_t l = 0; l < trace->info.layers.size(); ++l)
                        for (int hh = 0; hh < trace->info.n_head_kv; ++hh) {
                            const float* p =
                                a->data() +
                                (l * size_t(trace->info.n_head_kv) + size_t(hh)) * size_t(T);
                            double ans = 0;
                            for (int32_t j : trace->info.task.answer_positions)
                                if (std::isfinite(p[j])) ans += p[j];
                            w.row({std::to_string(trace->info.layers[l]), std::to_string(hh),
                                   std::to_string(cur_step()), csv_number(row_entropy(p, T)),
                                   csv_number(ans)});
                        }
                } else {
                    fail("nothing to export yet");
                }
                w.close();
                break;
            }
            case ViewKind::Curves: {
                CsvWriter w(path);
                std::vector<std::string> hdr = {"run", "spec", "step"};
                for (int c = 0; c < kNumCurves; ++c) hdr.push_back(curve_name(Curve(c)));
                w.row(hdr);
                for (size_t i = 0; i < runs.size(); ++i) {
                    const RunData& r = runs[i].run();
                    std::vector<std::vector<double>> cs;
                    for (int c = 0; c < kNumCurves; ++c) cs.push_back(curve(r, Curve(c), layer));
                    for (int64_t s = 0; s < r.S; ++s) {
                        std::vector<std::string> row = {runs[i].label, r.info.spec,
                                                        std::to_string(r.steps[size_t(s)])};
                        for (auto& c : cs) row.push_back(csv_number(c[size_t(s)]));
                        w.row(row);
                    }
                }
                w.close();
                break;
            }
            case ViewKind::ClosedLoop:
                write_closed_loop_csv(path, closed_loop_rows());
                break;
        }
        last_export = "wrote " + path;
    } catch (const std::exception& e) {
        messages.push_back(e.what());
    }
}

std::string App::status_line() const {
    std::string s;
    for (const auto& j : load_jobs_) s += j->label() + "  ";
    if (heat_job_ && !heat_job_->done()) s += heat_job_->label() + "  ";
    return s;
}

namespace {

bool combo_layer(const char* label, int* layer, const std::vector<int>& choices) {
    const std::string cur = *layer < 0 ? "all (mean)" : std::to_string(*layer);
    bool changed = false;
    if (ImGui::BeginCombo(label, cur.c_str())) {
        if (ImGui::Selectable("all (mean)", *layer < 0)) {
            *layer = -1;
            changed = true;
        }
        for (int l : choices)
            if (ImGui::Selectable(std::to_string(l).c_str(), *layer == l)) {
                *layer = l;
                changed = true;
            }
        ImGui::EndCombo();
    }
    return changed;
}

}  // namespace

void App::draw_sidebar() {
    ImGui::TextDisabled("kvscope-view");
    if (ImGui::CollapsingHeader("Files", ImGuiTreeNodeFlags_DefaultOpen)) {
        if (trace) {
            const auto& I = trace->info;
            ImGui::TextWrapped("trace: %s", I.path.c_str());
            ImGui::TextWrapped("%s, %lld tokens (prompt %lld)", I.model_name.c_str(),
                               (long long)I.n_tokens, (long long)I.prompt_len);
            ImGui::Text("%zu layers, %d heads, %d KV heads, d %d", I.layers.size(), I.n_head,
                        I.n_head_kv, I.head_dim);
            if (I.task.has_answer())
                ImGui::TextWrapped("task %s: answer \"%s\" (%s)", I.task.kind.c_str(),
                                   I.task.answer.c_str(),
                                   I.task.correct ? "model correct" : "model wrong");
            if (!I.complete) ImGui::TextColored(ImVec4(1, 0.6f, 0.2f, 1), "trace is incomplete");
        } else {
            ImGui::TextDisabled("no trace open");
        }
        static char buf[1024] = "";
        ImGui::SetNextItemWidth(-60);
        const bool enter =
            ImGui::InputTextWithHint("##open", "trace.h5 or results.h5", buf, sizeof buf,
                                     ImGuiInputTextFlags_EnterReturnsTrue);
        ImGui::SameLine();
        if ((ImGui::Button("Open") || enter) && buf[0]) {
            open_file(buf);
            buf[0] = 0;
        }
        if (!settings.recent_files.empty() && ImGui::BeginCombo("recent", "reopen...")) {
            for (const auto& f : settings.recent_files)
                if (ImGui::Selectable(f.c_str())) open_file(f);
            ImGui::EndCombo();
        }
    }
    if (ImGui::CollapsingHeader("Runs (policies)", ImGuiTreeNodeFlags_DefaultOpen)) {
        draw_policy_panel(*this);
    }
    if (ImGui::CollapsingHeader("Show", ImGuiTreeNodeFlags_DefaultOpen)) {
        const std::string qn = quantity_name(quantity);
        if (ImGui::BeginCombo("quantity", qn.c_str())) {
            for (int i = 0; i < kNumQuantities; ++i) {
                const Quantity q = Quantity(i);
                const bool ok =
                    quantity_needs_results(q) ? run(run_a) != nullptr : trace != nullptr;
                if (!ok) ImGui::BeginDisabled();
                if (ImGui::Selectable(quantity_name(q), q == quantity)) quantity = q;
                if (!ok) ImGui::EndDisabled();
            }
            ImGui::EndCombo();
        }
        combo_layer("layer", &layer, layer_choices());
        const int nh = n_kv_heads();
        const std::string hn = kv_head < 0 ? "all (mean)" : std::to_string(kv_head);
        if (ImGui::BeginCombo("KV head", hn.c_str())) {
            if (ImGui::Selectable("all (mean)", kv_head < 0)) kv_head = -1;
            for (int h = 0; h < nh; ++h)
                if (ImGui::Selectable(std::to_string(h).c_str(), kv_head == h)) kv_head = h;
            ImGui::EndCombo();
        }
        int s = int(cur_step());
        if (ImGui::SliderInt("step", &s, 0, int(last_step()))) {
            step = s;
            playing = false;
        }
        if (ImGui::Button(playing ? "Pause" : "Play")) playing = !playing;
        ImGui::SameLine();
        if (ImGui::Button("<")) step = std::max<int64_t>(0, cur_step() - 1);
        ImGui::SameLine();
        if (ImGui::Button(">")) step = std::min(last_step(), cur_step() + 1);
        ImGui::SameLine();
        if (ImGui::Button("Last")) step = -1;
        if (playing) {
            step = cur_step() + std::max<int64_t>(1, n_tokens() / 300);
            if (step >= last_step()) {
                step = -1;
                playing = false;
            }
        }
        int rm = int(reduce);
        const char* rn[] = {"mean", "min", "max"};
        if (ImGui::Combo("per pixel", &rm, rn, 3)) reduce = Reduce(rm);
        int cm = int(cmap);
        const char* cn[] = {"viridis", "cividis", "magma", "rdbu"};
        if (ImGui::Combo("colour map", &cm, cn, kNumColorMaps)) cmap = ColorMap(cm);
        ImGui::Checkbox("log scale", &log_scale);
        ImGui::SameLine();
        ImGui::Checkbox("auto range", &auto_range);
        if (!auto_range) {
            ImGui::DragFloat("min", &range_lo, 0.001f, -1e9f, 1e9f, "%.4g");
            ImGui::DragFloat("max", &range_hi, 0.001f, -1e9f, 1e9f, "%.4g");
        } else if (const Heat* h = heat()) {
            const ColorScale cs = color_scale(*h);
            range_lo = cs.lo;
            range_hi = cs.hi;
        }
    }
    if (ImGui::CollapsingHeader("Export")) {
        static char png[512] = "kvscope-view.png", csv[512] = "kvscope-view.csv";
        ImGui::SliderFloat("scale", &settings.export_scale, 1, 4, "%.0fx");
        ImGui::InputText("PNG", png, sizeof png);
        if (ImGui::Button("Export view as PNG")) {
            export_req.png_path = png;
            export_req.scale = std::round(settings.export_scale);
        }
        ImGui::InputText("CSV", csv, sizeof csv);
        if (ImGui::Button("Export data as CSV")) export_csv(csv);
        if (!last_export.empty()) ImGui::TextWrapped("%s", last_export.c_str());
    }
}

void App::draw_status() {
    const ImGuiIO& io = ImGui::GetIO();
    std::vector<Job*> jobs;
    for (auto& j : load_jobs_) jobs.push_back(j.get());
    if (heat_job_ && !heat_job_->done()) jobs.push_back(heat_job_.get());
    if (step_job_ && !step_job_->done()) jobs.push_back(step_job_.get());
    if (replay_job && !replay_job->done()) jobs.push_back(replay_job.get());
    for (Job* j : jobs) {
        const float p = j->progress();
        char ov[128];
        std::snprintf(ov, sizeof ov, "%s (%.0f s)", j->label().c_str(), j->seconds());
        if (p >= 0)
            ImGui::ProgressBar(p, ImVec2(360, 0), ov);
        else
            busy_bar(j->seconds(), ImVec2(360, 0), ov);
        ImGui::SameLine();
    }
    if (jobs.empty()) ImGui::TextDisabled("ready");
    ImGui::SameLine(ImGui::GetWindowWidth() - 150);
    ImGui::TextDisabled("%.0f frames/s", io.Framerate);
}

void App::frame(Window& win) {
    (void)win;
    stale_ = false;
    poll_jobs();
    collect_heat();
    // Hand-over of small jobs.
    if (step_job_ && step_job_->done()) {
        if (step_job_->error().empty() && step_out_) {
            step_att_ = *step_out_;
            step_att_step_ = step_job_step_;
        } else if (!step_job_->error().empty()) {
            messages.push_back(step_job_->error());
            step_att_step_ = step_job_step_;
            step_att_.clear();
        }
        step_job_.reset();
    }
    if (policies_job && policies_job->done()) {
        policies_error = policies_job->error();
        if (policies_error.empty() && policies_out_) policies = *policies_out_;
        policies_job.reset();
        relabel();
    }
    if (replay_job && replay_job->done()) {
        const std::string e = replay_job->error();
        {
            // Finished before its first layer was shown: the whole results only.
            std::lock_guard<std::mutex> l(pending_->mu);
            if (!pending_->first_layer_results.empty()) {
                std::error_code ec;
                std::filesystem::remove(pending_->first_layer_results, ec);
                pending_->first_layer_results.clear();
                replay_first_out_.clear();
            }
        }
        if (e.empty()) {
            open_file(replay_out);
            replay_out_loaded_ = replay_out;
            await_replay_run_ = true;
            replay_result =
                replay_first_seconds_ >= 0
                    ? fmt::format("ok (layer {} shown after {:.2f} s, all layers in {:.2f} s): {}",
                                  replay_first_layer_, replay_first_seconds_, replay_job->seconds(),
                                  replay_out)
                    : fmt::format("ok ({:.2f} s): {}", replay_job->seconds(), replay_out);
        } else {
            replay_failed = true;
            replay_result = e;
            messages.push_back(e);
        }
        replay_job.reset();
    }
    // The run a replay added becomes A and is plotted (once its file is loaded).
    if (await_replay_run_ && runs.size() > runs_before_replay_) {
        run_a = int(runs_before_replay_);
        runs.back().plot = true;
        await_replay_run_ = false;
    }
    // --run-policy: the next queued spec once the files are open and no replay runs.
    if (!replay_queue_.empty() && !replay_job && open_queue_.empty() && load_jobs_.empty() &&
        pending_->traces.empty() && pending_->results.empty()) {
        const std::string spec = replay_queue_.front();
        replay_queue_.erase(replay_queue_.begin());
        start_replay(spec);
        open_policy_panel = true;
    }

    const ImGuiViewport* vp = ImGui::GetMainViewport();
    ImGui::SetNextWindowPos(vp->Pos);
    ImGui::SetNextWindowSize(vp->Size);
    ImGui::PushStyleVar(ImGuiStyleVar_WindowPadding, ImVec2(6, 6));
    ImGui::Begin("kvscope-view", nullptr,
                 ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove |
                     ImGuiWindowFlags_NoBringToFrontOnFocus | ImGuiWindowFlags_NoSavedSettings);
    ImGui::PopStyleVar();
    const float status_h = ImGui::GetFrameHeightWithSpacing() + 4;
    ImGui::BeginChild("sidebar", ImVec2(settings.sidebar_w, -status_h), true);
    draw_sidebar();
    ImGui::EndChild();
    ImGui::SameLine();
    ImGui::BeginChild("main", ImVec2(0, -status_h), false);
    for (size_t i = 0; i < messages.size();) {
        // The button first: after wrapped text it would cover the end of the message.
        ImGui::PushID(int(i));
        const bool close = ImGui::SmallButton("dismiss");
        ImGui::PopID();
        ImGui::SameLine();
        ImGui::PushStyleColor(ImGuiCol_Text, ImVec4(1.0f, 0.45f, 0.4f, 1));
        ImGui::TextWrapped("%s", messages[i].c_str());
        ImGui::PopStyleColor();
        if (close)
            messages.erase(messages.begin() + ptrdiff_t(i));
        else
            ++i;
    }
    if (ImGui::BeginTabBar("views")) {
        const char* labels[] = {"Timeline", "Tokens", "Layer x head", "Curves", "Closed loop"};
        for (int i = 0; i < kNumViews; ++i) {
            const ImGuiTabItemFlags f =
                force_view && view == ViewKind(i) ? ImGuiTabItemFlags_SetSelected : 0;
            if (ImGui::BeginTabItem(labels[i], nullptr, f)) {
                if (!force_view) view = ViewKind(i);
                const ImVec2 a = ImGui::GetCursorScreenPos();
                const ImVec2 avail = ImGui::GetContentRegionAvail();
                view_min = a;
                view_max = ImVec2(a.x + avail.x, a.y + avail.y);
                if (!trace && runs.empty()) {
                    ImGui::TextWrapped(
                        "Open a trace (kvscope capture) and/or a results file (kvscope replay): "
                        "kvscope-view trace.h5 results.h5, or type a path on the left.");
                } else {
                    switch (ViewKind(i)) {
                        case ViewKind::Timeline:
                            draw_timeline(*this);
                            break;
                        case ViewKind::Tokens:
                            draw_tokens(*this);
                            break;
                        case ViewKind::Grid:
                            draw_grid(*this);
                            break;
                        case ViewKind::Curves:
                            draw_curves(*this);
                            break;
                        case ViewKind::ClosedLoop:
                            draw_closed_loop(*this);
                            break;
                    }
                }
                ImGui::EndTabItem();
            }
        }
        force_view = false;
        ImGui::EndTabBar();
    }
    ImGui::EndChild();
    draw_status();
    ImGui::End();
    settings.view = kViewNames[int(view)];
    settings.colormap = colormap_name(cmap);
    settings.reduce = reduce_name(reduce);
    settings.quantity = quantity_name(quantity);
    settings.log_scale = log_scale;
}

}  // namespace kvs::view
