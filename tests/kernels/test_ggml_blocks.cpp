// q8_0 / q4_0 (kernels/include/kernels/ggml_blocks.h): byte-identical to gguf-py's quantizers
// (= ggml's reference) on the committed fixture, ggml's edge rules, exact byte counts, the error
// bound of each format, padded rows, non-finite input.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/ggml_blocks.h"

using namespace kvs::kernels;
using kvs_test::Rng;

namespace {

const char* fmt_name(BlockFormat f) {
    return f == BlockFormat::q8_0 ? "q8_0" : "q4_0";
}

std::vector<uint8_t> pack(BlockFormat f, const std::vector<float>& x, int n_tok, int d,
                          Status* st = nullptr) {
    std::vector<uint8_t> out(block_packed_bytes(f, n_tok, d));
    const Status s = block_pack_cpu(f, x.data(), n_tok, d, out.data());
    if (st) *st = s;
    return out;
}
std::vector<float> unpack(BlockFormat f, const std::vector<uint8_t>& b, int n_tok, int d) {
    std::vector<float> x(size_t(n_tok) * d, -12345.0f);
    REQUIRE(block_unpack_cpu(f, b.data(), n_tok, d, x.data()) == Status::ok);
    return x;
}

}  // namespace

TEST_CASE("q8_0 / q4_0 are byte-identical to gguf-py (ggml reference) on the fixture", "[cpu]") {
    struct Case {
        const char* name;
        int n_tok, d;
    };
    // Shapes as written by scripts/make_kernel_fixture.py (see fixtures/ggml_blocks.json).
    for (const Case& c : {Case{"d64", 7, 64}, Case{"d40", 3, 40}, Case{"d128", 2, 128}}) {
        const std::string base = std::string(KVS_KERNEL_FIXTURES) + "/ggml_" + c.name;
        const auto x = kvs_test::read_file<float>(base + "_input.f32");
        REQUIRE(x.size() == size_t(c.n_tok) * c.d);
        for (BlockFormat f : {BlockFormat::q8_0, BlockFormat::q4_0}) {
            const auto want = kvs_test::read_file<uint8_t>(base + "." + fmt_name(f));
            INFO(c.name << " " << fmt_name(f));
            REQUIRE(want.size() == block_packed_bytes(f, c.n_tok, c.d));
            Status st;
            const auto got = pack(f, x, c.n_tok, c.d, &st);
            REQUIRE(st == Status::ok);
            const std::string diff = kvs_test::byte_mismatches(want, got);
            INFO(diff);
            REQUIRE(diff.empty());
        }
    }
}

TEST_CASE("q8_0 / q4_0 ggml edge rules", "[cpu]") {
    SECTION("all-zero block: q8_0 d = +0, q4_0 d = -0 (0 / -8), codes of 0") {
        const std::vector<float> x(32, 0.0f);
        const auto a = pack(BlockFormat::q8_0, x, 1, 32);
        CHECK(kvs_test::le16(a.data()) == 0x0000);
        CHECK(std::all_of(a.begin() + 2, a.end(), [](uint8_t b) { return b == 0; }));
        const auto b = pack(BlockFormat::q4_0, x, 1, 32);
        CHECK(kvs_test::le16(b.data()) == 0x8000);
        CHECK(std::all_of(b.begin() + 2, b.end(), [](uint8_t v) { return v == 0x88; }));
    }
    SECTION("q4_0 takes the first element of largest |x| with its sign") {
        std::vector<float> x(32, 0.5f);
        x[3] = -4.0f;
        x[20] = 4.0f;
        const auto b = pack(BlockFormat::q4_0, x, 1, 32);
        CHECK(kvs_test::hw_fp32(kvs_test::le16(b.data())) == 0.5f);  // d = -4 / -8
        CHECK((b[2 + 3] & 0x0f) == 0);                               // -4 -> q = 0
        CHECK((b[2 + 4] >> 4) == 15);  // +4 -> trunc(8 + 8.5) = 16 -> min(15, .) = 15
        x[3] = 4.0f, x[20] = -4.0f;
        const auto c = pack(BlockFormat::q4_0, x, 1, 32);
        CHECK(kvs_test::hw_fp32(kvs_test::le16(c.data())) == -0.5f);
    }
    SECTION("q4_0 nibble order: byte j = q[j] | q[j + 16] << 4") {
        std::vector<float> x(32);
        for (int j = 0; j < 32; ++j) x[j] = float(j % 16) - 8.0f;  // max |x| = -8 first
        const auto b = pack(BlockFormat::q4_0, x, 1, 32);
        // d = -8 / -8 = 1 -> q = trunc(x + 8.5) = j % 16
        for (int j = 0; j < 16; ++j) CHECK(b[2 + j] == uint8_t(j | (j << 4)));
    }
}

TEST_CASE("q8_0 / q4_0 byte counts are exact, padded rows round-trip", "[cpu]") {
    Rng rng(21);
    CHECK(ggml_block_bytes(BlockFormat::q8_0) == 34);
    CHECK(ggml_block_bytes(BlockFormat::q4_0) == 18);
    for (BlockFormat f : {BlockFormat::q8_0, BlockFormat::q4_0}) {
        for (int n_tok : {0, 1, 19, 111}) {
            for (int d : {1, 19, 32, 64, 111}) {
                const size_t n = block_packed_bytes(f, n_tok, d);
                INFO(fmt_name(f) << " n_tok " << n_tok << " d " << d);
                REQUIRE(n == size_t(n_tok) * ((d + 31) / 32) * ggml_block_bytes(f));
                const auto x = kvs_test::kv_like(rng, n_tok, d);
                std::vector<uint8_t> a(n + 64, 0xa5), b(n + 64, 0x5a);
                REQUIRE(block_pack_cpu(f, x.data(), n_tok, d, a.data()) == Status::ok);
                REQUIRE(block_pack_cpu(f, x.data(), n_tok, d, b.data()) == Status::ok);
                for (size_t i = n; i < n + 64; ++i) REQUIRE((a[i] == 0xa5 && b[i] == 0x5a));
                REQUIRE(std::equal(a.begin(), a.begin() + long(n), b.begin()));
                // Error bound: |x - x'| <= d/2 (q8_0), <= |d| (q4_0: the top code clips at 7|d|
                // while the block's max sits at 8|d|), plus fp16 rounding of d times |q|.
                a.resize(n);
                const auto y = unpack(f, a, n_tok, d);
                for (int t = 0; t < n_tok; ++t) {
                    for (int c = 0; c < d; ++c) {
                        const uint8_t* blk =
                            &a[(size_t(t) * ((d + 31) / 32) + c / 32) * ggml_block_bytes(f)];
                        const double dd = std::fabs(kvs_test::hw_fp32(kvs_test::le16(blk)));
                        const double xv = x[size_t(t) * d + c], yv = y[size_t(t) * d + c];
                        const double tol = (f == BlockFormat::q8_0 ? 0.5 : 1.0) * dd +
                                           std::fabs(xv) * 1e-3 + 1e-30;
                        REQUIRE(std::fabs(xv - yv) <= tol);
                    }
                }
            }
        }
    }
}

TEST_CASE("q8_0 / q4_0 non-finite input and bad arguments", "[cpu]") {
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> x(32, 0.25f);
    x[0] = 2.0f, x[1] = inf, x[2] = -inf, x[3] = std::numeric_limits<float>::quiet_NaN();
    for (BlockFormat f : {BlockFormat::q8_0, BlockFormat::q4_0}) {
        Status st;
        const auto b = pack(f, x, 1, 32, &st);
        CHECK(st == Status::non_finite_input);
        const auto y = unpack(f, b, 1, 32);
        INFO(fmt_name(f));
        // +inf and -inf become +-amax (2): q8_0 +-127 codes; NaN the code of 0.
        if (f == BlockFormat::q8_0) {
            CHECK(int8_t(b[2 + 1]) == 127);
            CHECK(int8_t(b[2 + 2]) == -127);
            CHECK(int8_t(b[2 + 3]) == 0);
        }
        CHECK(y[1] == y[0]);
        CHECK(std::fabs(y[2] + 2.0f) <= 0.25f);
        CHECK(y[3] == 0.0f);
    }
    std::vector<uint8_t> out(64, 0xee);
    CHECK(block_pack_cpu(BlockFormat::q8_0, x.data(), 1, 0, out.data()) ==
          Status::invalid_argument);
    CHECK(block_pack_cpu(BlockFormat::q4_0, x.data(), -1, 32, out.data()) ==
          Status::invalid_argument);
    CHECK(block_pack_cpu(BlockFormat::q4_0, nullptr, 1, 32, out.data()) ==
          Status::invalid_argument);
    CHECK(std::all_of(out.begin(), out.end(), [](uint8_t v) { return v == 0xee; }));
    CHECK(block_packed_bytes(BlockFormat::q8_0, 1, 0) == 0);
}
