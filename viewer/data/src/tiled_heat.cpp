// A heatmap kept as a coarse pyramid plus an LRU cache of full-resolution tiles (see
// tiled_heat.h).
#include "viewdata/tiled_heat.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace kvs::view {

namespace {

constexpr size_t kEmptyTileBytes = 64;  // the bookkeeping of a tile without finite cells

std::vector<Span> level_spans(double a0, double a1, int n, int64_t len, int k) {
    // Parts of the view cut in level-k cells (as Pyramid::reduce_at), then in level-0 cells.
    const double s = std::ldexp(1.0, -k);
    const int64_t len_k = (len + (int64_t(1) << k) - 1) >> k;
    std::vector<Span> out(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
        const Span p = part_span(a0 * s, a1 * s, n, i, len_k);
        out[size_t(i)] = {std::min(len, p.lo << k), std::min(len, p.hi << k)};
    }
    return out;
}

}  // namespace

TiledHeat::TiledHeat(int64_t rows, int64_t cols, size_t budget_bytes, BlockFn block)
    : rows_(rows), cols_(cols), budget_(budget_bytes), block_(std::move(block)) {
    KVS_ASSERT(rows > 0 && cols > 0 && block_);
    while (((rows_ + (int64_t(1) << k0_) - 1) >> k0_) > kCoarseCells ||
           ((cols_ + (int64_t(1) << k0_) - 1) >> k0_) > kCoarseCells)
        ++k0_;
    band_ = std::max<int64_t>(kTile, int64_t(1) << k0_);
    base_.reset((rows_ + (int64_t(1) << k0_) - 1) >> k0_, (cols_ + (int64_t(1) << k0_) - 1) >> k0_);
    sample_stride_ = std::max<int64_t>(1, rows_ * cols_ / 2000000);
}

void TiledHeat::add_band(int64_t r0, int64_t n, const float* cells) {
    KVS_ASSERT(r0 == fed_ && n > 0 && r0 + n <= rows_ && !coarse_);
    KVS_ASSERT(n == band_ || r0 + n == rows_);
    fed_ += n;
    // Range and the percentile sample.
    const Range br = finite_range(cells, size_t(n * cols_));
    range_.lo = std::min(range_.lo, br.lo);
    range_.hi = std::max(range_.hi, br.hi);
    const int64_t first = r0 * cols_, last = (r0 + n) * cols_;
    for (; sample_next_ < last; sample_next_ += sample_stride_)
        sample_.push_back(cells[sample_next_ - first]);
    // The coarse base: the band covers whole level-k0 rows (band_ is a multiple of 2^k0).
    const int64_t b0 = r0 >> k0_, b1 = (r0 + n + (int64_t(1) << k0_) - 1) >> k0_;
    std::vector<double> sum(size_t((b1 - b0) * base_.cols), 0.0);
    for (int64_t i = 0; i < n; ++i) {
        const int64_t br_ = ((r0 + i) >> k0_) - b0;
        const float* row = cells + i * cols_;
        for (int64_t c = 0; c < cols_; ++c) {
            const float x = row[c];
            if (std::isnan(x)) continue;
            const size_t j = size_t((br_ + b0) * base_.cols + (c >> k0_));
            base_.mn[j] = std::min(base_.mn[j], x);
            base_.mx[j] = std::max(base_.mx[j], x);
            base_.cnt[j] += 1;
            sum[size_t(br_ * base_.cols + (c >> k0_))] += x;
        }
    }
    for (int64_t b = b0; b < b1; ++b)
        for (int64_t c = 0; c < base_.cols; ++c)
            base_.sum[size_t(b * base_.cols + c)] = float(sum[size_t((b - b0) * base_.cols + c)]);
    // Full-resolution tiles while the cache has room (band_ is a multiple of kTile).
    std::lock_guard<std::mutex> lock(mu_);
    for (int64_t t0 = 0; t0 < n; t0 += kTile) {
        const int64_t tn = std::min(kTile, n - t0);
        for (int64_t c0 = 0; c0 < cols_; c0 += kTile) {
            const int64_t cn = std::min(kTile, cols_ - c0);
            bool any = false;
            for (int64_t i = 0; i < tn && !any; ++i)
                for (int64_t c = 0; c < cn; ++c)
                    if (!std::isnan(cells[(t0 + i) * cols_ + c0 + c])) {
                        any = true;
                        break;
                    }
            const TileId id{(r0 + t0) / kTile, c0 / kTile};
            if (!any) {
                insert_locked(id, {});
                continue;
            }
            if (tile_bytes_ + size_t(kTile * kTile) * 4 > budget_) continue;  // recomputed later
            std::vector<float> v(size_t(kTile * kTile), kNaN);
            for (int64_t i = 0; i < tn; ++i)
                std::copy(cells + (t0 + i) * cols_ + c0, cells + (t0 + i) * cols_ + c0 + cn,
                          v.data() + i * kTile);
            insert_locked(id, std::move(v));
        }
    }
}

void TiledHeat::finish() {
    KVS_ASSERT(fed_ == rows_ && !coarse_);
    coarse_ = std::make_unique<Pyramid>(std::move(base_), k0_);
    base_ = PooledLevel{};
}

const TiledHeat::Tile* TiledHeat::find_locked(const TileId& id) const {
    auto it = tiles_.find(id);
    if (it == tiles_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, lru_pos_.at(id));
    return &it->second;
}

void TiledHeat::insert_locked(const TileId& id, std::vector<float> v) const {
    if (tiles_.count(id)) return;
    const size_t b = v.empty() ? kEmptyTileBytes : v.size() * 4;
    while (!lru_.empty() && tile_bytes_ + b > budget_) {
        const TileId victim = lru_.back();
        lru_.pop_back();
        lru_pos_.erase(victim);
        auto it = tiles_.find(victim);
        tile_bytes_ -= it->second.v.empty() ? kEmptyTileBytes : it->second.v.size() * 4;
        tiles_.erase(it);
    }
    tiles_[id].v = std::move(v);
    lru_.push_front(id);
    lru_pos_[id] = lru_.begin();
    tile_bytes_ += b;
}

bool TiledHeat::too_many_locked(int64_t tr0, int64_t tr1, int64_t tc0, int64_t tc1) const {
    size_t n = 0;
    for (int64_t tr = tr0; tr < tr1; ++tr)
        for (int64_t tc = tc0; tc < tc1; ++tc) {
            auto it = tiles_.find({tr, tc});
            n += it != tiles_.end() && it->second.v.empty() ? 0 : 1;
        }
    return n * size_t(kTile * kTile) * 4 > budget_ / 4 * 3;
}

int TiledHeat::level_for(double r0, double r1, double c0, double c1, int n_r, int n_c) const {
    const double s = std::min((r1 - r0) / n_r, (c1 - c0) / n_c);
    const int k = s >= 2 ? int(std::floor(std::log2(s))) : 0;
    return std::clamp(k, 0, coarse_->levels() - 1);
}

std::vector<TiledHeat::TileId> TiledHeat::missing(double r0, double r1, double c0, double c1,
                                                  int n_r, int n_c) const {
    KVS_ASSERT(coarse_ && n_r > 0 && n_c > 0);
    const int k = level_for(r0, r1, c0, c1, n_r, n_c);
    if (k >= k0_) return {};
    const std::vector<Span> sr = level_spans(r0, r1, n_r, rows_, k);
    const std::vector<Span> sc = level_spans(c0, c1, n_c, cols_, k);
    const int64_t tr0 = sr.front().lo / kTile, tr1 = (sr.back().hi + kTile - 1) / kTile;
    const int64_t tc0 = sc.front().lo / kTile, tc1 = (sc.back().hi + kTile - 1) / kTile;
    std::vector<TileId> out;
    std::lock_guard<std::mutex> lock(mu_);
    if (too_many_locked(tr0, tr1, tc0, tc1)) return {};
    for (int64_t tr = tr0; tr < tr1; ++tr)
        for (int64_t tc = tc0; tc < tc1; ++tc)
            if (!tiles_.count({tr, tc})) out.push_back({tr, tc});
    return out;
}

std::vector<float> TiledHeat::reduce(double r0, double r1, double c0, double c1, int n_r, int n_c,
                                     Reduce mode, bool* complete) const {
    KVS_ASSERT(coarse_ && n_r > 0 && n_c > 0);
    if (complete) *complete = true;
    const int k = level_for(r0, r1, c0, c1, n_r, n_c);
    if (k >= k0_) return coarse_->reduce_at(k, r0, r1, c0, c1, n_r, n_c, mode);
    const std::vector<Span> sr = level_spans(r0, r1, n_r, rows_, k);
    const std::vector<Span> sc = level_spans(c0, c1, n_c, cols_, k);
    const int64_t tr0 = sr.front().lo / kTile, tr1 = (sr.back().hi + kTile - 1) / kTile;
    const int64_t tc0 = sc.front().lo / kTile, tc1 = (sc.back().hi + kTile - 1) / kTile;
    const int64_t ntc = tc1 - tc0;
    std::lock_guard<std::mutex> lock(mu_);
    if (too_many_locked(tr0, tr1, tc0, tc1))
        return coarse_->reduce_at(k0_, r0, r1, c0, c1, n_r, n_c, mode);
    std::vector<const float*> grid(size_t((tr1 - tr0) * ntc), nullptr);
    for (int64_t tr = tr0; tr < tr1; ++tr)
        for (int64_t tc = tc0; tc < tc1; ++tc) {
            const Tile* t = find_locked({tr, tc});
            if (!t) {
                if (complete) *complete = false;
                return coarse_->reduce_at(k0_, r0, r1, c0, c1, n_r, n_c, mode);
            }
            grid[size_t((tr - tr0) * ntc + (tc - tc0))] = t->v.empty() ? nullptr : t->v.data();
        }
    std::vector<float> out(size_t(n_r) * size_t(n_c));
    for (int i = 0; i < n_r; ++i) {
        const Span ri = sr[size_t(i)];
        for (int kk = 0; kk < n_c; ++kk) {
            const Span ci = sc[size_t(kk)];
            float mn = INFINITY, mx = -INFINITY;
            double sum = 0;
            int64_t cnt = 0;
            for (int64_t r = ri.lo; r < ri.hi; ++r) {
                const int64_t tr = r / kTile, rr = r % kTile;
                for (int64_t c = ci.lo; c < ci.hi;) {
                    const int64_t tc = c / kTile, cend = std::min(ci.hi, (tc + 1) * kTile);
                    const float* t = grid[size_t((tr - tr0) * ntc + (tc - tc0))];
                    if (t) {
                        const float* row = t + rr * kTile - tc * kTile;
                        for (int64_t cc = c; cc < cend; ++cc) {
                            const float x = row[cc];
                            if (x != x) continue;
                            mn = x < mn ? x : mn;
                            mx = x > mx ? x : mx;
                            sum += x;
                            ++cnt;
                        }
                    }
                    c = cend;
                }
            }
            out[size_t(i) * n_c + kk] = cnt == 0              ? kNaN
                                        : mode == Reduce::Min ? mn
                                        : mode == Reduce::Max ? mx
                                                              : float(sum / double(cnt));
        }
    }
    return out;
}

void TiledHeat::compute(const std::vector<TileId>& tiles, const std::atomic<bool>* cancel) {
    // Runs of neighbouring tiles in one tile row are one block (one read of the rows' inputs).
    std::vector<TileId> todo = tiles;
    std::sort(todo.begin(), todo.end());
    for (size_t a = 0; a < todo.size();) {
        if (cancel && cancel->load()) return;
        size_t b = a + 1;
        while (b < todo.size() && todo[b].tr == todo[a].tr && todo[b].tc == todo[b - 1].tc + 1 &&
               b - a < 8)
            ++b;
        const int64_t r0 = todo[a].tr * kTile, r1 = std::min(rows_, r0 + kTile);
        const int64_t c0 = todo[a].tc * kTile, c1 = std::min(cols_, (todo[b - 1].tc + 1) * kTile);
        std::vector<float> cells(size_t((r1 - r0) * (c1 - c0)));
        block_(r0, r1, c0, c1, cells.data());
        std::lock_guard<std::mutex> lock(mu_);
        for (size_t t = a; t < b; ++t) {
            const int64_t x0 = todo[t].tc * kTile - c0, xn = std::min(kTile, c1 - c0 - x0);
            std::vector<float> v(size_t(kTile * kTile), kNaN);
            bool any = false;
            for (int64_t i = 0; i < r1 - r0; ++i)
                for (int64_t c = 0; c < xn; ++c) {
                    const float x = cells[size_t(i * (c1 - c0) + x0 + c)];
                    v[size_t(i * kTile + c)] = x;
                    any = any || !std::isnan(x);
                }
            if (!any) v.clear();
            insert_locked(todo[t], std::move(v));
            computed_.fetch_add(1);
        }
        a = b;
    }
}

std::vector<float> TiledHeat::row(int64_t r) const {
    KVS_ASSERT(r >= 0 && r < rows_);
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (row_r_ == r) return row_;
        std::vector<float> out(size_t(cols_), kNaN);
        bool all = true;
        for (int64_t tc = 0; tc * kTile < cols_ && all; ++tc) {
            const Tile* t = find_locked({r / kTile, tc});
            if (!t) {
                all = false;
            } else if (!t->v.empty()) {
                const int64_t n = std::min(kTile, cols_ - tc * kTile);
                std::copy(t->v.data() + (r % kTile) * kTile, t->v.data() + (r % kTile) * kTile + n,
                          out.data() + tc * kTile);
            }
        }
        if (all) {
            row_r_ = r;
            row_ = out;
            return out;
        }
    }
    std::vector<float> out(static_cast<size_t>(cols_));
    block_(r, r + 1, 0, cols_, out.data());
    std::lock_guard<std::mutex> lock(mu_);
    row_r_ = r;
    row_ = out;
    return out;
}

float TiledHeat::at(int64_t r, int64_t c) const {
    KVS_ASSERT(r >= 0 && r < rows_ && c >= 0 && c < cols_);
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (row_r_ == r) return row_[size_t(c)];
        if (const Tile* t = find_locked({r / kTile, c / kTile}))
            return t->v.empty() ? kNaN : t->v[size_t((r % kTile) * kTile + c % kTile)];
    }
    float x = kNaN;
    block_(r, r + 1, c, c + 1, &x);
    return x;
}

size_t TiledHeat::bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return tile_bytes_ + (coarse_ ? coarse_->bytes() : base_.bytes()) + sample_.size() * 4 +
           row_.size() * 4;
}

}  // namespace kvs::view
