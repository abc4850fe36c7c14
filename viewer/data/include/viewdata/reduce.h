// Reduction of a [rows, cols] matrix to a pixel grid: each output cell is the min, max or mean
// of the source cells it covers (NaN cells ignored; NaN when it covers none). This is how the
// heatmaps stay responsive: a 4096 x 4096 matrix is drawn as a texture of at most the panel's
// pixels, never one rectangle per cell (Tracy's per-pixel min/max downsampling).
//
// Which source cells an output cell covers: the view [a0, a1) along an axis (in source cells,
// fractional) is cut into n equal parts; part i spans [a, b) and covers the source cells
// [round(a), round(b)) -- so the parts partition the visible cells exactly when each part is at
// least one cell wide (a spike is never lost), the first and last parts also taking the cells
// only partly in view -- or, when a part is narrower than one cell (zoomed in), the single cell
// under its centre.
//
// Pyramid keeps 2x2-pooled levels (min, max, sum, count) so that a reduction reads about one
// to four cells per output pixel whatever the zoom: level k is the exact reduction of
// 2^k x 2^k blocks, and reduce() works at the coarsest level whose cells are no wider than a
// pixel, cutting the view in level-k cells by the rule above.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "viewdata/matrix.h"

namespace kvs::view {

enum class Reduce { Mean, Min, Max };
const char* reduce_name(Reduce r);  // "mean", "min", "max"
bool reduce_from_name(const std::string& s, Reduce* out);

struct Span {
    int64_t lo = 0, hi = 0;  // source cells [lo, hi); empty when lo >= hi
};
// Part i of n of the view [a0, a1) over an axis of `len` cells, clamped to [0, len).
Span part_span(double a0, double a1, int n, int i, int64_t len);

// Reference implementation: out [n_r, n_c] from the matrix directly.
std::vector<float> reduce_brute(const Matrix& m, double r0, double r1, double c0, double c1,
                                int n_r, int n_c, Reduce mode);

// One pooled level: per cell the min, max, sum and count of the finite source cells it covers
// (count 0: none; then min = +inf, max = -inf, sum = 0).
struct PooledLevel {
    int64_t rows = 0, cols = 0;
    std::vector<float> mn, mx, sum, cnt;
    void reset(int64_t r, int64_t c);  // sized and empty
    size_t bytes() const { return (mn.size() + mx.size() + sum.size() + cnt.size()) * 4; }
};

class Pyramid {
  public:
    Pyramid() = default;
    explicit Pyramid(const Matrix* m);  // keeps the pointer: m must outlive the pyramid
    // Levels base_level, base_level + 1, ... only, from level base_level given pooled (a heatmap
    // whose full-resolution cells are not kept: viewdata/tiled_heat.h). Levels below it do not
    // exist: reduce() and reduce_at() use base_level for any finer view.
    Pyramid(PooledLevel base, int base_level);
    int levels() const { return first_ + int(lv_.size()); }
    int first_level() const { return m_ ? 0 : first_; }
    // The level reduce() uses for `span_r` x `span_c` source cells per output cell.
    int level_for(double span_r, double span_c) const;
    int64_t level_rows(int k) const;
    int64_t level_cols(int k) const;
    // Output [n_r, n_c] of the view [r0, r1) x [c0, c1) (source cells), on the calling thread.
    std::vector<float> reduce(double r0, double r1, double c0, double c1, int n_r, int n_c,
                              Reduce mode) const;
    // The same at a given level (tests compare it with reduce_brute on level-0 cells).
    std::vector<float> reduce_at(int k, double r0, double r1, double c0, double c1, int n_r,
                                 int n_c, Reduce mode) const;
    size_t bytes() const;  // the pooled levels (not the matrix)

  private:
    void build_from(int64_t rows, int64_t cols);  // pools lv_.back() (or m_) up to 1 x 1
    const Matrix* m_ = nullptr;
    int first_ = 1;                // the level of lv_[0]
    std::vector<PooledLevel> lv_;  // levels first_, first_ + 1, ...
};

}  // namespace kvs::view
