// quant_pack (kernels/include/kernels/quant_pack.h): layout by hand-built examples, exact byte
// counts (formula and bytes actually written), the scale/2 error bound, monotone error in the
// bit width, fp16 passthrough, constant groups, partial groups, non-finite input, bad arguments.
// The fp16 helpers are checked against the CPU's F16C instructions.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/detail/fp16.h"
#include "kernels/quant_pack.h"

using namespace kvs::kernels;
using kvs_test::Rng;

namespace {

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Independent statement of the format's size (quant_pack.h "Byte layout").
size_t expected_bytes(int n_tok, int d, int bits, int g, Axis axis) {
    const size_t row = (size_t(d) * bits + 7) / 8;
    size_t groups = 0;
    if (bits != 16) {
        groups = axis == Axis::per_token ? size_t(n_tok) * ((d + g - 1) / g)
                                         : size_t((n_tok + g - 1) / g) * d;
    }
    return 4 * groups + size_t(n_tok) * row;
}

// (scale, zero) of element (t, c) read from a packed buffer.
struct Params {
    float scale, zero;
};
Params params_of(const std::vector<uint8_t>& buf, int t, int c, int d, int g, Axis axis) {
    const size_t gi =
        axis == Axis::per_token ? size_t(t) * ((d + g - 1) / g) + c / g : size_t(t / g) * d + c;
    return {kvs_test::hw_fp32(kvs_test::le16(&buf[4 * gi])),
            kvs_test::hw_fp32(kvs_test::le16(&buf[4 * gi + 2]))};
}

struct Packed {
    Status status;
    std::vector<uint8_t> bytes;
    std::vector<float> x;  // unpacked
};
Packed round_trip(const std::vector<float>& x, int n_tok, int d, int bits, int g, Axis axis) {
    Packed p;
    p.bytes.resize(quant_packed_bytes(n_tok, d, bits, g, axis));
    p.status = quant_pack_cpu(x.data(), n_tok, d, bits, g, axis, p.bytes.data());
    p.x.assign(x.size(), -12345.0f);
    REQUIRE(quant_unpack_cpu(p.bytes.data(), n_tok, d, bits, g, axis, p.x.data()) == Status::ok);
    return p;
}

}  // namespace

TEST_CASE("fp16 helpers agree with F16C and round in the stated direction", "[cpu]") {
    using namespace kvs::kernels::detail;
    for (uint32_t h = 0; h < 0x10000; ++h) {  // every fp16 decodes like the hardware
        const float hw = kvs_test::hw_fp32(uint16_t(h));
        const float sw = fp16_to_fp32(uint16_t(h));
        if (std::isnan(hw)) {
            REQUIRE(std::isnan(sw));
        } else {
            REQUIRE(f32_bits(sw) == f32_bits(hw));
        }
    }
    Rng rng(7);
    for (int i = 0; i < 2000000; ++i) {  // random fp32 bit patterns, all exponents
        const float x = f32_from_bits(rng.next());
        const uint16_t hw = kvs_test::hw_fp16(x);
        const uint16_t sw = fp32_to_fp16_rne(x);
        if (std::isnan(x)) {
            REQUIRE(std::isnan(fp16_to_fp32(sw)));
            continue;
        }
        INFO("x = " << x);
        REQUIRE(sw == hw);
        if (std::fabs(x) <= 65504.0f) {
            const float dn = fp16_to_fp32(fp16_round_down(x)), up = fp16_to_fp32(fp16_round_up(x));
            REQUIRE(dn <= x);
            REQUIRE(up >= x);
            REQUIRE((dn == x) == (up == x));
            if (dn != x) REQUIRE(fp16_next_up(fp16_round_down(x)) == fp16_round_up(x));
        }
    }
    // Midpoints between consecutive fp16 values (ties to even), incl. subnormals.
    for (uint32_t h = 0; h < 0x7bff; ++h) {
        const double a = fp16_to_fp32(uint16_t(h)), b = fp16_to_fp32(uint16_t(h + 1));
        const float mid = float((a + b) / 2);
        REQUIRE(fp32_to_fp16_rne(mid) == kvs_test::hw_fp16(mid));
        REQUIRE(fp32_to_fp16_rne(-mid) == kvs_test::hw_fp16(-mid));
    }
}

TEST_CASE("snap_bits rounds to the nearest supported width, ties up", "[cpu]") {
    const int want[] = {2, 2, 2, 4, 4, 4, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16, 16};
    for (int b = 0; b <= 16; ++b) CHECK(snap_bits(b) == want[b]);
    CHECK(snap_bits(-5) == 2);
    CHECK(snap_bits(32) == 16);
    for (int b : {2, 4, 8, 16}) CHECK(bits_supported(b));
    for (int b : {0, 1, 3, 5, 6, 7, 12, 32}) CHECK_FALSE(bits_supported(b));
}

TEST_CASE("quant_pack layout: hand-built examples", "[cpu]") {
    SECTION("4 bits, one per-token group: params first, then low nibble = channel 0") {
        const std::vector<float> x = {0.0f, 1.0f, 2.0f, 15.0f};
        std::vector<uint8_t> out(quant_packed_bytes(1, 4, 4, 4, Axis::per_token));
        REQUIRE(out.size() == 4 + 2);
        REQUIRE(quant_pack_cpu(x.data(), 1, 4, 4, 4, Axis::per_token, out.data()) == Status::ok);
        // scale = 15/15 = 1.0 = 0x3c00, zero = 0
        CHECK(out == std::vector<uint8_t>{0x00, 0x3c, 0x00, 0x00, 0x10, 0xf2});
    }
    SECTION("2 bits, odd d: codes little-endian within the byte, unused bits zero") {
        const std::vector<float> x = {0.0f, 1.0f, 2.0f, 3.0f, 1.0f};
        std::vector<uint8_t> out(quant_packed_bytes(1, 5, 2, 8, Axis::per_token));
        REQUIRE(out.size() == 4 + 2);
        REQUIRE(quant_pack_cpu(x.data(), 1, 5, 2, 8, Axis::per_token, out.data()) == Status::ok);
        CHECK(out == std::vector<uint8_t>{0x00, 0x3c, 0x00, 0x00, 0xe4, 0x01});
    }
    SECTION("per channel: one (scale, zero) per channel per token group; rows byte-aligned") {
        // 3 tokens x 2 channels, 8 bits, group 2 along tokens: groups (0,c0),(0,c1),(1,c0),(1,c1)
        const std::vector<float> x = {0.0f, 10.0f, 255.0f, 10.0f, 1.0f, -2.0f};
        std::vector<uint8_t> out(quant_packed_bytes(3, 2, 8, 2, Axis::per_channel));
        REQUIRE(out.size() == 4 * 4 + 3 * 2);
        REQUIRE(quant_pack_cpu(x.data(), 3, 2, 8, 2, Axis::per_channel, out.data()) == Status::ok);
        // group 0 (c0, t0..1): [0, 255] -> scale 1, zero 0; group 1 (c1, t0..1): constant 10 ->
        // scale 0, zero 10 (0x4900); group 2 (c0, t2): 1 -> zero 1 (0x3c00); group 3: -2 (0xc000)
        const std::vector<uint8_t> params = {0x00, 0x3c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x49,
                                             0x00, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x00, 0xc0};
        CHECK(std::vector<uint8_t>(out.begin(), out.begin() + 16) == params);
        CHECK(std::vector<uint8_t>(out.begin() + 16, out.end()) ==
              std::vector<uint8_t>{0, 0, 255, 0, 0, 0});
    }
    SECTION("16 bits: fp16 little-endian, no params") {
        const std::vector<float> x = {1.0f, -2.0f};
        std::vector<uint8_t> out(quant_packed_bytes(1, 2, 16, 32, Axis::per_token));
        REQUIRE(quant_pack_cpu(x.data(), 1, 2, 16, 32, Axis::per_token, out.data()) == Status::ok);
        CHECK(out == std::vector<uint8_t>{0x00, 0x3c, 0x00, 0xc0});
    }
}

TEST_CASE("quant_packed_bytes is exact: the formula and the bytes pack writes", "[cpu]") {
    Rng rng(11);
    for (int n_tok : {0, 1, 19, 111}) {
        for (int d : {1, 19, 64, 111}) {
            const auto x = kvs_test::kv_like(rng, n_tok, d);
            for (int bits : {2, 4, 8, 16}) {
                for (int g : {1, 3, 32, 64}) {
                    for (Axis axis : {Axis::per_token, Axis::per_channel}) {
                        const size_t n = quant_packed_bytes(n_tok, d, bits, g, axis);
                        INFO("n_tok " << n_tok << " d " << d << " bits " << bits << " g " << g
                                      << " axis " << int(axis));
                        REQUIRE(n == expected_bytes(n_tok, d, bits, g, axis));
                        // Two canaries: bytes past n must survive; every byte before n must be
                        // written (equal whatever the canary was).
                        std::vector<uint8_t> a(n + 64, 0xa5), b(n + 64, 0x5a);
                        REQUIRE(quant_pack_cpu(x.data(), n_tok, d, bits, g, axis, a.data()) ==
                                Status::ok);
                        REQUIRE(quant_pack_cpu(x.data(), n_tok, d, bits, g, axis, b.data()) ==
                                Status::ok);
                        for (size_t i = n; i < n + 64; ++i) {
                            REQUIRE(a[i] == 0xa5);
                            REQUIRE(b[i] == 0x5a);
                        }
                        REQUIRE(std::equal(a.begin(), a.begin() + long(n), b.begin()));
                    }
                }
            }
        }
    }
    // KIVI's example: head_dim 128, 2 bits, groups of 32: 32 + 4*4 = 48 bytes per token.
    CHECK(quant_packed_bytes(1, 128, 2, 32, Axis::per_token) == 48);
    CHECK(quant_packed_bytes(32, 128, 2, 32, Axis::per_channel) == 32 * 32 + 128 * 4);
}

TEST_CASE("quant_pack round trip: every element within scale/2", "[cpu]") {
    Rng rng(12);
    for (int n_tok : {1, 19, 111}) {
        for (int d : {1, 19, 64, 111}) {
            for (float base : {1e-3f, 1.0f, 300.0f}) {
                auto x = kvs_test::kv_like(rng, n_tok, d, base);
                if (base > 1.0f) x[0] += 1000.0f;  // a group far from 0: fp16 zero must not drift
                for (int bits : {2, 4, 8}) {
                    for (int g : {3, 32}) {
                        for (Axis axis : {Axis::per_token, Axis::per_channel}) {
                            const Packed p = round_trip(x, n_tok, d, bits, g, axis);
                            REQUIRE(p.status == Status::ok);
                            for (int t = 0; t < n_tok; ++t) {
                                for (int c = 0; c < d; ++c) {
                                    const size_t i = size_t(t) * d + c;
                                    const Params pr = params_of(p.bytes, t, c, d, g, axis);
                                    const double tol = pr.scale / 2.0 + 4e-7 * (std::fabs(x[i]) +
                                                                                std::fabs(pr.zero));
                                    INFO("bits " << bits << " g " << g << " axis " << int(axis)
                                                 << " (t, c) = (" << t << ", " << c << ") x "
                                                 << x[i] << " x' " << p.x[i] << " scale "
                                                 << pr.scale);
                                    REQUIRE(std::fabs(double(x[i]) - p.x[i]) <= tol);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

TEST_CASE("quant_pack error shrinks monotonically from 2 to 4 to 8 to 16 bits", "[cpu]") {
    Rng rng(13);
    for (Axis axis : {Axis::per_token, Axis::per_channel}) {
        for (int trial = 0; trial < 5; ++trial) {
            const int n_tok = 111, d = 64;
            const auto x = kvs_test::kv_like(rng, n_tok, d);
            double prev = std::numeric_limits<double>::infinity();
            for (int bits : {2, 4, 8, 16}) {
                const double e = kvs_test::mse(x, round_trip(x, n_tok, d, bits, 32, axis).x);
                INFO("axis " << int(axis) << " bits " << bits << " mse " << e << " prev " << prev);
                REQUIRE(e < prev / 4);  // each doubling of the width cuts the MSE by far more
                prev = e;
            }
        }
    }
}

TEST_CASE("quant_pack 16 bits is fp16 rounding, saturating, inf and NaN kept", "[cpu]") {
    Rng rng(14);
    std::vector<float> x = kvs_test::kv_like(rng, 19, 111, 10.0f);
    x[0] = 1e-8f;     // fp16 subnormal range
    x[1] = 65519.0f;  // rounds to 65504
    x[2] = 1e6f;      // saturates to 65504 (fp16 itself would give inf)
    x[3] = -1e6f;
    x[4] = kInf;
    x[5] = -kInf;
    x[6] = kNaN;
    const Packed p = round_trip(x, 19, 111, 16, 32, Axis::per_token);
    CHECK(p.status == Status::non_finite_input);
    for (size_t i = 7; i < x.size(); ++i) {
        REQUIRE(p.x[i] == kvs_test::hw_fp32(kvs_test::hw_fp16(x[i])));
    }
    CHECK(p.x[0] == kvs_test::hw_fp32(kvs_test::hw_fp16(1e-8f)));
    CHECK(p.x[1] == 65504.0f);
    CHECK(p.x[2] == 65504.0f);
    CHECK(p.x[3] == -65504.0f);
    CHECK(p.x[4] == kInf);
    CHECK(p.x[5] == -kInf);
    CHECK(std::isnan(p.x[6]));
}

TEST_CASE("quant_pack constant groups (max == min)", "[cpu]") {
    for (Axis axis : {Axis::per_token, Axis::per_channel}) {
        for (int bits : {2, 4, 8}) {
            for (float v : {0.0f, 0.75f, -3.0f, 0.1f, 1000.1f}) {
                const std::vector<float> x(size_t(19) * 19, v);
                const Packed p = round_trip(x, 19, 19, bits, 8, axis);
                REQUIRE(p.status == Status::ok);
                const bool fp16_exact = kvs_test::hw_fp32(kvs_test::hw_fp16(v)) == v;
                for (size_t i = 0; i < x.size(); ++i) {
                    INFO("v " << v << " bits " << bits << " got " << p.x[i]);
                    if (fp16_exact) {
                        REQUIRE(p.x[i] == v);  // scale 0: decodes to exactly v
                    } else {
                        const Params pr = params_of(p.bytes, int(i / 19), int(i % 19), 19, 8, axis);
                        REQUIRE(pr.scale > 0.0f);
                        REQUIRE(std::fabs(p.x[i] - v) <= pr.scale / 2 + 4e-7 * std::fabs(v));
                    }
                }
            }
        }
    }
}

TEST_CASE("quant_pack per-channel: the last group holds the remaining tokens", "[cpu]") {
    Rng rng(15);
    const int n_tok = 19, d = 5, g = 8;  // groups of tokens [0,8), [8,16), [16,19)
    const auto x = kvs_test::kv_like(rng, n_tok, d);
    std::vector<uint8_t> out(quant_packed_bytes(n_tok, d, 4, g, Axis::per_channel));
    REQUIRE(quant_pack_cpu(x.data(), n_tok, d, 4, g, Axis::per_channel, out.data()) == Status::ok);
    for (int c = 0; c < d; ++c) {
        float mn = x[16 * d + c], mx = mn;
        for (int t = 17; t < 19; ++t)
            mn = std::min(mn, x[t * d + c]), mx = std::max(mx, x[t * d + c]);
        const Params pr = params_of(out, 16, c, d, g, Axis::per_channel);
        // zero = largest fp16 <= min of those 3 tokens; scale covers their max.
        CHECK(pr.zero <= mn);
        CHECK(kvs::kernels::detail::fp16_to_fp32(kvs::kernels::detail::fp16_next_up(
                  kvs::kernels::detail::fp32_to_fp16_rne(pr.zero))) > mn);
        CHECK(pr.zero + 15 * pr.scale >= mx);
        CHECK(pr.zero + 15 * pr.scale <=
              mx + 15 * pr.scale / 1000);  // scale not larger than needed
    }
}

TEST_CASE("quant_pack non-finite input: status, finite range kept, stated codes", "[cpu]") {
    Rng rng(16);
    for (Axis axis : {Axis::per_token, Axis::per_channel}) {
        const int n_tok = 4, d = 8, g = 4;
        auto x = kvs_test::kv_like(rng, n_tok, d);
        auto clean = x;
        // Group (token 0, channels 0..3) per token / (tokens 0..3, channel 0) per channel.
        const size_t i_pinf = 1 * (axis == Axis::per_token ? 1 : d);
        const size_t i_ninf = 2 * (axis == Axis::per_token ? 1 : d);
        const size_t i_nan = 3 * (axis == Axis::per_token ? 1 : d);
        x[i_pinf] = kInf, x[i_ninf] = -kInf, x[i_nan] = kNaN;
        clean[i_pinf] = clean[i_ninf] = clean[i_nan] = x[0];  // same finite min/max as x's group
        const Packed p = round_trip(x, n_tok, d, 4, g, axis);
        const Packed q = round_trip(clean, n_tok, d, 4, g, axis);
        CHECK(p.status == Status::non_finite_input);
        // (scale, zero) come from the finite elements only.
        const size_t n_params = 4 * quant_n_groups(n_tok, d, 4, g, axis);
        CHECK(std::equal(p.bytes.begin(), p.bytes.begin() + long(n_params), q.bytes.begin()));
        const Params pr = params_of(p.bytes, 0, 0, d, g, axis);
        CHECK(p.x[i_pinf] == pr.zero + 15 * pr.scale);  // top code
        CHECK(p.x[i_ninf] == pr.zero);                  // code 0
        CHECK(p.x[i_nan] == pr.zero);                   // code 0
        CHECK(p.x[0] == q.x[0]);
        for (size_t i = 0; i < x.size(); ++i) {
            if (i != i_pinf && i != i_ninf && i != i_nan) REQUIRE(p.x[i] == q.x[i]);
        }
    }
    SECTION("a group with no finite element decodes to 0; huge finite values saturate") {
        const std::vector<float> x = {kNaN, kInf, 1e9f, -1e9f};
        const Packed p = round_trip(x, 1, 4, 8, 2, Axis::per_token);
        CHECK(p.status == Status::non_finite_input);
        CHECK(p.x[0] == 0.0f);
        CHECK(p.x[1] == 0.0f);
        CHECK(std::fabs(p.x[2] - 65504.0f) <= 65504.0f / 255);
        CHECK(p.x[3] == -65504.0f);
    }
}

TEST_CASE("quant_pack rejects bad arguments and leaves the output alone", "[cpu]") {
    const std::vector<float> x(64, 1.0f);
    std::vector<uint8_t> out(1024, 0xee);
    for (int bits : {0, 1, 3, 5, 6, 7, 12, 32}) {
        CHECK(snap_bits(bits) != bits);
        CHECK(quant_packed_bytes(1, 64, bits, 32, Axis::per_token) == 0);
        CHECK(quant_pack_cpu(x.data(), 1, 64, bits, 32, Axis::per_token, out.data()) ==
              Status::invalid_argument);
    }
    CHECK(quant_pack_cpu(x.data(), 1, 64, 4, 0, Axis::per_token, out.data()) ==
          Status::invalid_argument);
    CHECK(quant_pack_cpu(x.data(), 1, 0, 4, 32, Axis::per_token, out.data()) ==
          Status::invalid_argument);
    CHECK(quant_pack_cpu(x.data(), -1, 64, 4, 32, Axis::per_token, out.data()) ==
          Status::invalid_argument);
    CHECK(quant_pack_cpu(nullptr, 1, 64, 4, 32, Axis::per_token, out.data()) ==
          Status::invalid_argument);
    CHECK(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0xee; }));
    std::vector<float> y(64);
    CHECK(quant_unpack_cpu(out.data(), 1, 64, 3, 32, Axis::per_token, y.data()) ==
          Status::invalid_argument);
    CHECK(quant_pack_cpu(x.data(), 0, 64, 4, 32, Axis::per_token, nullptr) == Status::ok);
    CHECK(std::string(status_string(Status::non_finite_input)).find("non-finite") == 0);
}
