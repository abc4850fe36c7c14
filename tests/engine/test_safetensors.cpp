// Safetensors reader and Hugging Face folder reader (config.json -> ModelConfig, name mapping).
// Expected fp16/bf16 values come from hand-computed constants and from the independent
// encoders/decoders in safetensors_writer.h, not from the engine's conversion code.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/error.h"
#include "engine/safetensors.h"
#include "engine/weights.h"
#include "safetensors_writer.h"

using nlohmann::json;
using namespace kvs::test;
using Catch::Contains;

namespace {

// Matches a kvs::Error whose message is one line containing `sub` (and `sub2` when given).
class ErrorContains : public Catch::MatcherBase<kvs::Error> {
  public:
    explicit ErrorContains(std::string sub, std::string sub2 = "")
        : sub_(std::move(sub)), sub2_(std::move(sub2)) {}
    bool match(const kvs::Error& e) const override {
        const std::string m = e.what();
        return m.find(sub_) != std::string::npos && m.find(sub2_) != std::string::npos &&
               m.find('\n') == std::string::npos;
    }
    std::string describe() const override {
        return "is a one-line kvs::Error containing \"" + sub_ + "\"" +
               (sub2_.empty() ? "" : " and \"" + sub2_ + "\"");
    }

  private:
    std::string sub_, sub2_;
};

#define REQUIRE_KVS_ERROR(expr, ...) \
    REQUIRE_THROWS_MATCHES(expr, kvs::Error, ErrorContains(__VA_ARGS__))

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() &&
           (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

std::vector<float> random_values(size_t n, uint32_t seed, float lo = -4.0f, float hi = 4.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// A tensor header entry for hand-written (malformed) headers.
std::string entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
    return R"({"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets +
           "}";
}

json llama_config() {
    return {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"_name_or_path", "tiny-llama"},
            {"hidden_size", 64},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4},
            {"num_key_value_heads", 2},
            {"intermediate_size", 96},
            {"vocab_size", 50},
            {"max_position_embeddings", 512},
            {"rms_norm_eps", 1e-5},
            {"rope_theta", 500000.0},
            {"rope_scaling", nullptr},
            {"tie_word_embeddings", false}};
}

HfTensors one_tensor() {
    return {{"model.embed_tokens.weight", {{2, 2}, {1, 2, 3, 4}}}};
}

kvs::ModelConfig config_of(const json& cfg) {
    TempDir tmp;
    write_hf_model(tmp.path(), cfg, one_tensor());
    return kvs::open_hf_weights(tmp.str())->config();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writer self-checks (the encoders are the independent reference for the reader tests).

TEST_CASE("test writer: fp16/bf16 encoders round to nearest even", "[cpu]") {
    CHECK(encode_f16(1.0f) == 0x3C00);
    CHECK(encode_f16(-2.0f) == 0xC000);
    CHECK(encode_f16(65504.0f) == 0x7BFF);
    CHECK(encode_f16(65520.0f) == 0x7C00);
    CHECK(encode_f16(std::ldexp(1.0f, -24)) == 0x0001);
    CHECK(encode_f16(std::ldexp(1.0f, -25)) == 0x0000);         // tie -> even (0)
    CHECK(encode_f16(std::ldexp(3.0f, -25)) == 0x0002);         // tie -> even (2)
    CHECK(encode_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);  // tie -> even
    CHECK(encode_f16(1.0f + std::ldexp(3.0f, -11)) == 0x3C02);  // tie -> even
    CHECK(encode_bf16(1.0f) == 0x3F80);
    CHECK(encode_bf16(3.14159265f) == 0x4049);
    CHECK(encode_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);  // tie -> even
    CHECK(encode_bf16(1.0f + std::ldexp(3.0f, -8)) == 0x3F82);  // tie -> even
    for (float v : random_values(1000, 7)) {
        CHECK(std::fabs(decode_f16(encode_f16(v)) - v) <= std::fabs(v) * std::ldexp(1.0f, -11));
        CHECK(std::fabs(decode_bf16(encode_bf16(v)) - v) <= std::fabs(v) * std::ldexp(1.0f, -8));
    }
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

TEST_CASE("safetensors: F32 round trip, metadata, shapes, file order", "[cpu]") {
    TempDir tmp;
    const auto path = (tmp / "a.safetensors").string();
    const std::vector<float> a = {1.5f, -0.0f, 3.0e-42f /*subnormal*/, INFINITY, -7.25f, 1e30f};
    const std::vector<float> s = {42.0f};
    write_safetensors(
        path,
        {make_tensor("z.first", {2, 3}, a, Dtype::F32), make_tensor("a.scalar", {}, s, Dtype::F32),
         make_tensor("m.empty", {0, 4}, {}, Dtype::F32)},
        {{"format", "pt"}, {"note", "hello"}});
    const auto f = kvs::SafetensorsFile::open(path);
    REQUIRE(f.path() == path);
    REQUIRE(f.tensors().size() == 3);
    CHECK(f.tensors()[0].name == "z.first");  // file order, not name order
    CHECK(f.tensors()[1].name == "a.scalar");
    CHECK(f.tensors()[2].name == "m.empty");
    REQUIRE(f.metadata().size() == 2);
    CHECK(f.metadata()[0] == std::pair<std::string, std::string>("format", "pt"));
    CHECK(f.metadata()[1] == std::pair<std::string, std::string>("note", "hello"));

    const auto* t = f.tensor("z.first");
    REQUIRE(t != nullptr);
    CHECK(t->dtype == kvs::StDtype::F32);
    CHECK(t->shape == std::vector<int64_t>{2, 3});
    CHECK(t->n_elements == 6);
    CHECK(t->nbytes == 24);
    CHECK(same_bits(kvs::st_read_fp32(*t), a));

    const auto* sc = f.tensor("a.scalar");
    REQUIRE(sc != nullptr);
    CHECK(sc->shape.empty());
    CHECK(sc->n_elements == 1);
    CHECK(kvs::st_read_fp32(*sc) == s);

    const auto* e = f.tensor("m.empty");
    REQUIRE(e != nullptr);
    CHECK(e->n_elements == 0);
    CHECK(e->nbytes == 0);
    CHECK(kvs::st_read_fp32(*e).empty());
    CHECK(f.tensor("nope") == nullptr);
}

TEST_CASE("safetensors: F16 and BF16 bit patterns decode to hand-computed values", "[cpu]") {
    TempDir tmp;
    const auto path = (tmp / "h.safetensors").string();
    const std::vector<uint16_t> f16_bits = {0x0000, 0x8000, 0x3C00, 0xC000, 0x3555, 0x7BFF,
                                            0x0001, 0x03FF, 0x0400, 0x7C00, 0xFC00, 0x7E00};
    const std::vector<float> f16_expect = {0.0f,
                                           -0.0f,
                                           1.0f,
                                           -2.0f,
                                           0.333251953125f,
                                           65504.0f,
                                           5.9604644775390625e-08f,  // 2^-24
                                           6.0975551605224609e-05f,  // 1023 * 2^-24
                                           6.103515625e-05f,         // 2^-14
                                           INFINITY,
                                           -INFINITY,
                                           NAN};
    const std::vector<uint16_t> bf16_bits = {0x3F80, 0xC040, 0x4049, 0x0001, 0x7F7F,
                                             0x7F80, 0xFF80, 0x8000, 0x7FC0};
    const std::vector<float> bf16_expect = {1.0f,
                                            -3.0f,
                                            3.140625f,
                                            9.1835496157991212e-41f,  // 2^-133
                                            3.3895313892515355e+38f,  // (2 - 2^-7) * 2^127
                                            INFINITY,
                                            -INFINITY,
                                            -0.0f,
                                            NAN};
    write_safetensors(path, {make_tensor_bits("h", {3, 4}, f16_bits, Dtype::F16),
                             make_tensor_bits("b", {9}, bf16_bits, Dtype::BF16)});
    const auto f = kvs::SafetensorsFile::open(path);
    const auto h = kvs::st_read_fp32(*f.tensor("h"));
    const auto b = kvs::st_read_fp32(*f.tensor("b"));
    CHECK(f.tensor("h")->dtype == kvs::StDtype::F16);
    CHECK(f.tensor("h")->nbytes == 24);
    CHECK(f.tensor("b")->dtype == kvs::StDtype::BF16);
    REQUIRE(h.size() == f16_expect.size());
    REQUIRE(b.size() == bf16_expect.size());
    for (size_t i = 0; i < h.size(); ++i) {
        INFO("f16 bits 0x" << std::hex << f16_bits[i]);
        if (std::isnan(f16_expect[i])) {
            CHECK(std::isnan(h[i]));
        } else {
            CHECK(std::bit_cast<uint32_t>(h[i]) == std::bit_cast<uint32_t>(f16_expect[i]));
        }
    }
    for (size_t i = 0; i < b.size(); ++i) {
        INFO("bf16 bits 0x" << std::hex << bf16_bits[i]);
        if (std::isnan(bf16_expect[i])) {
            CHECK(std::isnan(b[i]));
        } else {
            CHECK(std::bit_cast<uint32_t>(b[i]) == std::bit_cast<uint32_t>(bf16_expect[i]));
        }
    }
}

TEST_CASE("safetensors: F32/F16/BF16 round trip of random values", "[cpu]") {
    TempDir tmp;
    for (Dtype d : {Dtype::F32, Dtype::F16, Dtype::BF16}) {
        INFO(dtype_name(d));
        const auto path = (tmp / (std::string(dtype_name(d)) + ".safetensors")).string();
        const auto v = random_values(3 * 37, 11);
        write_safetensors(path, {make_tensor("pad", {1}, {0.0f}, d),  // odd offsets for the rest
                                 make_tensor("w", {3, 37}, v, d)});
        const auto f = kvs::SafetensorsFile::open(path);
        std::vector<float> expect(v.size());
        for (size_t i = 0; i < v.size(); ++i) expect[i] = stored_value(v[i], d);
        CHECK(same_bits(kvs::st_read_fp32(*f.tensor("w")), expect));
    }
}

TEST_CASE("safetensors: open errors for missing files and directories", "[cpu]") {
    TempDir tmp;
    REQUIRE_KVS_ERROR(kvs::SafetensorsFile::open((tmp / "missing.safetensors").string()),
                      "cannot open safetensors file", "missing.safetensors");
    REQUIRE_KVS_ERROR(kvs::SafetensorsFile::open(tmp.str()), "is not a regular file");
}

TEST_CASE("safetensors: malformed files are rejected with the file and the cause", "[cpu]") {
    TempDir tmp;
    const auto path = (tmp / "bad.safetensors").string();
    const std::string d8(8, '\0');  // data for a [2] F32 tensor
    auto one = [](const std::string& e) { return R"({"x":)" + e + "}"; };
    struct Case {
        const char* what;
        std::string bytes;
        std::string expect;
    };
    const std::string deep = "{\"x\":" + std::string(40, '[') + std::string(40, ']') + "}";
    const std::vector<Case> cases = {
        {"empty file", "", "too short for the 8-byte header length"},
        {"short file", std::string(7, '\x01'), "too short for the 8-byte header length"},
        {"header past end", safetensors_raw("{}", "", 100), "runs past the end of the file"},
        {"absurd header length", safetensors_raw("{}", "", uint64_t{1} << 40), "is absurd"},
        {"all-ones header length", safetensors_raw("{}", "", ~uint64_t{0}), "is absurd"},
        {"zero header length", safetensors_raw("", "", 0), "too short for a JSON object"},
        {"invalid JSON", safetensors_raw(R"({"x": {"dtype": "F32",)", d8), "is not valid JSON"},
        {"invalid UTF-8", safetensors_raw("{\"\xff\": 1}", ""), "is not valid JSON"},
        {"trailing garbage", safetensors_raw("{} x", ""), "is not valid JSON"},
        {"header not an object", safetensors_raw("[1, 2]", ""), "header is not a JSON object"},
        {"deep nesting", safetensors_raw(deep, ""), "nests deeper"},
        {"duplicate tensor",
         safetensors_raw(R"({"x":)" + entry("F32", "[2]", "[0,8]") + R"(,"x":)" +
                             entry("F32", "[2]", "[0,8]") + "}",
                         d8),
         "tensor 'x' appears twice"},
        {"entry not an object", safetensors_raw(one("5"), ""), "tensor 'x': entry is not a JSON"},
        {"missing dtype", safetensors_raw(one(R"({"shape":[2],"data_offsets":[0,8]})"), d8),
         "tensor 'x': missing field 'dtype'"},
        {"missing shape", safetensors_raw(one(R"({"dtype":"F32","data_offsets":[0,8]})"), d8),
         "tensor 'x': missing field 'shape'"},
        {"missing data_offsets", safetensors_raw(one(R"({"dtype":"F32","shape":[2]})"), d8),
         "tensor 'x': missing field 'data_offsets'"},
        {"dtype not a string",
         safetensors_raw(one(R"({"dtype":32,"shape":[2],"data_offsets":[0,8]})"), d8),
         "tensor 'x': 'dtype' is not a string"},
        {"dtype I8", safetensors_raw(one(entry("I8", "[8]", "[0,8]")), d8),
         "unsupported dtype I8 for tensor 'x'"},
        {"dtype F64", safetensors_raw(one(entry("F64", "[1]", "[0,8]")), d8),
         "unsupported dtype F64 for tensor 'x'"},
        {"dtype lowercase", safetensors_raw(one(entry("f32", "[2]", "[0,8]")), d8),
         "unsupported dtype f32 for tensor 'x'"},
        {"shape not an array", safetensors_raw(one(entry("F32", "2", "[0,8]")), d8),
         "tensor 'x': 'shape' is not an array"},
        {"negative dim", safetensors_raw(one(entry("F32", "[2,-3]", "[0,8]")), d8),
         "shape[1] = -3 is not a non-negative integer"},
        {"fractional dim", safetensors_raw(one(entry("F32", "[2.5]", "[0,8]")), d8),
         "shape[0] = 2.5 is not a non-negative integer"},
        {"string dim", safetensors_raw(one(entry("F32", R"(["2"])", "[0,8]")), d8),
         "shape[0] = \"2\" is not a non-negative integer"},
        {"dim beyond u64",
         safetensors_raw(one(entry("F32", "[18446744073709551616]", "[0,8]")), d8),
         "is not a non-negative integer"},
        {"dim beyond i64", safetensors_raw(one(entry("F32", "[9223372036854775808]", "[0,8]")), d8),
         "overflows the element count"},
        {"element count overflow",
         safetensors_raw(one(entry("F32", "[4294967296,4294967296,4]", "[0,8]")), d8),
         "overflows the element count"},
        {"byte count overflow",
         safetensors_raw(one(entry("F32", "[4611686018427387904]", "[0,8]")), d8),
         "overflows the byte count"},
        {"data_offsets not an array", safetensors_raw(one(entry("F32", "[2]", "0")), d8),
         "'data_offsets' = 0 is not [begin, end]"},
        {"data_offsets of 3", safetensors_raw(one(entry("F32", "[2]", "[0,8,16]")), d8),
         "is not [begin, end]"},
        {"data_offsets of 1", safetensors_raw(one(entry("F32", "[2]", "[8]")), d8),
         "is not [begin, end]"},
        {"negative offset", safetensors_raw(one(entry("F32", "[2]", "[-8,0]")), d8),
         "is not [begin, end]"},
        {"fractional offset", safetensors_raw(one(entry("F32", "[2]", "[0,8.0]")), d8),
         "is not [begin, end]"},
        {"end before begin", safetensors_raw(one(entry("F32", "[2]", "[8,0]")), d8 + d8),
         "tensor 'x': data_offsets end 0 < begin 8"},
        {"size mismatch", safetensors_raw(one(entry("F32", "[2]", "[0,4]")), d8),
         "tensor 'x': data_offsets span 4 bytes but shape [2] x F32 needs 8"},
        {"size mismatch F16", safetensors_raw(one(entry("F16", "[2]", "[0,8]")), d8),
         "span 8 bytes but shape [2] x F16 needs 4"},
        {"end past the file", safetensors_raw(one(entry("F32", "[2]", "[0,8]")), "abcd"),
         "tensor 'x': data_offsets end 8 is past the end of the data (4 bytes"},
        {"begin past the file", safetensors_raw(one(entry("F32", "[2]", "[64,72]")), d8),
         "data_offsets end 72 is past the end of the data"},
        {"huge offsets",
         safetensors_raw(one(entry("F32", "[2]", "[18446744073709551608,18446744073709551615]")),
                         d8),
         "span 7 bytes"},
        {"metadata not an object", safetensors_raw(R"({"__metadata__":[1]})", ""),
         "__metadata__ is not a JSON object"},
        {"metadata value not a string", safetensors_raw(R"({"__metadata__":{"n":1}})", ""),
         "__metadata__ value for key 'n' is not a string"},
        {"control characters in a name",
         safetensors_raw(R"({"a\nb":)" + entry("I8", "[8]", "[0,8]") + "}", d8),
         "unsupported dtype I8 for tensor 'a\\x0ab'"},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        write_file(path, c.bytes);
        REQUIRE_KVS_ERROR(kvs::SafetensorsFile::open(path), c.expect, path);
    }
}

TEST_CASE("safetensors: a valid file truncated at every byte offset is rejected", "[cpu]") {
    TempDir tmp;
    const auto path = (tmp / "t.safetensors").string();
    const std::string full =
        safetensors_bytes({make_tensor("a", {2, 3}, random_values(6, 1), Dtype::F32),
                           make_tensor("b", {5}, random_values(5, 2), Dtype::F16),
                           make_tensor("c", {3}, random_values(3, 3), Dtype::BF16)},
                          {{"format", "pt"}});
    write_file(path, full);
    REQUIRE(kvs::SafetensorsFile::open(path).tensors().size() == 3);
    size_t rejected = 0;
    for (size_t n = 0; n < full.size(); ++n) {
        write_file(path, full.substr(0, n));
        try {
            kvs::SafetensorsFile::open(path);
        } catch (const kvs::Error& e) {
            ++rejected;
            CHECK(std::string(e.what()).find('\n') == std::string::npos);
        }
    }
    CHECK(rejected == full.size());
}

TEST_CASE("safetensors: random corruption never escapes as anything but kvs::Error", "[cpu]") {
    TempDir tmp;
    const auto path = (tmp / "f.safetensors").string();
    const std::string full =
        safetensors_bytes({make_tensor("a", {2, 3}, random_values(6, 1), Dtype::F32),
                           make_tensor("b", {5}, random_values(5, 2), Dtype::F16),
                           make_tensor("c", {3}, random_values(3, 3), Dtype::BF16)},
                          {{"format", "pt"}});
    uint64_t header_end = 0;
    std::memcpy(&header_end, full.data(), 8);
    header_end += 8;
    std::mt19937 rng(1234);
    const char interesting[] = "{}[]\",:-0123456789e.\\ F";
    int opened = 0, rejected = 0;
    for (int iter = 0; iter < 3000; ++iter) {
        std::string s = full;
        const int n_mut = 1 + static_cast<int>(rng() % 3);
        for (int m = 0; m < n_mut; ++m) {
            const size_t pos = rng() % header_end;  // the length field and the JSON
            s[pos] = (rng() % 2) ? static_cast<char>(rng() & 0xFF)
                                 : interesting[rng() % (sizeof interesting - 1)];
        }
        write_file(path, s);
        try {
            const auto f = kvs::SafetensorsFile::open(path);
            for (const auto& t : f.tensors()) {
                const auto v = kvs::st_read_fp32(t);
                REQUIRE(v.size() == static_cast<size_t>(t.n_elements));  // ASan checks the reads
            }
            ++opened;
        } catch (const kvs::Error&) {
            ++rejected;
        }
    }
    INFO("opened " << opened << ", rejected " << rejected);
    CHECK(rejected > 0);
    CHECK(opened > 0);
}

// ---------------------------------------------------------------------------------------------
// config.json -> ModelConfig

TEST_CASE("hf config: llama with every key", "[cpu]") {
    const auto c = config_of(llama_config());
    CHECK(c.arch == "llama");
    CHECK(c.name == "tiny-llama");
    CHECK(c.n_embd == 64);
    CHECK(c.n_layer == 2);
    CHECK(c.n_head == 4);
    CHECK(c.n_head_kv == 2);
    CHECK(c.head_dim == 16);
    CHECK(c.n_ff == 96);
    CHECK(c.n_vocab == 50);
    CHECK(c.n_ctx_train == 512);
    CHECK(c.rms_eps == 1e-5f);
    CHECK(c.rope_theta == 500000.0f);
    CHECK(c.rope_scaling.type == "none");
    CHECK(c.rope_pairing == kvs::RopePairing::Half);
    CHECK_FALSE(c.tied_embeddings);
    CHECK_FALSE(c.qkv_bias);
}

TEST_CASE("hf config: defaults for optional keys, name from the folder", "[cpu]") {
    const json cfg = {{"model_type", "llama"},          {"hidden_size", 48},
                      {"num_hidden_layers", 1},         {"num_attention_heads", 6},
                      {"num_key_value_heads", nullptr}, {"head_dim", nullptr},
                      {"intermediate_size", 80},        {"vocab_size", 30},
                      {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-6}};
    TempDir tmp;
    const auto dir = tmp / "My-Model_v2";
    write_hf_model(dir, cfg, one_tensor());
    for (const std::string& d : {dir.string(), dir.string() + "/", dir.string() + "/."}) {
        INFO(d);
        const auto c = kvs::open_hf_weights(d)->config();
        CHECK(c.arch == "llama");
        CHECK(c.name == "My-Model_v2");
        CHECK(c.n_head_kv == 6);
        CHECK(c.head_dim == 8);
        CHECK(c.rope_theta == 10000.0f);
        CHECK(c.rope_scaling.type == "none");
        CHECK(c.rms_eps == 1e-6f);
        CHECK(c.rope_pairing == kvs::RopePairing::Half);
        CHECK_FALSE(c.tied_embeddings);
        CHECK_FALSE(c.qkv_bias);
    }
}

TEST_CASE("hf config: explicit head_dim differs from hidden/heads", "[cpu]") {
    json cfg = llama_config();
    cfg["head_dim"] = 32;
    CHECK(config_of(cfg).head_dim == 32);
}

TEST_CASE("hf config: SmolLM2-style llama (tied, rope_scaling null)", "[cpu]") {
    const json cfg = json::parse(R"({
      "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
      "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
      "intermediate_size": 1536, "is_llama_config": true, "max_position_embeddings": 8192,
      "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30,
      "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
      "rope_interleaved": false, "rope_scaling": null, "rope_theta": 100000,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.42.3",
      "use_cache": true, "vocab_size": 49152})");
    const auto c = config_of(cfg);
    CHECK(c.arch == "llama");
    CHECK(c.n_embd == 576);
    CHECK(c.n_layer == 30);
    CHECK(c.n_head == 9);
    CHECK(c.n_head_kv == 3);
    CHECK(c.head_dim == 64);
    CHECK(c.n_ff == 1536);
    CHECK(c.n_vocab == 49152);
    CHECK(c.n_ctx_train == 8192);
    CHECK(c.rope_theta == 100000.0f);
    CHECK(c.rope_scaling.type == "none");
    CHECK(c.tied_embeddings);
}

TEST_CASE("hf config: mistral maps to llama", "[cpu]") {
    const json cfg = json::parse(R"({
      "architectures": ["MistralForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
      "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
      "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
      "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
      "torch_dtype": "bfloat16", "vocab_size": 32000})");
    auto c = config_of(cfg);
    CHECK(c.arch == "llama");
    CHECK(c.head_dim == 128);
    CHECK(c.n_head_kv == 8);
    CHECK_FALSE(c.qkv_bias);
    json by_type = cfg;
    by_type.erase("architectures");
    CHECK(config_of(by_type).arch == "llama");
}

TEST_CASE("hf config: qwen2 has qkv bias", "[cpu]") {
    const json cfg = json::parse(R"({
      "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
      "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
      "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768,
      "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
      "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
      "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
      "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false,
      "vocab_size": 151936})");
    const auto c = config_of(cfg);
    CHECK(c.arch == "qwen2");
    CHECK(c.qkv_bias);
    CHECK(c.head_dim == 64);
    CHECK(c.n_head == 14);
    CHECK(c.n_head_kv == 2);
    CHECK(c.rms_eps == 1e-6f);
    CHECK(c.rope_theta == 1000000.0f);
    CHECK(c.rope_pairing == kvs::RopePairing::Half);
    CHECK(c.tied_embeddings);
    json by_type = cfg;
    by_type.erase("architectures");
    CHECK(config_of(by_type).arch == "qwen2");
}

TEST_CASE("hf config: llama3 and linear rope_scaling", "[cpu]") {
    json cfg = llama_config();
    cfg["rope_scaling"] = {{"factor", 32.0},
                           {"high_freq_factor", 4.0},
                           {"low_freq_factor", 1.0},
                           {"original_max_position_embeddings", 8192},
                           {"rope_type", "llama3"}};
    auto c = config_of(cfg);
    CHECK(c.rope_scaling.type == "llama3");
    CHECK(c.rope_scaling.factor == 32.0f);
    CHECK(c.rope_scaling.low_freq_factor == 1.0f);
    CHECK(c.rope_scaling.high_freq_factor == 4.0f);
    CHECK(c.rope_scaling.original_context == 8192);
    CHECK(c.rope_theta == 500000.0f);

    cfg["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
    c = config_of(cfg);
    CHECK(c.rope_scaling.type == "linear");
    CHECK(c.rope_scaling.factor == 4.0f);

    cfg["rope_scaling"] = {{"rope_type", "default"}};
    CHECK(config_of(cfg).rope_scaling.type == "none");
}

TEST_CASE("hf config: transformers 5 rope_parameters", "[cpu]") {
    // As written by transformers 5.x LlamaConfig(...).save_pretrained().
    json cfg = json::parse(R"({
      "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
      "head_dim": 16, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
      "intermediate_size": 128, "max_position_embeddings": 16384, "mlp_bias": false,
      "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
      "num_key_value_heads": 2, "pad_token_id": null, "pretraining_tp": 1,
      "rms_norm_eps": 1e-06,
      "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                          "original_max_position_embeddings": 8192, "rope_theta": 500000.0,
                          "rope_type": "llama3"},
      "tie_word_embeddings": false, "transformers_version": "5.23.0", "use_cache": true,
      "vocab_size": 100})");
    auto c = config_of(cfg);
    CHECK(c.rope_theta == 500000.0f);
    CHECK(c.rope_scaling.type == "llama3");
    CHECK(c.rope_scaling.factor == 8.0f);
    CHECK(c.rope_scaling.original_context == 8192);

    cfg["rope_parameters"] = {{"rope_theta", 20000.0}, {"rope_type", "default"}};
    c = config_of(cfg);
    CHECK(c.rope_theta == 20000.0f);
    CHECK(c.rope_scaling.type == "none");
}

TEST_CASE("hf config: errors name the file and the key", "[cpu]") {
    SECTION("missing config.json") {
        TempDir tmp;
        write_safetensors(tmp / "model.safetensors", {make_tensor("x", {1}, {1.0f}, Dtype::F32)});
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()), "config.json not found", tmp.str());
    }
    SECTION("missing folder") {
        TempDir tmp;
        REQUIRE_KVS_ERROR(kvs::open_hf_weights((tmp / "nope").string()),
                          "Hugging Face folder not found", "nope");
    }
    SECTION("config.json is not JSON") {
        TempDir tmp;
        write_hf_model(tmp.path(), llama_config(), one_tensor());
        write_file(tmp / "config.json", "{\"hidden_size\": 64,");
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()), "config.json' is not valid JSON");
        write_file(tmp / "config.json", "[1]");
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()), "config.json: not a JSON object");
    }
    SECTION("missing required keys") {
        for (const char* key :
             {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "vocab_size", "max_position_embeddings", "rms_norm_eps"}) {
            INFO(key);
            json cfg = llama_config();
            cfg.erase(key);
            REQUIRE_KVS_ERROR(config_of(cfg), std::string("missing required key '") + key + "'",
                              "config.json");
        }
        json cfg = llama_config();
        cfg.erase("architectures");
        cfg.erase("model_type");
        REQUIRE_KVS_ERROR(config_of(cfg), "missing required key 'architectures'");
    }
    SECTION("unsupported architecture") {
        json cfg = llama_config();
        cfg["architectures"] = {"GPT2LMHeadModel"};
        REQUIRE_KVS_ERROR(config_of(cfg),
                          "unsupported architecture 'GPT2LMHeadModel' (supported: llama, "
                          "mistral, qwen2)");
        cfg.erase("architectures");
        cfg["model_type"] = "gemma";
        REQUIRE_KVS_ERROR(config_of(cfg), "unsupported architecture 'gemma'");
        cfg["architectures"] = json::array();
        REQUIRE_KVS_ERROR(config_of(cfg), "'architectures' = [] is not a non-empty array");
    }
    SECTION("bad values") {
        struct Bad {
            const char* key;
            json value;
            std::string expect;
        };
        const std::vector<Bad> bads = {
            {"hidden_size", "64", "'hidden_size' = \"64\" is not a positive integer"},
            {"hidden_size", 64.5, "'hidden_size' = 64.5 is not a positive integer"},
            {"num_hidden_layers", 0, "'num_hidden_layers' = 0 is not a positive integer"},
            {"num_attention_heads", -4, "'num_attention_heads' = -4 is not a positive integer"},
            {"vocab_size", 4294967296LL, "'vocab_size' = 4294967296 is not a positive integer"},
            {"num_key_value_heads", 3,
             "num_attention_heads 4 is not a multiple of "
             "num_key_value_heads 3"},
            {"head_dim", 15, "head_dim 15 must be even"},
            {"rms_norm_eps", "1e-5", "'rms_norm_eps' = \"1e-5\" is not a number"},
            {"rope_theta", -1.0, "rope_theta -1 must be > 0"},
            {"tie_word_embeddings", "yes", "'tie_word_embeddings' = \"yes\" is not a boolean"},
            {"_name_or_path", 5, "'_name_or_path' = 5 is not a string"},
            {"rope_scaling", 2.0, "'rope_scaling' = 2.0 is not an object"},
            {"rope_scaling", {{"factor", 2.0}}, "'rope_scaling' has no 'rope_type'"},
            {"rope_scaling",
             {{"rope_type", "yarn"}, {"factor", 4.0}},
             "unsupported rope scaling type 'yarn' in 'rope_scaling' (supported: linear, llama3)"},
            {"rope_scaling", {{"type", "linear"}}, "missing required key 'factor'"},
            {"rope_scaling", {{"type", "linear"}, {"factor", 0.0}}, "'rope_scaling.factor' = 0"},
            {"rope_scaling",
             {{"rope_type", "llama3"},
              {"factor", 8.0},
              {"high_freq_factor", 4.0},
              {"original_max_position_embeddings", 8192}},
             "missing required key 'low_freq_factor'"},
            {"rope_parameters", 1, "'rope_parameters' = 1 is not an object"},
            {"attention_bias", true, "'attention_bias': true is not supported"},
        };
        for (const auto& b : bads) {
            INFO(b.key << " = " << b.value.dump());
            json cfg = llama_config();
            cfg[b.key] = b.value;
            REQUIRE_KVS_ERROR(config_of(cfg), b.expect, "config.json");
        }
        json cfg = llama_config();
        cfg.erase("head_dim");
        cfg["hidden_size"] = 66;
        REQUIRE_KVS_ERROR(config_of(cfg),
                          "hidden_size 66 is not a multiple of num_attention_heads 4");
    }
}

// ---------------------------------------------------------------------------------------------
// Tensors of a folder

namespace {

// Every mapped HF tensor of a 2-layer qwen2 (with biases) plus one unmapped name; each tensor's
// values are distinct so that a wrong mapping shows.
HfTensors qwen2_tensors(bool with_lm_head) {
    HfTensors w;
    uint32_t seed = 100;
    auto add = [&](const std::string& name, std::vector<int64_t> shape) {
        int64_t n = 1;
        for (auto d : shape) n *= d;
        w[name] = {shape, random_values(static_cast<size_t>(n), seed++)};
    };
    add("model.embed_tokens.weight", {10, 8});
    add("model.norm.weight", {8});
    if (with_lm_head) add("lm_head.weight", {10, 8});
    for (int l = 0; l < 2; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        add(p + "input_layernorm.weight", {8});
        add(p + "self_attn.q_proj.weight", {8, 8});
        add(p + "self_attn.k_proj.weight", {4, 8});
        add(p + "self_attn.v_proj.weight", {4, 8});
        add(p + "self_attn.o_proj.weight", {8, 8});
        add(p + "self_attn.q_proj.bias", {8});
        add(p + "self_attn.k_proj.bias", {4});
        add(p + "self_attn.v_proj.bias", {4});
        add(p + "post_attention_layernorm.weight", {8});
        add(p + "mlp.gate_proj.weight", {12, 8});
        add(p + "mlp.up_proj.weight", {12, 8});
        add(p + "mlp.down_proj.weight", {8, 12});
        add(p + "self_attn.rotary_emb.inv_freq", {2});  // unmapped: ignored
    }
    return w;
}

json qwen2_tiny_config(bool tied) {
    return {{"architectures", {"Qwen2ForCausalLM"}},
            {"model_type", "qwen2"},
            {"hidden_size", 8},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 2},
            {"num_key_value_heads", 1},
            {"intermediate_size", 12},
            {"vocab_size", 10},
            {"max_position_embeddings", 64},
            {"rms_norm_eps", 1e-6},
            {"rope_theta", 1000000.0},
            {"tie_word_embeddings", tied}};
}

std::string canonical(const std::string& hf) {
    static const std::vector<std::pair<std::string, std::string>> layer = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    if (hf == "model.embed_tokens.weight") return "token_embd.weight";
    if (hf == "model.norm.weight") return "output_norm.weight";
    if (hf == "lm_head.weight") return "output.weight";
    for (int l = 0; l < 2; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        for (const auto& [from, to] : layer) {
            if (hf == p + from) return "blk." + std::to_string(l) + "." + to;
        }
    }
    return "";
}

void check_all_tensors(const kvs::WeightSource& src, const HfTensors& w, Dtype d) {
    int mapped = 0;
    for (const auto& [hf, sv] : w) {
        INFO(hf);
        const std::string name = canonical(hf);
        CHECK_FALSE(src.has(hf));  // HF names are not exposed
        if (name.empty()) continue;
        ++mapped;
        REQUIRE(src.has(name));
        CHECK(src.shape(name) == sv.first);
        std::vector<float> expect(sv.second.size());
        for (size_t i = 0; i < expect.size(); ++i) expect[i] = stored_value(sv.second[i], d);
        CHECK(same_bits(src.read(name), expect));
    }
    CHECK(mapped == (w.count("lm_head.weight") ? 27 : 26));
}

}  // namespace

TEST_CASE("hf folder: name mapping and values for F32/F16/BF16", "[cpu]") {
    const auto w = qwen2_tensors(true);
    for (Dtype d : {Dtype::F32, Dtype::F16, Dtype::BF16}) {
        INFO(dtype_name(d));
        TempDir tmp;
        write_hf_model(tmp.path(), qwen2_tiny_config(false), w, d);
        const auto src = kvs::open_hf_weights(tmp.str());
        CHECK(src->config().arch == "qwen2");
        CHECK(src->path() == tmp.str());
        CHECK_THAT(src->describe(), Contains(dtype_name(d)) && Contains(tmp.str()));
        check_all_tensors(*src, w, d);
        CHECK(src->has("output.weight"));
        CHECK_FALSE(src->has("blk.0.rotary_emb.inv_freq"));
        CHECK_FALSE(src->has("blk.2.attn_q.weight"));
        REQUIRE_KVS_ERROR(src->read("blk.9.attn_q.weight"),
                          "tensor 'blk.9.attn_q.weight' not found", tmp.str());
        REQUIRE_KVS_ERROR(src->shape("nope"), "tensor 'nope' not found");
    }
}

TEST_CASE("hf folder: tied embeddings hide lm_head", "[cpu]") {
    for (bool with_lm_head : {true, false}) {
        INFO("lm_head present: " << with_lm_head);
        TempDir tmp;
        write_hf_model(tmp.path(), qwen2_tiny_config(true), qwen2_tensors(with_lm_head));
        const auto src = kvs::open_hf_weights(tmp.str());
        CHECK(src->config().tied_embeddings);
        CHECK(src->has("token_embd.weight"));
        CHECK_FALSE(src->has("output.weight"));
        REQUIRE_THROWS_AS(src->read("output.weight"), kvs::Error);
    }
}

TEST_CASE("hf folder: non-canonical layer numbers are not mapped", "[cpu]") {
    TempDir tmp;
    HfTensors w = one_tensor();
    w["model.layers.01.input_layernorm.weight"] = {{2}, {1, 2}};
    w["model.layers.x.input_layernorm.weight"] = {{2}, {1, 2}};
    w["model.layers.1234567.input_layernorm.weight"] = {{2}, {1, 2}};
    w["model.layers.7.input_layernorm.weight"] = {{2}, {5, 6}};
    write_hf_model(tmp.path(), llama_config(), w);
    const auto src = kvs::open_hf_weights(tmp.str());
    CHECK_FALSE(src->has("blk.01.attn_norm.weight"));
    CHECK_FALSE(src->has("blk.1.attn_norm.weight"));
    CHECK_FALSE(src->has("blk.1234567.attn_norm.weight"));
    CHECK(src->read("blk.7.attn_norm.weight") == std::vector<float>{5, 6});
}

TEST_CASE("hf folder: sharded checkpoints with and without an index", "[cpu]") {
    const auto w = qwen2_tensors(true);
    SECTION("three shards, no index") {
        TempDir tmp;
        write_hf_model(tmp.path(), qwen2_tiny_config(false), w, Dtype::BF16, 3);
        CHECK(std::filesystem::exists(tmp / "model-00002-of-00003.safetensors"));
        const auto src = kvs::open_hf_weights(tmp.str());
        CHECK_THAT(src->describe(), Contains("3 file(s)"));
        check_all_tensors(*src, w, Dtype::BF16);
    }
    SECTION("three shards with an index; stray files outside the index are ignored") {
        TempDir tmp;
        write_hf_model(tmp.path(), qwen2_tiny_config(false), w, Dtype::F16, 3, true);
        // e.g. Mistral repos also ship consolidated.safetensors; the index decides.
        write_safetensors(
            tmp / "consolidated.safetensors",
            {make_tensor("model.norm.weight", {8}, std::vector<float>(8, 9.0f), Dtype::F32)});
        const auto src = kvs::open_hf_weights(tmp.str());
        check_all_tensors(*src, w, Dtype::F16);
    }
    SECTION("a tensor in two shards") {
        TempDir tmp;
        write_hf_model(tmp.path(), qwen2_tiny_config(false), w, Dtype::F32, 2);
        write_safetensors(
            tmp / "extra.safetensors",
            {make_tensor("model.layers.1.mlp.up_proj.weight", {1}, {1.0f}, Dtype::F32)});
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()),
                          "tensor 'model.layers.1.mlp.up_proj.weight' appears in both",
                          "extra.safetensors");
        // Unmapped names are checked too.
        std::filesystem::remove(tmp / "extra.safetensors");
        write_safetensors(
            tmp / "extra.safetensors",
            {make_tensor("model.layers.0.self_attn.rotary_emb.inv_freq", {1}, {1.0f}, Dtype::F32)});
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()), "appears in both");
    }
    SECTION("index names a missing shard") {
        TempDir tmp;
        write_hf_model(tmp.path(), qwen2_tiny_config(false), w, Dtype::F32, 3, true);
        std::filesystem::remove(tmp / "model-00003-of-00003.safetensors");
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()),
                          "shard 'model-00003-of-00003.safetensors' is missing",
                          "model.safetensors.index.json");
    }
    SECTION("index places a tensor in the wrong shard") {
        TempDir tmp;
        write_hf_model(tmp.path(), qwen2_tiny_config(false), w, Dtype::F32, 2, true);
        json index = json::parse(R"({"weight_map": {}})");
        for (const auto& [name, sv] : w)
            index["weight_map"][name] = "model-00001-of-00002.safetensors";
        write_file(tmp / "model.safetensors.index.json", index.dump());
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()),
                          "is listed in shard 'model-00001-of-00002.safetensors' but is not in it");
    }
    SECTION("malformed index") {
        TempDir tmp;
        write_hf_model(tmp.path(), qwen2_tiny_config(false), w, Dtype::F32, 2, true);
        write_file(tmp / "model.safetensors.index.json", R"({"metadata": {}})");
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()), "missing 'weight_map' object");
        write_file(tmp / "model.safetensors.index.json",
                   R"({"weight_map": {"a": "../x.safetensors"}})");
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()), "is not a file name in the folder");
        write_file(tmp / "model.safetensors.index.json", R"({"weight_map": {"a": 1}})");
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()), "weight_map['a'] is not a string");
        write_file(tmp / "model.safetensors.index.json", "{");
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()), "is not valid JSON");
    }
    SECTION("no safetensors files") {
        TempDir tmp;
        write_config(tmp.path(), qwen2_tiny_config(false));
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()), "no *.safetensors files in", tmp.str());
    }
    SECTION("a malformed shard names the shard") {
        TempDir tmp;
        write_hf_model(tmp.path(), qwen2_tiny_config(false), w, Dtype::F32, 2);
        const auto shard = (tmp / "model-00002-of-00002.safetensors").string();
        write_file(shard, safetensors_raw(R"({"q":)" + entry("I8", "[1]", "[0,1]") + "}", "x"));
        REQUIRE_KVS_ERROR(kvs::open_hf_weights(tmp.str()), "unsupported dtype I8 for tensor 'q'",
                          shard);
    }
}

TEST_CASE("open_weights: a folder is read as Hugging Face, a missing path is an error", "[cpu]") {
    TempDir tmp;
    write_hf_model(tmp.path(), llama_config(), one_tensor(), Dtype::BF16);
    const auto src = kvs::open_weights(tmp.str());
    CHECK(src->config().arch == "llama");
    CHECK(src->read("token_embd.weight") == std::vector<float>{1, 2, 3, 4});
    const std::string missing = (tmp / "no-such-model.gguf").string();
    REQUIRE_KVS_ERROR(kvs::open_weights(missing), "model not found: '" + missing + "'");
}
