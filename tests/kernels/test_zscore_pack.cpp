// zscore_pack (seed 001's mean / std quantizer, kernels/include/kernels/quant_pack.h "z-score
// codes"): a hand-computed group, the seed's formula evaluated independently in double on random
// rows of odd sizes, the byte count and decoding shared with quant_pack, clipping of outliers,
// constant groups, NaN, bad arguments.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/quant_pack.h"

using namespace kvs::kernels;
using kvs_test::Rng;

namespace {

std::vector<float> roundtrip(const std::vector<float>& x, int n_tok, int d, int bits, int g,
                             float s, Status* st = nullptr) {
    std::vector<uint8_t> buf(quant_packed_bytes(n_tok, d, bits, g, Axis::per_token), 0xAB);
    const Status r = zscore_pack_cpu(x.data(), n_tok, d, bits, g, s, buf.data());
    if (st) *st = r;
    std::vector<float> y(x.size());
    REQUIRE(quant_unpack_cpu(buf.data(), n_tok, d, bits, g, Axis::per_token, y.data()) ==
            Status::ok);
    return y;
}

// The seed's formula in double: round((x - mu) / sigma * h / s) * s * sigma / h + mu, the code
// clipped to [-h, h].
double seed_rule(double x, double mu, double sigma, int bits, double s) {
    const double h = std::pow(2.0, bits - 1) - 1;
    if (sigma == 0) return mu;
    const double c = std::max(-h, std::min(h, std::nearbyint((x - mu) / sigma * h / s)));
    return c * s * sigma / h + mu;
}

}  // namespace

TEST_CASE("zscore_pack: a hand-computed group of four", "[cpu][quant]") {
    // [1, 2, 3, 4], 2 bits (h = 1), s = 1: mu = 2.5, sigma = sqrt(1.25) = 1.11803; step = sigma
    // rounded up to fp16 = 1.1181640625; zero = 2.5 - 1.1181640625 = 1.3818359375 (an fp16).
    // Codes: (1 - z)/step = -0.34 -> 0; (2 - z)/step = 0.55 -> 1; 1.45 -> 1; 2.34 -> 2.
    const std::vector<float> y = roundtrip({1, 2, 3, 4}, 1, 4, 2, 4, 1.0f);
    CHECK(y[0] == 1.3818359375f);
    CHECK(y[1] == 2.5f);
    CHECK(y[2] == 2.5f);
    CHECK(y[3] == 1.3818359375f + 2 * 1.1181640625f);
}

TEST_CASE("zscore_pack: the seed's formula, bytes and decoding of quant_pack, odd sizes",
          "[cpu][quant]") {
    Rng rng(11);
    for (int bits : {2, 4, 8}) {
        for (int d : {1, 7, 64, 65}) {
            for (int g : {1, 5, 32, 64}) {
                for (float s : {1.0f, 2.5f, 4.0f}) {
                    const int n_tok = 3;
                    std::vector<float> x(size_t(n_tok) * d);
                    for (auto& v : x) v = 0.3f + 1.7f * rng.normal();
                    const std::vector<float> y = roundtrip(x, n_tok, d, bits, g, s);
                    for (int t = 0; t < n_tok; ++t)
                        for (int c0 = 0; c0 < d; c0 += g) {
                            const int c1 = std::min(d, c0 + g);
                            double mu = 0, var = 0;
                            for (int c = c0; c < c1; ++c) mu += x[size_t(t) * d + c];
                            mu /= (c1 - c0);
                            for (int c = c0; c < c1; ++c)
                                var += std::pow(x[size_t(t) * d + c] - mu, 2);
                            const double sigma = std::sqrt(var / (c1 - c0));
                            const double h = std::pow(2.0, bits - 1) - 1;
                            for (int c = c0; c < c1; ++c) {
                                const size_t i = size_t(t) * d + c;
                                const double want = seed_rule(x[i], mu, sigma, bits, s);
                                // fp16 step (rounded up, <= 2^-10 relative) and offset (to
                                // nearest): the decoded value is the formula's within
                                // |code| * step * 2^-10 + |offset| * 2^-11 + a rounding flip at
                                // a half step (then one step away).
                                const double step = s * sigma / h;
                                const double tol =
                                    h * step * 1e-3 + (std::fabs(mu) + h * step) * 5e-4 + 1e-6;
                                const double err = std::fabs(y[i] - want);
                                INFO("bits " << bits << " d " << d << " g " << g << " s " << s
                                             << " x " << x[i] << " want " << want << " got "
                                             << y[i]);
                                CHECK((err <= tol || std::fabs(err - step) <= tol + 1e-3 * step));
                            }
                        }
                }
            }
        }
    }
}

TEST_CASE("zscore_pack: in range to half a step, outliers clipped to mu +- h * step",
          "[cpu][quant]") {
    // 63 values near 0 and one outlier at 100: sigma is dominated by the outlier; with s = 1 the
    // outlier lies beyond s * sigma and is clipped.
    std::vector<float> x(64);
    Rng rng(3);
    for (auto& v : x) v = 0.1f * rng.normal();
    x[10] = 100.0f;
    double mu = 0, var = 0;
    for (float v : x) mu += v;
    mu /= 64;
    for (float v : x) var += (v - mu) * (v - mu);
    const double sigma = std::sqrt(var / 64);
    const std::vector<float> y = roundtrip(x, 1, 64, 4, 64, 1.0f);
    const double step = sigma / 7;
    CHECK(y[10] < 100.0f - 50.0f);                                   // clipped
    CHECK(std::fabs(y[10] - (mu + 7 * step)) < 1e-2 * step + 1e-3);  // to the top code
    for (int c = 0; c < 64; ++c)
        if (c != 10) CHECK(std::fabs(y[size_t(c)] - x[size_t(c)]) <= step / 2 + 1e-2);
    // A larger s keeps the outlier (within s * sigma), with coarser steps.
    const std::vector<float> y8 = roundtrip(x, 1, 64, 8, 64, 8.0f);
    CHECK(std::fabs(y8[10] - 100.0f) <= 8 * sigma / 127);
}

TEST_CASE("zscore_pack: constant groups, NaN, 16 bits, bad arguments", "[cpu][quant]") {
    const std::vector<float> y = roundtrip({0.75f, 0.75f, 0.75f}, 1, 3, 4, 3, 2.5f);
    for (float v : y) CHECK(v == 0.75f);
    Status st;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> yn = roundtrip({1.0f, nan, 3.0f}, 1, 3, 4, 3, 2.5f, &st);
    CHECK(st == Status::non_finite_input);
    CHECK(std::fabs(yn[1] - 2.0f) < 1e-2f);  // NaN: the code of the mean (of the finite values)
    // 16 bits: quant_pack's fp16 passthrough.
    const std::vector<float> y16 = roundtrip({1.0f / 3, -2.5f}, 1, 2, 16, 32, 2.5f);
    CHECK(y16[0] == Approx(1.0f / 3).epsilon(1e-3));
    CHECK(y16[1] == -2.5f);
    std::vector<uint8_t> buf(64);
    const float x[4] = {1, 2, 3, 4};
    CHECK(zscore_pack_cpu(x, 1, 4, 3, 4, 1.0f, buf.data()) == Status::invalid_argument);
    CHECK(zscore_pack_cpu(x, 1, 4, 4, 0, 1.0f, buf.data()) == Status::invalid_argument);
    CHECK(zscore_pack_cpu(x, 1, 4, 4, 4, 0.0f, buf.data()) == Status::invalid_argument);
    CHECK(zscore_pack_cpu(x, 1, 4, 4, 4, -1.0f, buf.data()) == Status::invalid_argument);
}
