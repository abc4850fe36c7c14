// The gzip:1 chunk encoder writes zlib streams that zlib itself (so HDF5's deflate filter, and
// h5py) decodes to the shuffled input: random and real-looking data, every element size, sizes
// around the 65535-byte stored-block limit, and byte distributions that force the Huffman
// length limit; and it compresses activations about as well as zlib.
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "capture/chunk_deflate.h"
#include "engine/ggml_types.h"

using namespace kvs::capture;

namespace {

// zlib's own compression of the shuffled bytes (level 1): the size to compare with.
size_t zlib_size(const std::vector<uint8_t>& x, size_t elt) {
    const size_t n_elem = x.size() / elt;
    std::vector<uint8_t> planes(x.size());
    for (size_t i = 0; i < n_elem; ++i)
        for (size_t j = 0; j < elt; ++j) planes[j * n_elem + i] = x[i * elt + j];
    uLongf n = compressBound(uLong(x.size()));
    std::vector<uint8_t> out(n);
    REQUIRE(compress2(out.data(), &n, planes.data(), uLong(x.size()), 1) == Z_OK);
    return n;
}

}  // namespace

TEST_CASE("chunk encoder: zlib decodes what it writes", "[cpu]") {
    std::mt19937 rng(17);
    std::vector<uint8_t> planes, out, back;
    struct Case {
        const char* name;
        size_t elt, n_elem;
        int kind;  // 0 uniform bytes, 1 one value, 2 two values, 3 geometric (deep Huffman tree)
    };
    const Case cases[] = {{"one element", 2, 1, 0},
                          {"uniform f16", 2, 40000, 0},
                          {"constant", 2, 5000, 1},
                          {"two values", 4, 3000, 2},
                          {"geometric", 2, 200000, 3},
                          {"bytes", 1, 70001, 3},
                          {"u64", 8, 9000, 0},
                          {"stored limit", 2, 65535, 0},
                          {"stored limit + 1", 2, 65536, 3},
                          {"3-byte", 3, 100003, 0}};
    for (const Case& c : cases) {
        INFO(c.name);
        std::vector<uint8_t> x(c.elt * c.n_elem);
        for (size_t i = 0; i < x.size(); ++i) {
            switch (c.kind) {
                case 0:
                    x[i] = uint8_t(rng());
                    break;
                case 1:
                    x[i] = 0x3c;
                    break;
                case 2:
                    x[i] = rng() % 2 ? 7 : 200;
                    break;
                default: {
                    // P(byte = b) ~ 2^-b: Huffman depth would reach ~30 without the limit.
                    int b = 0;
                    while (b < 40 && rng() % 2) ++b;
                    x[i] = uint8_t(b);
                }
            }
        }
        deflate_chunk(x.data(), c.n_elem, c.elt, planes, out);
        REQUIRE(inflate_chunk(out.data(), out.size(), c.n_elem, c.elt, back));
        CHECK(back == x);
        // A damaged stream does not decode to the same bytes (zlib's Adler-32 or code checks).
        if (out.size() > 20) {
            out[out.size() / 2] ^= 0x5a;
            CHECK_FALSE(
                (inflate_chunk(out.data(), out.size(), c.n_elem, c.elt, back) && back == x));
        }
    }
}

TEST_CASE("chunk encoder: zero runs (a partial chunk's padding) cost almost nothing", "[cpu]") {
    std::mt19937 rng(23);
    std::vector<uint8_t> planes, out, back;
    // A q chunk [9 heads, 256 tokens, 64] of f16 holding 10 tokens, and other zero layouts:
    // runs just under and over the 1 KiB threshold, at the start and end, a zero plane.
    struct Case {
        const char* name;
        size_t elt, n_elem;
        std::vector<std::pair<size_t, size_t>> data;  // [b, e) element ranges holding data
        size_t max_bytes;
    };
    std::vector<std::pair<size_t, size_t>> heads;
    for (size_t h = 0; h < 9; ++h) heads.push_back({h * 256 * 64, h * 256 * 64 + 10 * 64});
    const std::vector<Case> cases = {
        {"partial q chunk", 2, 9 * 256 * 64, heads, 9 * 10 * 64 * 2 + 9 * 2 * 300 + 2000},
        {"all zero", 2, 100000, {}, 1400},
        {"zeros then data", 4, 5000, {{4000, 5000}}, 4000 + 400 + 600},
        {"data then zeros", 2, 5000, {{0, 100}}, 200 + 400 + 200},
        {"run of 1023", 1, 3000, {{0, 1000}, {2023, 3000}}, 3000 + 400},
        {"run of 1024", 1, 3000, {{0, 1000}, {2024, 3000}}, 2000 + 800},
        {"runs of 257, 258, 259 zeros",
         1,
         8000,
         {{0, 2000}, {3257, 5000}, {6258, 6400}, {6659, 8000}},
         8000}};
    for (const Case& c : cases) {
        INFO(c.name);
        std::vector<uint8_t> x(c.elt * c.n_elem, 0);
        for (auto [b, e] : c.data)
            for (size_t i = b * c.elt; i < e * c.elt; ++i) x[i] = uint8_t(rng() | 1);
        deflate_chunk(x.data(), c.n_elem, c.elt, planes, out);
        REQUIRE(inflate_chunk(out.data(), out.size(), c.n_elem, c.elt, back));
        CHECK(back == x);
        INFO(out.size() << " bytes for " << x.size());
        CHECK(out.size() <= c.max_bytes);
    }
}

TEST_CASE("chunk encoder: compresses fp16 activations like zlib level 1", "[cpu]") {
    // Activation-like values: normal, with a few large outliers per row, stored as fp16.
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const size_t n_elem = 9 * 256 * 64;
    std::vector<uint8_t> x(n_elem * 2);
    for (size_t i = 0; i < n_elem; ++i) {
        float v = nd(rng) * (i % 64 == 3 ? 20.0f : 0.7f);
        const uint16_t h = kvs::fp32_to_fp16(v);
        x[2 * i] = uint8_t(h);
        x[2 * i + 1] = uint8_t(h >> 8);
    }
    std::vector<uint8_t> planes, out, back;
    deflate_chunk(x.data(), n_elem, 2, planes, out);
    REQUIRE(inflate_chunk(out.data(), out.size(), n_elem, 2, back));
    CHECK(back == x);
    const double ours = double(out.size()) / double(x.size());
    const double zl = double(zlib_size(x, 2)) / double(x.size());
    INFO("ratio: ours " << ours << ", zlib level 1 " << zl);
    CHECK(ours < 0.95);
    CHECK(ours < zl * 1.02);
}
