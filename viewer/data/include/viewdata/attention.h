// Attention from a trace's stored q and k, for a trace without results: p(t, j) = the softmax
// over pos[j] <= pos[t] of attn_scale * q_t . k_j (what full attention gave key j at query t,
// recomputed from the stored rows by kernels/attend.h; it matches exp(s - lse) with the trace's
// lse up to the storage rounding of q and k). A selection is one captured layer or all (-1), one KV
// head or all (-1); a KV head's value is the mean over the query heads that read it (as results
// files report units), "all" the mean over the selected units.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <vector>

#include "viewdata/matrix.h"
#include "viewdata/tiled_heat.h"
#include "viewdata/trace_data.h"

namespace kvs::view {

// Called with the fraction done in [0, 1]; a job stops early (returning what it has, and the
// caller discards it) when `cancel` becomes true.
using ProgressFn = std::function<void(float)>;

// [T steps, T tokens]: row t = query at step t, column j = key token j; NaN above the diagonal
// (j not visible to t). `layer` is a model layer index.
Matrix attention_matrix(const TraceData& tr, int layer, int kv_head, const ProgressFn& progress,
                        const std::atomic<bool>* cancel = nullptr);

// The same matrix (or its cumulative_rows() when `cumulative`) as a TiledHeat: memory bounded
// by `budget_bytes` of full-resolution tiles plus a fixed coarse pyramid and O(T) side data (the
// lse of every selected (layer, query head, row); for the cumulative, the column sums at <= 256
// checkpoint rows), whatever T. Tiles evicted from the cache are recomputed from the trace:
// the one routine over the tile's keys, rescaled by the row's lse over all keys, equal to the
// first pass's cells to float rounding. nullptr when cancelled.
std::unique_ptr<TiledHeat> attention_heat(std::shared_ptr<const TraceData> trace, int layer,
                                          int kv_head, bool cumulative, size_t budget_bytes,
                                          const ProgressFn& progress,
                                          const std::atomic<bool>* cancel = nullptr);

// The cumulative attention each token has received up to step t (H2O's accumulated score):
// out(t, j) = sum_{t' <= t} p(t', j). Same shape and NaN pattern.
Matrix cumulative_rows(const Matrix& p);

// Attention of the query at step t over every token, for each captured layer and KV head:
// [L, n_head_kv, T] (mean over each KV head's query heads), NaN where j is not visible.
std::vector<float> attention_at_step(const TraceData& tr, int64_t t);

// Entropy (nats) of an attention row over its finite entries.
double row_entropy(const float* p, int64_t n);

}  // namespace kvs::view
