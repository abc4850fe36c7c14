// The timeline texture's region: wider than the view while panning, exact at rest.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "viewdata/reduce.h"
#include "viewdata/view_cache.h"

using namespace kvs::view;

TEST_CASE("axis_region without margins is the view reduce() gets", "[cpu]") {
    // Zoomed out: the view itself, px bins.
    const AxisRegion b = axis_region_exact(10.25, 3000.75, 4096, 700);
    CHECK(!b.cells);
    CHECK(b.r0 == 10.25);
    CHECK(b.r1 == 3000.75);
    CHECK(b.n == 700);
    // Zoomed in: the whole cells in view.
    const AxisRegion c = axis_region_exact(10.25, 500.5, 4096, 700);
    CHECK(c.cells);
    CHECK(c.r0 == 10);
    CHECK(c.r1 == 501);
    CHECK(c.n == 491);
    CHECK(axis_region_is_exact(b, 10.25, 3000.75, 4096, 700));
    CHECK(axis_region_is_exact(c, 10.25, 500.5, 4096, 700));
}

TEST_CASE("axis_region margins, clamps and cache hits", "[cpu]") {
    SECTION("zoomed in: whole cells on each side, clamped to the data") {
        const AxisRegion r = axis_region(1000.5, 2000.5, 4096, 1400, 1.0, 8192);
        CHECK(r.cells);
        CHECK(r.r0 == 0);     // 1000 - 1001 clamped
        CHECK(r.r1 == 3002);  // 2001 + 1001
        CHECK(r.n == 3002);
        CHECK(axis_region_covers(r, 1500.25, 2500.25, 4096, 1400));  // panned
        CHECK(axis_region_covers(r, 1600.0, 1700.0, 4096, 1400));    // zoomed in further
        CHECK(axis_region_is_exact(r, 1600.0, 1700.0, 4096, 1400));  // texels are cells
        CHECK(!axis_region_covers(r, 2100.0, 3100.0, 4096, 1400));   // left the region
        CHECK(!axis_region_covers(r, 0, 3000, 4096, 1400));          // zoomed out: binned
        const AxisRegion e = axis_region(4000, 4096, 4096, 1400, 1.0, 8192);
        CHECK(e.r1 == 4096);
        CHECK(e.r0 == 4000 - 96);
    }
    SECTION("zoomed out: whole bins of the view's width, the view's ends kept") {
        const double lo = 1000.3, hi = 3000.3;
        const int px = 800;
        const double w = (hi - lo) / px;
        const AxisRegion r = axis_region(lo, hi, 8192, px, 1.0, 8192);
        CHECK(!r.cells);
        CHECK(r.w == w);
        CHECK(r.n == px + 400 + 800);  // floor(1000.3 / 2.5) = 400 bins fit on the left
        CHECK(r.r0 == Approx(lo - 400 * w));
        CHECK(r.r1 == Approx(hi + 800 * w));
        // The bins are the view's: bin k0 + i starts where the view's pixel i starts.
        for (int i : {0, 1, 17, 799})
            CHECK(r.r0 + (r.r1 - r.r0) / r.n * (400 + i) == Approx(lo + w * i).epsilon(1e-12));
        CHECK(axis_region_u(r, lo) == Approx(400.0 / r.n));
        CHECK(axis_region_u(r, hi) == Approx(1200.0 / r.n));
        // Panned at the same zoom (up to rounding of the width): served, but not exact.
        const double d = 333.7;
        CHECK(axis_region_covers(r, lo + d, hi + d, 8192, px));
        CHECK(!axis_region_is_exact(r, lo + d, hi + d, 8192, px));
        CHECK(axis_region_covers(r, (lo + 0.1) - 0.1, (hi + 0.1) - 0.1, 8192, px));
        // Out of the region, another zoom, another plot size: rebuilt.
        CHECK(!axis_region_covers(r, lo + 2100, hi + 2100, 8192, px));
        CHECK(!axis_region_covers(r, lo, hi + 1, 8192, px));
        CHECK(!axis_region_covers(r, lo, hi, 8192, px + 1));
        CHECK(!axis_region_covers(AxisRegion{}, lo, hi, 8192, px));
        // Clamped to the data at the end, and to max_n texels.
        const AxisRegion e = axis_region(8192 - 2000, 8192, 8192, px, 1.0, 8192);
        CHECK(e.r1 == 8192);
        CHECK(e.n == px + px);
        const AxisRegion s = axis_region(lo, hi, 8192, px, 10.0, 1000);
        CHECK(s.n == px + 100 + 100);
    }
}

TEST_CASE("a region's bins reduce like the view's own pixels", "[cpu]") {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    Matrix m(3000, 64);
    for (int64_t r = 0; r < m.rows; ++r)
        for (int64_t c = 0; c < m.cols; ++c) m.at(r, c) = u(rng);
    const Pyramid p(&m);
    const double lo = 700.6, hi = 1500.6;
    const int px = 150;
    const AxisRegion r = axis_region(lo, hi, m.rows, px, 1.0, 8192);
    REQUIRE(!r.cells);
    const int k0 = int(std::lround((lo - r.r0) / r.w));
    for (Reduce mode : {Reduce::Mean, Reduce::Max}) {
        const std::vector<float> view = p.reduce(lo, hi, 0, 64, px, 8, mode);
        const std::vector<float> reg = p.reduce(r.r0, r.r1, 0, 64, r.n, 8, mode);
        // All but the view's outer pixels (which take the cells only partly in view).
        for (int i = 1; i + 1 < px; ++i)
            for (int c = 0; c < 8; ++c)
                CHECK(reg[static_cast<size_t>((k0 + i) * 8 + c)] ==
                      view[static_cast<size_t>(i * 8 + c)]);
    }
}
