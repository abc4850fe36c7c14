// What the viewer plots, computed from a results run (and its trace): [steps, tokens] matrices
// for the timeline and the token strip, per-unit metrics at a step for the layer x head grid, and
// per-step curves.
//
// A selection is a model layer or all (-1) and a KV head or all (-1); "all" averages over the
// selected units (layer, KV head), except bytes, which add up.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "viewdata/colormap.h"
#include "viewdata/matrix.h"
#include "viewdata/results.h"
#include "viewdata/tiled_heat.h"

namespace kvs::view {

// Timeline quantities.
enum class Quantity { Attention, AttentionCum, Held, Bits, Score };
inline constexpr int kNumQuantities = 5;
const char* quantity_name(Quantity q);  // "attention", "attention (cumulative)", "held", ...
bool quantity_from_name(const std::string& s, Quantity* out);
bool quantity_needs_results(Quantity q);  // held, bits, score

// The units (layer index into run.layers, KV head) a selection covers; empty when the layer was
// not replayed.
struct Unit {
    int l = 0, h = 0;
};
std::vector<Unit> select_units(const RunData& r, int layer, int kv_head);

// [S, T] for a results run. Row s = step steps[s].
//  Held: 1 held, 0 evicted (the fraction of units holding it when aggregated), NaN for j > step;
//  exact at every step, from evicted_at.
//  Bits: exact at every step when the run has bit_events (the width of the token's last event at
//  or before the step, 16 before its first one, where held; 0 where evicted), or when it stores
//  every held token at one width (uniform_bits > 0: eviction-only policies, full). Otherwise
//  (files without bit_events), and for Score: the last checkpoint at or before the step, carried
//  forward (NaN before the first checkpoint and for tokens that arrived after it); 0 bits / NaN
//  score where the token has been evicted by the step (from evicted_at, exact at every step).
Matrix results_matrix(const RunData& r, Quantity q, int layer, int kv_head);
// The cells [s0, s1) x [j0, j1) of results_matrix over `units`, row-major into out.
void results_block(const RunData& r, Quantity q, const std::vector<Unit>& units, int64_t s0,
                   int64_t s1, int64_t j0, int64_t j1, float* out);

// [S, T] for a results run: the fraction of the selected units in which token j is folded into a
// merged entry at step steps[s] (RunData::token_state() == Folded; 1 for one unit), 0 where it is
// not, NaN for j > step. All 0 for a run without merges. The timeline draws it over the held,
// bits and score quantities in the folded colour (kFoldedRgb).
Matrix folded_matrix(const RunData& r, int layer, int kv_head);
void folded_block(const RunData& r, const std::vector<Unit>& units, int64_t s0, int64_t s1,
                  int64_t j0, int64_t j1, float* out);

// The timeline's heatmap of a results quantity as a TiledHeat (memory bounded by
// `budget_bytes` plus a fixed coarse pyramid, like attention_heat()): run ia of fa; with fb,
// A - B (difference()'s cells: the steps both have, by step value); with `folded`, run A's
// folded_matrix() instead of q. The cells are recomputed from the runs (which the heat keeps
// alive) whenever an evicted tile is shown again.
std::unique_ptr<TiledHeat> results_heat(std::shared_ptr<const ResultsFile> fa, int ia,
                                        std::shared_ptr<const ResultsFile> fb, int ib, Quantity q,
                                        int layer, int kv_head, bool folded, size_t budget_bytes);

// The colour of folded tokens in the timeline and the token strip: a pink found in none of the
// colour maps' ends (not viridis / cividis / magma's purple, blue, black or yellow).
inline constexpr Rgb8 kFoldedRgb{255, 64, 200};

// The width token j is held at in unit (l, h) at step t (token index): 0 when not held; from
// bit_events when the run has them, else from the last checkpoint at or before t (-1 when there
// is none or the token arrived after it). `exact` (optional) says which.
int token_bits(const RunData& r, int l, int h, int64_t j, int64_t t, bool* exact = nullptr);

// The one width every held token has at every checkpoint (16 for eviction-only policies), or 0
// when the checkpoints show more than one (a quantizing policy) or none.
int uniform_bits(const RunData& r);

// How exact a results quantity is, for legends: "exact at every step (evicted_at)", "carried
// forward from 16 checkpoints; evictions exact", ...
std::string quantity_provenance(const RunData& r, Quantity q);

// a - b on the rows (steps) both have, by step value: [rows of a, min(cols)], NaN where either is.
// `row_steps_a/b` map rows to step values.
Matrix difference(const Matrix& a, const std::vector<int32_t>& row_steps_a, const Matrix& b,
                  const std::vector<int32_t>& row_steps_b);

// Per-unit metrics at step index s (for the grid).
enum class Metric { Budget, Held, Recall, OutErr, OutCos, Bytes };
inline constexpr int kNumMetrics = 6;
const char* metric_name(Metric m);
float unit_metric(const RunData& r, Metric m, int64_t s, int l, int h);

// Per-step curves: one value per step (index s), over the selected layer (-1 = all layers).
enum class Curve { CacheBytes, Ratio, Recall, OutErr, Held };
inline constexpr int kNumCurves = 5;
const char* curve_name(Curve c);
std::vector<double> curve(const RunData& r, Curve c, int layer);

// For passkey / needle traces: per answer token, the fraction of units holding it at step t.
std::vector<float> answer_kept(const RunData& r, const std::vector<int32_t>& positions, int64_t t);
// Every answer token held in every unit at step t.
bool answer_all_kept(const RunData& r, const std::vector<int32_t>& positions, int64_t t);

}  // namespace kvs::view
