// TiledHeat (bounded-memory heatmaps) against the dense Pyramid over the same matrix, the tiled
// attention of a trace against the dense attention_matrix / cumulative_rows, and the results
// quantities by block against results_matrix / folded_matrix / difference (the dense readable
// references the viewer no longer keeps whole).
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "gguf_writer.h"
#include "synthetic_results.h"
#include "synthetic_trace.h"
#include "viewdata/attention.h"
#include "viewdata/quantities.h"
#include "viewdata/reduce.h"
#include "viewdata/results.h"
#include "viewdata/tiled_heat.h"
#include "viewdata/trace_data.h"

using namespace kvs;
using namespace kvs::view;

namespace {

// rows x cols, NaN above a shifted diagonal and in a few random cells, values spanning decades.
Matrix test_matrix(int64_t rows, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-3, 3);
    Matrix m(rows, cols, kNaN);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
            if (c <= r + 37 && rng() % 97 != 0) m.at(r, c) = std::exp(u(rng));
    return m;
}

std::unique_ptr<TiledHeat> tiled_of(const Matrix& m, size_t budget, int* blocks) {
    auto t = std::make_unique<TiledHeat>(
        m.rows, m.cols, budget,
        [&m, blocks](int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* out) {
            ++*blocks;
            for (int64_t r = r0; r < r1; ++r)
                for (int64_t c = c0; c < c1; ++c) *out++ = m.at(r, c);
        });
    for (int64_t r0 = 0; r0 < m.rows; r0 += t->band_rows())
        t->add_band(r0, std::min(t->band_rows(), m.rows - r0), m.row(r0));
    t->finish();
    return t;
}

// Equal cell by cell: NaN where the reference is NaN, min / max exact, means to float rounding.
void require_same(const std::vector<float>& got, const std::vector<float>& want, Reduce mode) {
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
        if (std::isnan(want[i])) {
            REQUIRE(std::isnan(got[i]));
        } else if (mode == Reduce::Mean) {
            REQUIRE(got[i] == Approx(want[i]).epsilon(1e-5));
        } else {
            REQUIRE(got[i] == want[i]);
        }
    }
}

}  // namespace

TEST_CASE("tiled heat: the dense pyramid's reductions at every zoom, bounded memory", "[cpu]") {
    const Matrix m = test_matrix(1301, 1103, 7);  // odd sizes: partial edge tiles
    const Pyramid ref(&m);
    int blocks = 0;
    auto big = tiled_of(m, size_t(64) << 20, &blocks);
    REQUIRE(big->base_level() == 1);  // 1301 rows: 651 cells at level 1 (<= 1024)
    CHECK(big->range().lo == finite_range(m.v.data(), m.v.size()).lo);
    CHECK(big->range().hi == finite_range(m.v.data(), m.v.size()).hi);
    struct View {
        double r0, r1, c0, c1;
        int nr, nc;
    };
    const View views[] = {{0, 1301, 0, 1103, 400, 300},       // coarse levels
                          {0, 1301, 0, 1103, 97, 61},         // coarser
                          {100.5, 400.2, 50, 300, 600, 500},  // level 0, zoomed in
                          {700, 1301, 3, 1103, 301, 550},     // level 1 = k0
                          {1000, 1290, 1000, 1100, 29, 11}};  // level 3 parts, edge tiles
    for (const View& v : views)
        for (Reduce mode : {Reduce::Mean, Reduce::Min, Reduce::Max}) {
            bool complete = false;
            const std::vector<float> got =
                big->reduce(v.r0, v.r1, v.c0, v.c1, v.nr, v.nc, mode, &complete);
            REQUIRE(complete);
            require_same(got, ref.reduce(v.r0, v.r1, v.c0, v.c1, v.nr, v.nc, mode), mode);
        }
    CHECK(blocks == 0);  // everything fitted in the cache during the first pass
    for (int64_t r : {0, 255, 256, 1300}) {
        const std::vector<float> row = big->row(r);
        for (int64_t c = 0; c < m.cols; ++c)
            REQUIRE((std::isnan(m.at(r, c)) ? std::isnan(row[size_t(c)])
                                            : row[size_t(c)] == m.at(r, c)));
    }

    // A cache of 6 tiles: the first pass keeps the first 6 tiles with data, later views miss
    // theirs, are answered from the coarse level meanwhile, and are exact once computed.
    blocks = 0;
    const size_t six = 6 * size_t(TiledHeat::kTile * TiledHeat::kTile) * 4;
    auto small = tiled_of(m, six, &blocks);
    const View z = {1030, 1200, 530, 700, 170, 170};  // level 0, one tile (4, 2)
    REQUIRE(!small->missing(z.r0, z.r1, z.c0, z.c1, z.nr, z.nc).empty());
    bool complete = true;
    const std::vector<float> coarse =
        small->reduce(z.r0, z.r1, z.c0, z.c1, z.nr, z.nc, Reduce::Max, &complete);
    REQUIRE(!complete);
    require_same(coarse, ref.reduce_at(1, z.r0, z.r1, z.c0, z.c1, z.nr, z.nc, Reduce::Max),
                 Reduce::Max);
    small->compute(small->missing(z.r0, z.r1, z.c0, z.c1, z.nr, z.nc));
    CHECK(blocks >= 1);
    CHECK(small->missing(z.r0, z.r1, z.c0, z.c1, z.nr, z.nc).empty());
    for (Reduce mode : {Reduce::Mean, Reduce::Min, Reduce::Max}) {
        require_same(small->reduce(z.r0, z.r1, z.c0, z.c1, z.nr, z.nc, mode, &complete),
                     ref.reduce(z.r0, z.r1, z.c0, z.c1, z.nr, z.nc, mode), mode);
        REQUIRE(complete);
    }
    // Walking the whole matrix at full resolution evicts as it goes; memory stays bounded.
    // Besides the tiles: the coarse levels and the percentile sample (what a heat with no cache
    // holds), and one cached row.
    const size_t coarse_bytes = tiled_of(m, 0, &blocks)->bytes();
    for (double r0 = 0; r0 < 1301; r0 += 256)
        for (double c0 = 0; c0 < 1103; c0 += 256) {
            const View w = {r0, std::min(1301.0, r0 + 256), c0, std::min(1103.0, c0 + 256), 256,
                            256};
            small->compute(small->missing(w.r0, w.r1, w.c0, w.c1, w.nr, w.nc));
            require_same(small->reduce(w.r0, w.r1, w.c0, w.c1, w.nr, w.nc, Reduce::Min, &complete),
                         ref.reduce(w.r0, w.r1, w.c0, w.c1, w.nr, w.nc, Reduce::Min), Reduce::Min);
            REQUIRE(complete);
            REQUIRE(small->bytes() <= six + coarse_bytes + size_t(m.cols) * 4);
        }
    for (int64_t r : {3, 700, 1299})
        for (int64_t c : {0, 500, 1102})
            REQUIRE((std::isnan(m.at(r, c)) ? std::isnan(small->at(r, c))
                                            : small->at(r, c) == m.at(r, c)));

    // A cache too small for the view: the coarse level answers, and says it is complete.
    auto tiny = tiled_of(m, 1, &blocks);
    const std::vector<float> t =
        tiny->reduce(z.r0, z.r1, z.c0, z.c1, z.nr, z.nc, Reduce::Min, &complete);
    CHECK(complete);
    require_same(t, ref.reduce_at(1, z.r0, z.r1, z.c0, z.c1, z.nr, z.nc, Reduce::Min), Reduce::Min);
    CHECK(tiny->missing(z.r0, z.r1, z.c0, z.c1, z.nr, z.nc).empty());
}

TEST_CASE("tiled heat: the coarse base of a large matrix is at most 1024 cells a side", "[cpu]") {
    int blocks = 0;
    TiledHeat t(5000, 3000, 0, [&](int64_t, int64_t, int64_t, int64_t, float*) { ++blocks; });
    CHECK(t.base_level() == 3);  // 5000 / 8 = 625 <= 1024 < 1250
    CHECK(t.band_rows() == TiledHeat::kTile);
}

TEST_CASE("tiled heat: attention and its cumulative equal the dense matrices", "[cpu]") {
    const std::string path = test::temp_path("tiled_att.h5");
    test::write_synthetic_trace(path, 1500);
    const std::shared_ptr<const TraceData> tr = load_trace(path);
    for (bool cumulative : {false, true})
        for (auto [layer, head] : {std::pair{2, 1}, std::pair{-1, -1}}) {
            INFO("cumulative " << cumulative << " layer " << layer << " head " << head);
            Matrix dense = attention_matrix(*tr, layer, head, {});
            if (cumulative) dense = cumulative_rows(dense);
            const Pyramid ref(&dense);
            // A cache for everything: the first pass's cells, bit for bit the dense ones.
            auto all = attention_heat(tr, layer, head, cumulative, size_t(64) << 20, {});
            REQUIRE(all);
            for (int64_t r : {0, 300, 1499}) {
                const std::vector<float> row = all->row(r);
                for (int64_t c = 0; c < 1500; ++c)
                    REQUIRE((std::isnan(dense.at(r, c)) ? std::isnan(row[size_t(c)])
                                                        : row[size_t(c)] == dense.at(r, c)));
            }
            // No cache: every cell recomputed per block from the lse (and the cumulative from
            // its checkpoints), equal to float rounding.
            auto none = attention_heat(tr, layer, head, cumulative, 0, {});
            REQUIRE(none->tiles_computed() == 0);
            for (int64_t r : {0, 1, 255, 256, 257, 511, 1499}) {
                const std::vector<float> row = none->row(r);
                for (int64_t c = 0; c < 1500; ++c) {
                    if (std::isnan(dense.at(r, c))) {
                        REQUIRE(std::isnan(row[size_t(c)]));
                        continue;
                    }
                    REQUIRE(row[size_t(c)] == Approx(dense.at(r, c)).epsilon(1e-5).margin(1e-7));
                }
                REQUIRE(none->at(r, 0) == Approx(dense.at(r, 0)).epsilon(1e-5).margin(1e-7));
            }
            // A cache of 8 tiles: a zoomed view (level 0 < k0 = 1) misses its tiles, which are
            // recomputed per block (exact to float rounding); then the view is complete.
            const size_t eight = 8 * size_t(TiledHeat::kTile * TiledHeat::kTile) * 4;
            auto some = attention_heat(tr, layer, head, cumulative, eight, {});
            REQUIRE(some->base_level() == 1);
            const double r0 = 1100.5, r1 = 1400, c0 = 300, c1 = 600;
            REQUIRE(!some->missing(r0, r1, c0, c1, 300, 300).empty());
            some->compute(some->missing(r0, r1, c0, c1, 300, 300));
            REQUIRE(some->tiles_computed() >= 1);
            bool complete = false;
            for (Reduce mode : {Reduce::Mean, Reduce::Max}) {
                const std::vector<float> got =
                    some->reduce(r0, r1, c0, c1, 300, 300, mode, &complete);
                REQUIRE(complete);
                const std::vector<float> want = ref.reduce(r0, r1, c0, c1, 300, 300, mode);
                for (size_t i = 0; i < got.size(); ++i)
                    REQUIRE((std::isnan(want[i])
                                 ? std::isnan(got[i])
                                 : got[i] == Approx(want[i]).epsilon(1e-5).margin(1e-7)));
            }
        }
    // Cancelled: nothing.
    std::atomic<bool> cancel{true};
    CHECK(attention_heat(tr, -1, -1, false, 1 << 20, {}, &cancel) == nullptr);
    CHECK_THROWS_WITH(attention_heat(tr, 7, 0, false, 1 << 20, {}),
                      "trace '" + path + "': layer 7 was not captured");
}

namespace {

void require_equal_cells(const float* got, const Matrix& want, int64_t s0, int64_t s1, int64_t j0,
                         int64_t j1) {
    for (int64_t s = s0; s < s1; ++s)
        for (int64_t j = j0; j < j1; ++j) {
            const float g = got[(s - s0) * (j1 - j0) + (j - j0)], w = want.at(s, j);
            REQUIRE((std::isnan(w) ? std::isnan(g) : g == w));
        }
}

}  // namespace

TEST_CASE("tiled heat: results quantities by block equal the whole matrices", "[cpu]") {
    const std::string path = test::temp_path("tiled_res.h5");
    test::SyntheticRun a, b, m;
    a.T = b.T = m.T = 600;
    b.policy = "h2o";
    b.budget = 40;
    b.bit_events = false;  // bits and scores carried forward from checkpoints
    m.fold_every = 3;      // merged entries: the folded overlay
    test::ResultsOptions o;
    o.schema_version = 3;
    test::write_synthetic_results(path, {a, b, m}, o);
    const auto f = std::make_shared<const ResultsFile>(read_results(path));
    const RunData &ra = f->runs[0], &rb = f->runs[1], &rm = f->runs[2];
    // Blocks at odd offsets, by every quantity, one unit and all: the whole matrix's cells.
    const std::pair<int64_t, int64_t> rows[] = {{0, 600}, {37, 301}, {599, 600}, {256, 512}};
    const std::pair<int64_t, int64_t> cols[] = {{0, 600}, {5, 17}, {300, 599}};
    for (const RunData* r : {&ra, &rb, &rm})
        for (Quantity q : {Quantity::Held, Quantity::Bits, Quantity::Score})
            for (auto [layer, head] : {std::pair{2, 1}, std::pair{-1, -1}}) {
                const Matrix whole = results_matrix(*r, q, layer, head);
                const Matrix folded = folded_matrix(*r, layer, head);
                const std::vector<Unit> units = select_units(*r, layer, head);
                for (auto [s0, s1] : rows)
                    for (auto [j0, j1] : cols) {
                        std::vector<float> out(size_t((s1 - s0) * (j1 - j0)));
                        results_block(*r, q, units, s0, s1, j0, j1, out.data());
                        require_equal_cells(out.data(), whole, s0, s1, j0, j1);
                        folded_block(*r, units, s0, s1, j0, j1, out.data());
                        require_equal_cells(out.data(), folded, s0, s1, j0, j1);
                    }
            }
    // The heats: A, A - B and the folded overlay, kept (64 MB) or recomputed per row (no cache).
    for (size_t budget : {size_t(64) << 20, size_t(0)}) {
        auto held = results_heat(f, 0, nullptr, 0, Quantity::Held, -1, -1, false, budget);
        auto diff = results_heat(f, 0, f, 1, Quantity::Bits, -1, -1, false, budget);
        auto fold = results_heat(f, 2, nullptr, 0, Quantity::Held, 2, 0, true, budget);
        const Matrix want_held = results_matrix(ra, Quantity::Held, -1, -1);
        const Matrix want_diff = difference(results_matrix(ra, Quantity::Bits, -1, -1), ra.steps,
                                            results_matrix(rb, Quantity::Bits, -1, -1), rb.steps);
        const Matrix want_fold = folded_matrix(rm, 2, 0);
        REQUIRE(diff->rows() == want_diff.rows);
        REQUIRE(diff->cols() == want_diff.cols);
        for (int64_t s : {int64_t(0), int64_t(1), int64_t(300), ra.S - 1}) {
            require_equal_cells(held->row(s).data(), want_held, s, s + 1, 0, 600);
            require_equal_cells(diff->row(s).data(), want_diff, s, s + 1, 0, want_diff.cols);
            require_equal_cells(fold->row(s).data(), want_fold, s, s + 1, 0, 600);
        }
        CHECK(held->range().hi == 1.0f);
    }
}
