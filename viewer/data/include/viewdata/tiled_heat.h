// A heatmap too large to keep whole: a [rows, cols] matrix whose cells are computed on demand
// (the attention of a long trace: T x T cells, 268 MB of floats at 8k tokens, 4 GB at 32k).
// Memory is bounded whatever the size:
//   - a pinned coarse pyramid from level k0 up (viewdata/reduce.h's levels), k0 the smallest
//     level with at most kCoarseCells cells per side: at most ~22 MB;
//   - full-resolution tiles of kTile x kTile cells in an LRU cache of at most `budget` bytes
//     (tiles holding no finite cell, such as those above a causal diagonal, cost nothing).
// The matrix is fed once, in row order, as full-width bands (add_band), which builds the coarse
// levels and fills the cache while it has room; afterwards a BlockFn recomputes any block.
// reduce() answers a view from the coarse levels when they are fine enough (the view's level
// >= k0) and from the tiles otherwise; when tiles are missing it says so (complete = false) and
// answers from the coarse level, and compute() (on a worker thread) fills them in. A view that
// would need tiles with data for more than 3/4 of the budget is answered from the coarse level.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "viewdata/matrix.h"
#include "viewdata/reduce.h"

namespace kvs::view {

class TiledHeat {
  public:
    static constexpr int64_t kTile = 256;          // cells per tile side
    static constexpr int64_t kCoarseCells = 1024;  // at most this many cells per side at k0
    // Writes the cells [r0, r1) x [c0, c1) (row-major, r1 - r0 rows of c1 - c0; NaN: no data).
    using BlockFn = std::function<void(int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* out)>;

    TiledHeat(int64_t rows, int64_t cols, size_t budget_bytes, BlockFn block);
    int64_t rows() const { return rows_; }
    int64_t cols() const { return cols_; }
    int base_level() const { return k0_; }
    // Rows fed per add_band() call (the last band may be shorter): a multiple of kTile and 2^k0.
    int64_t band_rows() const { return band_; }

    // The first pass: rows [r0, r0 + n) over every column, r0 where the previous band ended.
    void add_band(int64_t r0, int64_t n, const float* cells);
    // After the last band: builds the coarse levels.
    void finish();

    // As Pyramid::reduce. `complete` (optional) is false when tiles the view needs are missing
    // (the answer is then the coarse level's).
    std::vector<float> reduce(double r0, double r1, double c0, double c1, int n_r, int n_c,
                              Reduce mode, bool* complete = nullptr) const;
    // The tiles reduce() would need for that view and does not have (empty: complete).
    struct TileId {
        int64_t tr = 0, tc = 0;
        bool operator<(const TileId& o) const { return tr != o.tr ? tr < o.tr : tc < o.tc; }
    };
    std::vector<TileId> missing(double r0, double r1, double c0, double c1, int n_r, int n_c) const;
    // Computes the tiles (thread-safe; stops early when *cancel becomes true).
    void compute(const std::vector<TileId>& tiles, const std::atomic<bool>* cancel = nullptr);

    // Row r, columns [0, cols): from the tiles, or computed (the last one is kept).
    std::vector<float> row(int64_t r) const;
    float at(int64_t r, int64_t c) const;

    Range range() const { return range_; }
    // Every n-th finite-or-not cell of the first pass, for percentiles (at most ~2 M values).
    const std::vector<float>& sample() const { return sample_; }
    size_t bytes() const;  // tiles + coarse levels
    size_t budget() const { return budget_; }
    int64_t tiles_computed() const { return computed_.load(); }  // by compute() and row()

  private:
    struct Tile {
        std::vector<float> v;  // kTile x kTile (edge tiles padded with NaN); empty: all NaN
    };
    const Tile* find_locked(const TileId& id) const;  // and marks it used
    void insert_locked(const TileId& id, std::vector<float> v) const;
    int level_for(double r0, double r1, double c0, double c1, int n_r, int n_c) const;
    // Whether the tiles [tr0, tr1) x [tc0, tc1) that may hold data (all but those known to be
    // empty) take more than 3/4 of the budget (then the view is answered from the coarse level,
    // so that computing them never evicts one another).
    bool too_many_locked(int64_t tr0, int64_t tr1, int64_t tc0, int64_t tc1) const;
    std::vector<float> compute_tile(const TileId& id) const;

    int64_t rows_, cols_;
    size_t budget_;
    BlockFn block_;
    int k0_ = 0;
    int64_t band_ = kTile;
    int64_t fed_ = 0;
    PooledLevel base_;
    std::unique_ptr<Pyramid> coarse_;
    Range range_;
    std::vector<float> sample_;
    int64_t sample_stride_ = 1, sample_next_ = 0;

    mutable std::mutex mu_;
    mutable std::map<TileId, Tile> tiles_;
    mutable std::list<TileId> lru_;  // front: most recent
    mutable std::map<TileId, std::list<TileId>::iterator> lru_pos_;
    mutable size_t tile_bytes_ = 0;
    mutable int64_t row_r_ = -1;
    mutable std::vector<float> row_;
    mutable std::atomic<int64_t> computed_{0};
};

}  // namespace kvs::view
