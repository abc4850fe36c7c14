// GGUF reader tests: round trips through the test writer (every metadata type, v2 and v3,
// several alignments), one rejection test per kind of bad input (each checks that the message
// names the cause), truncation at every byte, random corruption, and the real model.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/ggml_types.h"
#include "engine/gguf.h"
#include "gguf_writer.h"
#include "kvs_skip.h"

using Catch::Contains;
using kvs::GgmlType;
using kvs::GgufFile;
using kvs::GgufType;
using kvs::test::ByteBuf;
using kvs::test::GgufWriter;
using kvs::test::temp_path;

namespace {

std::string write_tmp(const GgufWriter& w, const std::string& name) {
    const std::string path = temp_path(name);
    w.write(path);
    return path;
}

std::string write_tmp(const std::vector<uint8_t>& bytes, const std::string& name) {
    const std::string path = temp_path(name);
    GgufWriter::write_file(path, bytes);
    return path;
}

// Opens the file expecting a kvs::Error; returns its message (empty and a failed check if none).
std::string open_error(const std::string& path) {
    try {
        GgufFile::open(path);
    } catch (const kvs::Error& e) {
        return e.what();
    }
    FAIL_CHECK("opening " << path << " did not throw");
    return {};
}

// Q4_1 blocks with known contents: block b has d = 2^-b, m = -1 and quant j = (j + b) % 16.
std::vector<uint8_t> q4_1_blocks(int n_blocks, std::vector<float>* values = nullptr) {
    ByteBuf out;
    for (int b = 0; b < n_blocks; ++b) {
        const auto d = uint16_t((15 - b) << 10);  // 2^-b as fp16 (b < 15)
        out.u16(d).u16(0xBC00);                   // m = -1
        int q[32];
        for (int j = 0; j < 32; ++j) q[j] = (j + b) % 16;
        for (int j = 0; j < 16; ++j) out.u8(uint8_t(q[j] | q[j + 16] << 4));
        if (values) {
            for (int j = 0; j < 32; ++j) values->push_back(std::ldexp(float(q[j]), -b) - 1.0f);
        }
    }
    return out.bytes;
}

// A writer holding every kind of metadata value and a few tensors.
GgufWriter full_writer(uint32_t version, uint32_t alignment) {
    GgufWriter w(version);
    if (alignment) w.set_alignment(alignment);
    w.add_string("general.architecture", "llama");
    w.add_u8("t.u8", 255).add_i8("t.i8", -128);
    w.add_u16("t.u16", 65535).add_i16("t.i16", -32768);
    w.add_u32("t.u32", 4294967295u).add_i32("t.i32", std::numeric_limits<int32_t>::min());
    w.add_u64("t.u64", 1ull << 40).add_u64("t.u64big", std::numeric_limits<uint64_t>::max());
    w.add_i64("t.i64", std::numeric_limits<int64_t>::min());
    w.add_f32("t.f32", -0.1f).add_f64("t.f64", 3.141592653589793);
    w.add_bool("t.true", true).add_bool("t.false", false);
    w.add_string("t.str", "h\xc3\xa9llo \"world\"").add_string("t.empty", "");
    w.add_u8_array("a.u8", {0, 7, 255}).add_i8_array("a.i8", {-128, 0, 127});
    w.add_u16_array("a.u16", {0, 65535}).add_i16_array("a.i16", {-32768, 32767});
    w.add_u32_array("a.u32", {4294967295u, 1}).add_i32_array("a.i32", {-5, 5, 0});
    w.add_u64_array("a.u64", {0, 1ull << 63}).add_i64_array("a.i64", {-1, 1ll << 62});
    w.add_f32_array("a.f32", {1.5f, -0.0f, std::numeric_limits<float>::infinity()});
    w.add_f64_array("a.f64", {1e300, -2.5});
    w.add_bool_array("a.bool", {true, false, true});
    w.add_string_array("a.str", {"", "a", "\xe6\x97\xa5\xe6\x9c\xac", std::string("x\0y", 3)});
    w.add_i32_array("a.empty", {});
    w.add_string_array("a.empty_str", {});
    w.add_tensor_f32("a", {3, 2}, {0, 1, 2, 3, 4, 5});
    w.add_tensor_f16("b", {5}, {1.0f, -2.0f, 0.5f, 65504.0f, 0x1p-24f});
    w.add_tensor_raw("blk.0.attn_q.weight", GgmlType::Q4_1, {64, 3}, q4_1_blocks(6));
    w.add_tensor_f32("four_d", {1, 2, 1, 3}, {1, 2, 3, 4, 5, 6});
    return w;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

TEST_CASE("gguf: every metadata type and tensors round-trip", "[cpu][gguf]") {
    for (uint32_t version : {2u, 3u}) {
        for (uint32_t alignment : {0u /* default, no key */, 64u, 8u, 1u}) {
            INFO("version " << version << " alignment " << alignment);
            const GgufWriter w = full_writer(version, alignment);
            const std::string path = write_tmp(w, "roundtrip.gguf");
            const GgufFile g = GgufFile::open(path);

            CHECK(g.path() == path);
            CHECK(g.version() == version);
            CHECK(g.alignment() == (alignment ? alignment : 32u));
            CHECK(g.metadata().size() == (alignment ? 31u : 30u));
            if (alignment) CHECK(g.metadata()[0].first == "general.alignment");

            // Scalars through the typed getters.
            CHECK(g.get_string("general.architecture") == "llama");
            CHECK(g.get_int("t.u8") == 255);
            CHECK(g.get_int("t.i8") == -128);
            CHECK(g.get_int("t.u16") == 65535);
            CHECK(g.get_int("t.i16") == -32768);
            CHECK(g.get_int("t.u32") == 4294967295ll);
            CHECK(g.get_int("t.i32") == std::numeric_limits<int32_t>::min());
            CHECK(g.get_int("t.u64") == (1ll << 40));
            CHECK(g.get_int("t.i64") == std::numeric_limits<int64_t>::min());
            CHECK(g.get_int("t.true") == 1);
            CHECK(g.get_int("t.false") == 0);
            CHECK(g.get_float("t.f32") == double(-0.1f));
            CHECK(g.get_float("t.f64") == 3.141592653589793);
            CHECK(g.get_float("t.u32") == 4294967295.0);
            CHECK(g.get_float("t.u64big") == 18446744073709551615.0);
            CHECK(g.get_float("t.i8") == -128.0);
            CHECK(g.get_string("t.str") == "h\xc3\xa9llo \"world\"");
            CHECK(g.get_string("t.empty").empty());

            // Stored types.
            const std::map<std::string, GgufType> types = {
                {"t.u8", GgufType::U8},    {"t.i8", GgufType::I8},     {"t.u16", GgufType::U16},
                {"t.i16", GgufType::I16},  {"t.u32", GgufType::U32},   {"t.i32", GgufType::I32},
                {"t.u64", GgufType::U64},  {"t.i64", GgufType::I64},   {"t.f32", GgufType::F32},
                {"t.f64", GgufType::F64},  {"t.true", GgufType::BOOL}, {"t.str", GgufType::STRING},
                {"a.u8", GgufType::ARRAY},
            };
            for (const auto& [key, type] : types) {
                REQUIRE(g.find(key) != nullptr);
                CHECK(g.find(key)->type == type);
            }
            CHECK(g.find("nope") == nullptr);

            // Arrays.
            auto arr = [&](const char* key, GgufType elem) -> const kvs::GgufValue& {
                const kvs::GgufValue* v = g.find(key);
                REQUIRE(v != nullptr);
                REQUIRE(v->type == GgufType::ARRAY);
                REQUIRE(v->elem_type == elem);
                return *v;
            };
            CHECK(arr("a.u8", GgufType::U8).ints == std::vector<int64_t>{0, 7, 255});
            CHECK(arr("a.i8", GgufType::I8).ints == std::vector<int64_t>{-128, 0, 127});
            CHECK(arr("a.u16", GgufType::U16).ints == std::vector<int64_t>{0, 65535});
            CHECK(arr("a.i16", GgufType::I16).ints == std::vector<int64_t>{-32768, 32767});
            CHECK(arr("a.u32", GgufType::U32).ints == std::vector<int64_t>{4294967295ll, 1});
            CHECK(arr("a.i32", GgufType::I32).ints == std::vector<int64_t>{-5, 5, 0});
            CHECK(uint64_t(arr("a.u64", GgufType::U64).ints.at(1)) == (1ull << 63));
            CHECK(arr("a.i64", GgufType::I64).ints == std::vector<int64_t>{-1, 1ll << 62});
            const auto& f32s = arr("a.f32", GgufType::F32).floats;
            REQUIRE(f32s.size() == 3);
            CHECK(f32s[0] == 1.5);
            CHECK((f32s[1] == 0.0 && std::signbit(f32s[1])));
            CHECK(std::isinf(f32s[2]));
            CHECK(arr("a.f64", GgufType::F64).floats == std::vector<double>{1e300, -2.5});
            CHECK(arr("a.bool", GgufType::BOOL).ints == std::vector<int64_t>{1, 0, 1});
            CHECK(arr("a.empty", GgufType::I32).ints.empty());
            const std::vector<std::string> strs = {"", "a", "\xe6\x97\xa5\xe6\x9c\xac",
                                                   std::string("x\0y", 3)};
            CHECK(g.get_string_array("a.str") == strs);
            CHECK(g.get_string_array("a.empty_str").empty());

            // Tensors.
            REQUIRE(g.tensors().size() == 4);
            CHECK(g.tensors()[0].name == "a");
            CHECK(g.tensors()[3].name == "four_d");
            CHECK(g.tensor("missing") == nullptr);
            for (const kvs::GgufTensor& t : g.tensors()) {
                INFO(t.name);
                CHECK(t.offset % g.alignment() == 0);
                CHECK(t.data - g.tensors()[0].data == std::ptrdiff_t(t.offset));
            }
            const kvs::GgufTensor* a = g.tensor("a");
            REQUIRE(a != nullptr);
            CHECK(a->type == GgmlType::F32);
            CHECK(a->ne == std::vector<int64_t>{3, 2});
            CHECK(a->n_elements == 6);
            CHECK(a->nbytes == 24);
            std::vector<float> fa(6);
            kvs::dequantize(a->type, a->data, fa.data(), 6);
            CHECK(fa == std::vector<float>{0, 1, 2, 3, 4, 5});

            const kvs::GgufTensor* b = g.tensor("b");
            REQUIRE(b != nullptr);
            CHECK(b->type == GgmlType::F16);
            CHECK(b->nbytes == 10);
            std::vector<float> fb(5);
            kvs::dequantize(b->type, b->data, fb.data(), 5);
            CHECK(fb == std::vector<float>{1.0f, -2.0f, 0.5f, 65504.0f, 0x1p-24f});

            const kvs::GgufTensor* q = g.tensor("blk.0.attn_q.weight");
            REQUIRE(q != nullptr);
            CHECK(q->type == GgmlType::Q4_1);
            CHECK(q->ne == std::vector<int64_t>{64, 3});
            CHECK(q->n_elements == 192);
            CHECK(q->nbytes == 6 * 20);
            std::vector<float> want_q;
            const std::vector<uint8_t> q_bytes = q4_1_blocks(6, &want_q);
            CHECK(std::memcmp(q->data, q_bytes.data(), q_bytes.size()) == 0);
            std::vector<float> fq(192);
            kvs::dequantize(q->type, q->data, fq.data(), 192);
            CHECK(fq == want_q);

            const kvs::GgufTensor* d4 = g.tensor("four_d");
            REQUIRE(d4 != nullptr);
            CHECK(d4->ne == std::vector<int64_t>{1, 2, 1, 3});
            CHECK(d4->n_elements == 6);
            size_t data_start = 0;
            CHECK(std::filesystem::file_size(path) == w.bytes(&data_start).size());
            CHECK(data_start + d4->offset + d4->nbytes ==
                  w.bytes().size());  // last tensor ends the file
        }
    }
}

TEST_CASE("gguf: typed getters name the key on errors", "[cpu][gguf]") {
    const std::string path = write_tmp(full_writer(3, 0), "getters.gguf");
    const GgufFile g = GgufFile::open(path);

    CHECK_THROWS_WITH(g.get_int("missing.key"), Contains("missing key 'missing.key'"));
    CHECK_THROWS_WITH(g.get_string("missing.key"), Contains(path) && Contains("missing.key"));
    CHECK_THROWS_WITH(g.get_float("missing.key"), Contains("missing.key"));
    CHECK_THROWS_WITH(g.get_string_array("missing.key"), Contains("missing.key"));
    CHECK_THROWS_WITH(g.get_int("t.str"),
                      Contains("key 't.str' has type string") && Contains("integer"));
    CHECK_THROWS_WITH(g.get_int("t.f32"), Contains("t.f32") && Contains("f32"));
    CHECK_THROWS_WITH(g.get_int("t.u64big"),
                      Contains("18446744073709551615") && Contains("does not fit"));
    CHECK_THROWS_WITH(g.get_string("t.u32"), Contains("t.u32") && Contains("u32"));
    CHECK_THROWS_WITH(g.get_float("t.true"), Contains("t.true") && Contains("bool"));
    CHECK_THROWS_WITH(g.get_float("a.f32"), Contains("array of f32"));
    CHECK_THROWS_WITH(g.get_string_array("a.i32"), Contains("a.i32") && Contains("array of i32"));
    CHECK_THROWS_WITH(g.get_string_array("t.str"), Contains("expected array of string"));

    CHECK(g.get_string_opt("missing") == std::nullopt);
    CHECK(g.get_int_opt("missing") == std::nullopt);
    CHECK(g.get_float_opt("missing") == std::nullopt);
    CHECK(g.get_string_opt("general.architecture") == std::optional<std::string>("llama"));
    CHECK(g.get_int_opt("t.u16") == std::optional<int64_t>(65535));
    CHECK(g.get_float_opt("t.f64") == std::optional<double>(3.141592653589793));
    CHECK_THROWS_WITH(g.get_int_opt("t.str"), Contains("t.str"));  // present but wrong type
    CHECK_THROWS_AS(g.get_float_opt("t.str"), kvs::Error);
    CHECK_THROWS_AS(g.get_string_opt("t.u8"), kvs::Error);
}

TEST_CASE("gguf: a moved file keeps its mapping", "[cpu][gguf]") {
    const std::string path = write_tmp(full_writer(3, 0), "move.gguf");
    GgufFile g = GgufFile::open(path);
    const uint8_t* data = g.tensor("a")->data;
    GgufFile h = std::move(g);
    CHECK(h.tensor("a")->data == data);
    float x[6];
    kvs::dequantize(GgmlType::F32, h.tensor("a")->data, x, 6);
    CHECK(x[5] == 5.0f);
    GgufFile k = GgufFile::open(write_tmp(GgufWriter(), "empty-meta.gguf"));
    k = std::move(h);
    CHECK(k.get_string("general.architecture") == "llama");
}

TEST_CASE("gguf: a file with no metadata and no tensors is valid", "[cpu][gguf]") {
    const GgufFile g = GgufFile::open(write_tmp(GgufWriter(2), "minimal.gguf"));
    CHECK(g.version() == 2);
    CHECK(g.metadata().empty());
    CHECK(g.tensors().empty());
}

// ---------------------------------------------------------------------------------------------
// Rejections: files that are not GGUF, or of an unsupported version
// ---------------------------------------------------------------------------------------------

TEST_CASE("gguf: rejects missing, empty and non-GGUF files", "[cpu][gguf]") {
    const std::string missing = temp_path("does-not-exist.gguf");
    CHECK_THROWS_WITH(GgufFile::open(missing),
                      Contains("cannot open model file '" + missing + "'") &&
                          Contains("No such file or directory"));
    CHECK_THROWS_WITH(GgufFile::open(kvs::test::temp_dir().string()),
                      Contains("not a regular file"));

    const std::string empty = write_tmp(std::vector<uint8_t>{}, "empty.gguf");
    CHECK_THROWS_WITH(GgufFile::open(empty),
                      Contains(empty + ": not a GGUF file (bad magic)") && Contains("empty"));

    const std::string tiny = write_tmp(std::vector<uint8_t>{'G', 'G'}, "tiny.gguf");
    CHECK_THROWS_WITH(GgufFile::open(tiny), Contains("not a GGUF file (bad magic)"));

    std::vector<uint8_t> ggml = GgufWriter().bytes();
    ggml[3] = 'L';  // "GGUL"
    const std::string bad = write_tmp(ggml, "bad-magic.gguf");
    CHECK_THROWS_WITH(GgufFile::open(bad),
                      Contains(bad + ": not a GGUF file (bad magic)") && Contains("47 47 55 4c"));
}

TEST_CASE("gguf: rejects unsupported versions", "[cpu][gguf]") {
    CHECK_THROWS_WITH(
        GgufFile::open(write_tmp(GgufWriter(1), "v1.gguf")),
        Contains("unsupported GGUF version 1") && Contains("expected version 2 or 3"));
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(GgufWriter(4), "v4.gguf")),
                      Contains("unsupported GGUF version 4 (expected 2 or 3)"));
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(GgufWriter(0), "v0.gguf")),
                      Contains("unsupported GGUF version 0"));
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(GgufWriter(0x03000000u), "v3be.gguf")),
                      Contains("big-endian"));
}

// ---------------------------------------------------------------------------------------------
// Rejections: hostile header and metadata
// ---------------------------------------------------------------------------------------------

TEST_CASE("gguf: rejects counts that cannot fit in the file", "[cpu][gguf]") {
    for (uint64_t n : {1ull << 62, ~0ull, 1000ull}) {
        GgufWriter w;
        w.add_u32("a", 1);
        w.n_kv_override = n;
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "nkv.gguf")),
                          Contains("n_kv = " + std::to_string(n)) && Contains("cannot fit"));
    }
    for (uint64_t n : {1ull << 62, ~0ull, 1000ull}) {
        GgufWriter w;
        w.add_u32("a", 1);
        w.n_tensors_override = n;
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "ntensors.gguf")),
                          Contains("n_tensors = " + std::to_string(n)) && Contains("cannot fit"));
    }
    // One more key than present: plausible count, so the parser runs off the end.
    GgufWriter w;
    w.add_string("a", "a long enough string value to make room for the count check");
    w.n_kv_override = 2;
    // (The writer's zero padding reads as an empty key, which the spec does not allow.)
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "nkv2.gguf")),
                      Contains("key/value #1: empty key"));
    w.set_alignment(1, false);  // no padding: the parser runs off the end
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "nkv3.gguf")),
                      Contains("key/value #1: truncated file"));
}

TEST_CASE("gguf: rejects huge string lengths", "[cpu][gguf]") {
    // A key whose length field is 2^60.
    ByteBuf b;
    b.raw("GGUF", 4).u32(3).u64(0).u64(1).u64(1ull << 60).raw("abcdefghijklmnop", 16);
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(b.bytes, "keylen.gguf")),
                      Contains("key/value #0") && Contains("key at offset 24") &&
                          Contains("length 1152921504606846976"));
    // A string value of length 2^64 - 1.
    GgufWriter w;
    w.add_kv_raw("general.name", GgufType::STRING, ByteBuf().u64(~0ull).raw("xyz", 3).bytes);
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "strlen.gguf")),
                      Contains("key 'general.name'") && Contains("length 18446744073709551615"));
    // One string in an array is too long.
    GgufWriter w2;
    w2.add_kv_raw("tokens", GgufType::ARRAY,
                  ByteBuf().u32(uint32_t(GgufType::STRING)).u64(2).str("ok").u64(1000).bytes);
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w2, "arrstr.gguf")),
                      Contains("key 'tokens'") && Contains("length 1000"));
}

TEST_CASE("gguf: rejects huge array counts", "[cpu][gguf]") {
    struct Case {
        GgufType elem;
        uint64_t count;
    };
    for (const Case& c : {Case{GgufType::I32, 1ull << 61}, Case{GgufType::U64, (1ull << 61) + 1},
                          Case{GgufType::STRING, ~0ull}, Case{GgufType::U8, 100},
                          Case{GgufType::F64, 1ull << 62}}) {
        GgufWriter w;
        w.add_kv_raw("big.array", GgufType::ARRAY,
                     ByteBuf().u32(uint32_t(c.elem)).u64(c.count).u64(0).bytes);
        const std::string msg = open_error(write_tmp(w, "arrcount.gguf"));
        INFO(msg);
        CHECK_THAT(msg,
                   Contains("key 'big.array'") && Contains("array of " + std::to_string(c.count) +
                                                           " " + kvs::gguf_type_name(c.elem)));
    }
}

TEST_CASE("gguf: rejects bad value types", "[cpu][gguf]") {
    GgufWriter w;
    w.add_kv_raw("k", 13u, ByteBuf().u64(0).bytes);
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "vtype.gguf")),
                      Contains("key 'k'") && Contains("unknown value type 13"));

    GgufWriter w2;
    w2.add_kv_raw("nested", GgufType::ARRAY,
                  ByteBuf().u32(uint32_t(GgufType::ARRAY)).u64(1).u32(4).u64(0).bytes);
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w2, "nested.gguf")),
                      Contains("key 'nested'") && Contains("array of arrays"));

    GgufWriter w3;
    w3.add_kv_raw("arr", GgufType::ARRAY, ByteBuf().u32(99).u64(0).u64(0).bytes);
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w3, "elemtype.gguf")),
                      Contains("unknown array element type 99"));

    GgufWriter w4;
    w4.add_kv_raw("flag", GgufType::BOOL, {2});
    w4.add_u32("pad", 0);
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w4, "bool.gguf")),
                      Contains("key 'flag'") && Contains("expected 0 or 1"));
}

TEST_CASE("gguf: rejects duplicate keys", "[cpu][gguf]") {
    GgufWriter w;
    w.add_u32("llama.block_count", 2).add_string("x", "y").add_u32("llama.block_count", 3);
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "dupkey.gguf")),
                      Contains("key 'llama.block_count'") && Contains("duplicated"));
}

TEST_CASE("gguf: rejects bad general.alignment", "[cpu][gguf]") {
    for (uint32_t a : {0u, 48u, 3u, 0x80000001u}) {
        GgufWriter w;
        w.add_u32("general.alignment", a);
        CHECK_THROWS_WITH(
            GgufFile::open(write_tmp(w, "align.gguf")),
            Contains("general.alignment' is " + std::to_string(a)) && Contains("power of two"));
    }
    GgufWriter w;
    w.add_i32("general.alignment", -32);
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "align-neg.gguf")), Contains("is -32"));
    GgufWriter w2;
    w2.add_string("general.alignment", "32");
    CHECK_THROWS_WITH(GgufFile::open(write_tmp(w2, "align-str.gguf")),
                      Contains("general.alignment' has type string"));
}

// ---------------------------------------------------------------------------------------------
// Rejections: hostile tensor infos
// ---------------------------------------------------------------------------------------------

TEST_CASE("gguf: rejects bad tensor infos", "[cpu][gguf]") {
    const std::vector<uint8_t> f32x4(16, 0);

    SECTION("n_dims 0") {
        GgufWriter w;
        w.add_tensor_raw("scalar", GgmlType::F32, {}, f32x4);
        CHECK_THROWS_WITH(
            GgufFile::open(write_tmp(w, "ndims0.gguf")),
            Contains("tensor 'scalar'") && Contains("n_dims = 0") && Contains("expected 1..4"));
    }
    SECTION("n_dims 5") {
        GgufWriter w;
        w.add_tensor_raw("five", GgmlType::F32, {1, 1, 2, 1, 2}, f32x4);
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "ndims5.gguf")),
                          Contains("tensor 'five'") && Contains("n_dims = 5"));
    }
    SECTION("zero and negative dimensions") {
        GgufWriter w;
        w.add_tensor_raw("zero", GgmlType::F32, {4, 0}, f32x4);
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "ne0.gguf")),
                          Contains("tensor 'zero'") && Contains("ne[1] = 0"));
        GgufWriter w2;
        w2.add_tensor_raw("neg", GgmlType::F32, {4}, f32x4).ne[0] = 1ull << 63;
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w2, "neneg.gguf")),
                          Contains("tensor 'neg'") && Contains("ne[0] = 9223372036854775808"));
    }
    SECTION("element count overflow") {
        GgufWriter w;
        w.add_tensor_raw("huge", GgmlType::F32, {int64_t(1) << 62, 4}, f32x4);
        CHECK_THROWS_WITH(
            GgufFile::open(write_tmp(w, "overflow.gguf")),
            Contains("tensor 'huge'") && Contains("element count") && Contains("overflows"));
        GgufWriter w2;  // 2^62 elements fit in int64, but not 2^64 bytes
        w2.add_tensor_raw("huge", GgmlType::F32, {int64_t(1) << 61, 2}, f32x4);
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w2, "overflow2.gguf")),
                          Contains("tensor 'huge'") && Contains("size in bytes"));
    }
    SECTION("ne[0] not a multiple of the block size") {
        GgufWriter w;
        w.add_tensor_raw("blk.0.ffn_down.weight", GgmlType::Q4_1, {33, 2}, q4_1_blocks(4));
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "blocksize.gguf")),
                          Contains("tensor 'blk.0.ffn_down.weight'") && Contains("ne[0] = 33") &&
                              Contains("block size 32 of type q4_1"));
    }
    SECTION("unknown tensor types") {
        for (uint32_t id : {4u, 31u, 99u, 0xFFFFFFFFu}) {
            GgufWriter w;
            w.add_tensor_raw("weird", id, {4}, f32x4);
            CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "type.gguf")),
                              Contains("tensor 'weird'") &&
                                  Contains("unknown ggml type id " + std::to_string(id)));
        }
    }
    SECTION("known but not dequantizable types still parse") {
        GgufWriter w;
        w.add_tensor_raw("blk.0.ffn_down.weight", 16u /* iq2_xxs */, {256},
                         std::vector<uint8_t>(66));
        const GgufFile g = GgufFile::open(write_tmp(w, "iq2.gguf"));
        CHECK(uint32_t(g.tensors().at(0).type) == 16u);
        CHECK(g.tensors().at(0).nbytes == 66);
    }
    SECTION("duplicate tensor names") {
        GgufWriter w;
        w.add_tensor_raw("blk.0.attn_q.weight", GgmlType::F32, {4}, f32x4);
        w.add_tensor_raw("other", GgmlType::F32, {4}, f32x4);
        w.add_tensor_raw("blk.0.attn_q.weight", GgmlType::F32, {4}, f32x4);
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "duptensor.gguf")),
                          Contains("tensor 'blk.0.attn_q.weight'") && Contains("duplicated"));
    }
    SECTION("misaligned offsets") {
        GgufWriter w;
        w.add_tensor_raw("a", GgmlType::F32, {4}, f32x4).offset_override = 4;
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w, "misaligned.gguf")),
                          Contains("tensor 'a'") && Contains("data offset 4") &&
                              Contains("not a multiple of the alignment 32"));
        GgufWriter w2;
        w2.set_alignment(64);
        w2.add_tensor_raw("a", GgmlType::F32, {4}, f32x4).offset_override = 32;
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w2, "misaligned64.gguf")),
                          Contains("not a multiple of the alignment 64"));
    }
    SECTION("data past the end of the file") {
        GgufWriter w;
        w.add_tensor_raw("blk.0.attn_q.weight", GgmlType::F32, {4}, f32x4).offset_override = 1024;
        const std::string path = write_tmp(w, "pastend.gguf");
        size_t data_start = 0;
        const size_t size = w.bytes(&data_start).size();
        CHECK_THROWS_WITH(GgufFile::open(path),
                          Contains(path + ": tensor 'blk.0.attn_q.weight': data [offset " +
                                   std::to_string(data_start + 1024) +
                                   ", 16 bytes] runs past the end of the file (size " +
                                   std::to_string(size) + ")"));
        GgufWriter w2;  // an offset that overflows when added to the data start
        w2.add_tensor_raw("x", GgmlType::F32, {4}, f32x4).offset_override = ~uint64_t(31);
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w2, "pastend2.gguf")),
                          Contains("tensor 'x'") && Contains("runs past the end of the file"));
        GgufWriter w3;  // the data is one byte short
        w3.add_tensor_raw("short", GgmlType::F32, {4}, std::vector<uint8_t>(15));
        CHECK_THROWS_WITH(GgufFile::open(write_tmp(w3, "pastend3.gguf")),
                          Contains("tensor 'short'") && Contains("16 bytes] runs past the end"));
    }
    SECTION("names with control characters are escaped") {
        GgufWriter w;
        w.add_tensor_raw(std::string("bad\nname", 8), GgmlType::F32, {4}, f32x4).offset_override =
            4;
        const std::string msg = open_error(write_tmp(w, "ctrl.gguf"));
        CHECK_THAT(msg, Contains("tensor 'bad\\x0aname'"));
        CHECK(msg.find('\n') == std::string::npos);
    }
}

// ---------------------------------------------------------------------------------------------
// Truncation and corruption: every failure is a kvs::Error, never a crash
// ---------------------------------------------------------------------------------------------

TEST_CASE("gguf: truncation at every byte is rejected", "[cpu][gguf]") {
    for (uint32_t alignment : {0u, 64u}) {
        const GgufWriter w = full_writer(3, alignment);
        size_t data_start = 0;
        const std::vector<uint8_t> full = w.bytes(&data_start);
        REQUIRE(data_start < full.size());
        const std::string path = temp_path("truncated.gguf");
        // Every cut in the header, metadata, tensor infos and padding, and every cut in the data
        // (the file is small): all must throw kvs::Error with a one-line message naming the file
        // (open_error fails the test when a cut file opens without an error).
        for (size_t cut = 0; cut < full.size(); ++cut) {
            GgufWriter::write_file(path,
                                   std::vector<uint8_t>(full.begin(), full.begin() + long(cut)));
            const std::string msg = open_error(path);
            if (msg.find(path) == std::string::npos || msg.find('\n') != std::string::npos) {
                FAIL("cut at " << cut << ": bad message: " << msg);
            }
        }
        // Header cuts say what is missing.
        GgufWriter::write_file(path, std::vector<uint8_t>(full.begin(), full.begin() + 10));
        CHECK_THAT(open_error(path), Contains("header: truncated file: n_tensors at offset 8"));
        GgufWriter::write_file(path, full);
        CHECK_NOTHROW(GgufFile::open(path));
    }
}

TEST_CASE("gguf: random corruption never crashes", "[cpu][gguf]") {
    const GgufWriter w = full_writer(3, 0);
    size_t data_start = 0;
    const std::vector<uint8_t> full = w.bytes(&data_start);
    const std::string path = temp_path("corrupt.gguf");
    uint64_t state = 12345;
    auto next = [&state]() {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        return uint32_t(state >> 33);
    };
    int n_ok = 0, n_err = 0;
    std::vector<float> buf;
    for (int iter = 0; iter < 2000; ++iter) {
        std::vector<uint8_t> bytes = full;
        const int n_flips = 1 + int(next() % 4);
        for (int k = 0; k < n_flips; ++k) {
            const size_t pos = next() % data_start;  // the structured part of the file
            const uint8_t values[] = {0x00, 0xFF, 0x7F, 0x80, 0x01, uint8_t(next())};
            bytes[pos] = values[next() % 6];
        }
        GgufWriter::write_file(path, bytes);
        try {
            const GgufFile g = GgufFile::open(path);
            ++n_ok;
            // Whatever was accepted must be safe to read in full.
            for (const kvs::GgufTensor& t : g.tensors()) {
                const kvs::GgmlTypeInfo* info = kvs::ggml_type_info(uint32_t(t.type));
                REQUIRE(info != nullptr);
                REQUIRE(t.nbytes ==
                        kvs::ggml_row_bytes(t.type, t.ne[0]) * size_t(t.n_elements / t.ne[0]));
                if (!info->can_dequantize) continue;
                buf.resize(size_t(t.n_elements));
                kvs::dequantize(t.type, t.data, buf.data(), t.n_elements);
            }
        } catch (const kvs::Error& e) {
            ++n_err;
            REQUIRE(std::string(e.what()).find('\n') == std::string::npos);
        }
    }
    INFO(n_ok << " accepted, " << n_err << " rejected");
    // Both outcomes occur: flips in names or string values leave a valid file (a reader that
    // rejected those would be too strict), flips in counts, types and offsets do not.
    CHECK(n_ok > 100);
    CHECK(n_err > 100);
}

// ---------------------------------------------------------------------------------------------
// The real model
// ---------------------------------------------------------------------------------------------

#ifndef KVS_MODEL
#define KVS_MODEL ""
#endif

TEST_CASE("gguf: the real SmolLM2 model", "[model][gguf]") {
    const std::string path = KVS_MODEL;
    if (path.empty() || !std::filesystem::exists(path)) {
        return kvs_test::skip("model not found at " + path + " (run scripts/setup.sh)");
    }
    const GgufFile g = GgufFile::open(path);
    CHECK(g.version() == 3);
    CHECK(g.alignment() == 32);
    CHECK(g.get_string("general.architecture") == "llama");
    CHECK(g.get_int("llama.block_count") == 30);
    CHECK(g.get_int("llama.embedding_length") == 576);
    CHECK(g.get_int("llama.attention.head_count") == 9);
    CHECK(g.get_int("llama.attention.head_count_kv") == 3);
    CHECK(g.get_float("llama.rope.freq_base") == 100000.0);
    CHECK(g.get_float("llama.attention.layer_norm_rms_epsilon") == Approx(1e-5));
    CHECK(g.get_int("tokenizer.ggml.bos_token_id") == 1);
    CHECK(g.get_int("tokenizer.ggml.add_bos_token") == 0);
    CHECK(g.get_string("tokenizer.ggml.model") == "gpt2");
    const auto& tokens = g.get_string_array("tokenizer.ggml.tokens");
    CHECK(tokens.size() == 49152);
    CHECK(g.get_string_array("tokenizer.ggml.merges").size() == 48900);
    const kvs::GgufValue* token_type = g.find("tokenizer.ggml.token_type");
    REQUIRE(token_type != nullptr);
    CHECK(token_type->elem_type == GgufType::I32);
    CHECK(token_type->ints.size() == 49152);

    // Tensor types as stored, by role (llama.cpp's quantize keeps 1-d tensors in F32 and, in a
    // Q4_1 file of a model with tied embeddings, the embedding in Q8_0). Per block: 7 matrices
    // (attn_q/k/v/output, ffn_gate/up/down) in Q4_1 and 2 norms in F32; plus output_norm (F32)
    // and token_embd (Q8_0), no output.weight (tied): 30 * 9 + 2 = 272 tensors, 210 Q4_1, 61 F32,
    // 1 Q8_0. gguf-py's GGUFReader (gguf 0.17) lists the same types for this file.
    const int n_block = 30;
    REQUIRE(g.tensors().size() == size_t(n_block * 9 + 2));
    std::map<std::string, int> by_type;
    for (const kvs::GgufTensor& t : g.tensors()) {
        const std::string type = kvs::ggml_type_info(uint32_t(t.type))->name;
        by_type[type]++;
        INFO(t.name << " is " << type);
        if (t.name == "token_embd.weight")
            CHECK(type == "q8_0");
        else if (t.ne.size() == 1)
            CHECK(type == "f32");  // the norms
        else
            CHECK(type == "q4_1");
    }
    CHECK(by_type ==
          std::map<std::string, int>{{"q4_1", 7 * n_block}, {"f32", 2 * n_block + 1}, {"q8_0", 1}});

    const kvs::GgufTensor* embd = g.tensor("token_embd.weight");
    REQUIRE(embd != nullptr);
    CHECK(embd->ne == std::vector<int64_t>{576, 49152});
    CHECK(embd->type == GgmlType::Q8_0);
    const kvs::GgufTensor* q = g.tensor("blk.0.attn_q.weight");
    REQUIRE(q != nullptr);
    CHECK(q->type == GgmlType::Q4_1);
    CHECK(q->ne == std::vector<int64_t>{576, 576});
    const kvs::GgufTensor* k = g.tensor("blk.0.attn_k.weight");
    REQUIRE(k != nullptr);
    CHECK(k->ne == std::vector<int64_t>{576, 192});
    const kvs::GgufTensor* norm = g.tensor("blk.0.attn_norm.weight");
    REQUIRE(norm != nullptr);
    CHECK(norm->type == GgmlType::F32);
    CHECK(norm->ne == std::vector<int64_t>{576});

    // Row 0 of the embedding and all of attn_q dequantize to finite, non-trivial values.
    std::vector<float> row(576);
    kvs::dequantize(embd->type, embd->data, row.data(), 576);
    double sum_sq = 0;
    int n_nonfinite = 0;
    for (float x : row) {
        n_nonfinite += !std::isfinite(x);
        sum_sq += double(x) * x;
    }
    CHECK(n_nonfinite == 0);
    CHECK(sum_sq > 0);
    std::vector<float> wq(size_t(q->n_elements));
    kvs::dequantize(q->type, q->data, wq.data(), q->n_elements);
    for (float x : wq) n_nonfinite += !std::isfinite(x);
    CHECK(n_nonfinite == 0);
}
