// Reductions to a pixel grid against brute force on odd sizes, and colour maps.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "viewdata/colormap.h"
#include "viewdata/reduce.h"

using namespace kvs::view;

namespace {

Matrix random_matrix(int64_t rows, int64_t cols, uint32_t seed, bool causal) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 2.0f);
    Matrix m(rows, cols);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) m.at(r, c) = (causal && c > r) ? kNaN : u(rng);
    return m;
}

// Brute-force aggregate over level-0 cells [r0, r1) x [c0, c1).
float aggregate(const Matrix& m, int64_t r0, int64_t r1, int64_t c0, int64_t c1, Reduce mode) {
    double sum = 0, n = 0;
    float mn = INFINITY, mx = -INFINITY;
    for (int64_t r = r0; r < std::min(r1, m.rows); ++r)
        for (int64_t c = c0; c < std::min(c1, m.cols); ++c) {
            const float v = m.at(r, c);
            if (std::isnan(v)) continue;
            sum += v;
            n += 1;
            mn = std::min(mn, v);
            mx = std::max(mx, v);
        }
    if (n == 0) return kNaN;
    return mode == Reduce::Mean ? float(sum / n) : mode == Reduce::Min ? mn : mx;
}

bool same(float a, float b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    return std::fabs(a - b) <= 1e-5f * (1 + std::fabs(b));
}

}  // namespace

TEST_CASE("reduce: the parts of a view partition the visible cells", "[cpu]") {
    for (int64_t len : {1, 19, 111, 989})
        for (int n : {1, 7, 64, 1000}) {
            int64_t next = 0;
            for (int i = 0; i < n; ++i) {
                const Span s = part_span(0, double(len), n, i, len);
                if (double(len) / n >= 1) {
                    REQUIRE(s.lo == next);  // contiguous, no overlap
                    REQUIRE(s.hi > s.lo);
                    next = s.hi;
                } else {
                    REQUIRE(s.hi == s.lo + 1);  // zoomed in: one cell each
                }
            }
            if (double(len) / n >= 1) REQUIRE(next == len);
        }
}

TEST_CASE("reduce: brute force matches a direct computation, pyramid levels match", "[cpu]") {
    struct Case {
        int64_t rows, cols;
        double r0, r1, c0, c1;
        int n_r, n_c;
    };
    const Case cases[] = {
        {19, 111, 0, 19, 0, 111, 7, 13},         {111, 19, 0, 111, 0, 19, 13, 19},
        {989, 111, 3.5, 900.2, 10, 101, 64, 17}, {1, 1, 0, 1, 0, 1, 3, 5},
        {111, 111, -5, 130, -2, 60, 33, 41},     {257, 255, 0, 257, 0, 255, 5, 3},
        {19, 19, 2.2, 4.9, 3.1, 6.3, 11, 9},  // zoomed in: pixels narrower than cells
    };
    int seed = 0;
    for (const Case& cs : cases)
        for (bool causal : {false, true}) {
            const Matrix m = random_matrix(cs.rows, cs.cols, uint32_t(++seed), causal);
            const Pyramid p(&m);
            for (Reduce mode : {Reduce::Mean, Reduce::Min, Reduce::Max}) {
                const auto brute =
                    reduce_brute(m, cs.r0, cs.r1, cs.c0, cs.c1, cs.n_r, cs.n_c, mode);
                // Brute force = the aggregate over the cells part_span names.
                for (int i = 0; i < cs.n_r; ++i)
                    for (int k = 0; k < cs.n_c; ++k) {
                        const Span a = part_span(cs.r0, cs.r1, cs.n_r, i, m.rows);
                        const Span b = part_span(cs.c0, cs.c1, cs.n_c, k, m.cols);
                        REQUIRE(same(brute[size_t(i * cs.n_c + k)],
                                     aggregate(m, a.lo, a.hi, b.lo, b.hi, mode)));
                    }
                // Level 0 of the pyramid is the brute force.
                const auto p0 = p.reduce_at(0, cs.r0, cs.r1, cs.c0, cs.c1, cs.n_r, cs.n_c, mode);
                for (size_t i = 0; i < brute.size(); ++i) REQUIRE(same(p0[i], brute[i]));
                // Level k: each output cell aggregates the level-0 cells under its level-k cells.
                for (int lvl = 1; lvl < std::min(p.levels(), 4); ++lvl) {
                    const auto pk =
                        p.reduce_at(lvl, cs.r0, cs.r1, cs.c0, cs.c1, cs.n_r, cs.n_c, mode);
                    const double s = std::ldexp(1.0, -lvl);
                    for (int i = 0; i < cs.n_r; ++i)
                        for (int k = 0; k < cs.n_c; ++k) {
                            const Span a =
                                part_span(cs.r0 * s, cs.r1 * s, cs.n_r, i, p.level_rows(lvl));
                            const Span b =
                                part_span(cs.c0 * s, cs.c1 * s, cs.n_c, k, p.level_cols(lvl));
                            const float want = aggregate(m, a.lo << lvl, a.hi << lvl, b.lo << lvl,
                                                         b.hi << lvl, mode);
                            INFO("level " << lvl << " cell " << i << "," << k);
                            REQUIRE(same(pk[size_t(i * cs.n_c + k)], want));
                        }
                }
            }
        }
}

TEST_CASE("reduce: a full zoom-out keeps the extremes and the mean", "[cpu]") {
    const Matrix m = random_matrix(989, 111, 5, true);
    const Pyramid p(&m);
    const auto mx = p.reduce(0, 989, 0, 111, 1, 1, Reduce::Max);
    const auto mn = p.reduce(0, 989, 0, 111, 1, 1, Reduce::Min);
    const auto me = p.reduce(0, 989, 0, 111, 1, 1, Reduce::Mean);
    const Range r = finite_range(m.v.data(), m.v.size());
    CHECK(mx[0] == r.hi);
    CHECK(mn[0] == r.lo);
    CHECK(me[0] == Approx(aggregate(m, 0, 989, 0, 111, Reduce::Mean)).epsilon(1e-4));
    CHECK(p.level_for(989.0 / 500, 111.0 / 100) == 0);
    CHECK(p.level_for(8.5, 17) == 3);
}

TEST_CASE("colour maps: endpoints, names, scaling", "[cpu]") {
    // matplotlib's endpoints: viridis #440154 -> #fde725, cividis #00224e -> #fee838.
    const Rgb8 v0 = colormap_at(ColorMap::Viridis, 0), v1 = colormap_at(ColorMap::Viridis, 1);
    CHECK((v0.r == 68 && v0.g == 1 && v0.b == 84));
    CHECK((v1.r == 253 && v1.g == 231 && v1.b == 37));
    const Rgb8 c0 = colormap_at(ColorMap::Cividis, 0), c1 = colormap_at(ColorMap::Cividis, 1);
    CHECK((c0.r == 0 && c0.g == 34 && c0.b == 78));
    CHECK((c1.r == 254 && c1.g == 232 && c1.b == 56));
    // Perceptually ordered: luminance rises monotonically along viridis, cividis and magma.
    for (ColorMap cm : {ColorMap::Viridis, ColorMap::Cividis, ColorMap::Magma}) {
        double prev = -1;
        for (int i = 0; i <= 16; ++i) {
            const Rgb8 c = colormap_at(cm, float(i) / 16);
            const double y = 0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b;
            CHECK(y > prev);
            prev = y;
        }
    }
    // The diverging map is light in the middle, blue below, red above.
    const Rgb8 lo = colormap_at(ColorMap::RdBu, 0), mid = colormap_at(ColorMap::RdBu, 0.5f),
               hi = colormap_at(ColorMap::RdBu, 1);
    CHECK(lo.b > lo.r);
    CHECK(hi.r > hi.b);
    CHECK(mid.g > 230);
    for (int i = 0; i < kNumColorMaps; ++i) {
        ColorMap c;
        REQUIRE(colormap_from_name(colormap_name(ColorMap(i)), &c));
        CHECK(c == ColorMap(i));
    }
    ColorMap c;
    CHECK_FALSE(colormap_from_name("jet", &c));
    ColorScale s{0.001f, 1.0f, true};
    CHECK(s.normalize(0.001f) == Approx(0));
    CHECK(s.normalize(1) == Approx(1));
    CHECK(s.normalize(0.0316227766f) == Approx(0.5).margin(1e-4));
    CHECK(s.normalize(0) == 0);  // <= 0 on a log scale: the bottom
    ColorScale lin{-1, 1, false};
    CHECK(lin.normalize(0) == Approx(0.5));
    CHECK(lin.normalize(5) == 1);
    // Transposed colouring: texel (x = i, y = k) = v[i, k]; NaN gets its own colour.
    const float v[6] = {0, 1, kNaN, 0.5f, 0, 1};  // [2, 3]
    std::vector<uint32_t> px;
    colorize_transposed(v, 2, 3, ColorMap::Viridis, ColorScale{0, 1, false}, 0x11223344u, &px);
    REQUIRE(px.size() == 6);
    CHECK(px[0] == pack_rgba(colormap_at(ColorMap::Viridis, 0)));     // (0, 0)
    CHECK(px[1] == pack_rgba(colormap_at(ColorMap::Viridis, 0.5f)));  // (1, 0) = v[1, 0]
    CHECK(px[4] == 0x11223344u);                                      // (0, 2) = v[0, 2] NaN
    CHECK(px[5] == pack_rgba(colormap_at(ColorMap::Viridis, 1)));     // (1, 2)
}
