// A tiny random-weight model written by the test both as GGUF (Q/K rows permuted the way
// llama.cpp's converter does, interleaved RoPE) and as a Hugging Face folder (safetensors,
// rotate-half RoPE) gives the same logits through both readers; for Llama (with and without
// tied embeddings and with Llama 3 RoPE scaling) and for Qwen2 (QKV bias, no permutation).
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "engine/model.h"
#include "engine/runner.h"
#include "engine/weights.h"
#include "gguf_writer.h"
#include "safetensors_writer.h"
#include "tiny_model.h"

using namespace kvs;
using kvs::test::hf_config;
using kvs::test::HfTensors;
using kvs::test::random_weights;
using kvs::test::TinySpec;
using kvs::test::write_gguf;

namespace {

std::vector<float> run_logits(const WeightSource& src, const std::vector<int32_t>& ids) {
    auto m = Model::load(src);
    DenseKvCache cache(m->kv_shape(), int(ids.size()));
    std::vector<float> logits;
    prefill(*m, ids.data(), int(ids.size()), 0, cache, 4, LogitsFor::All, logits);
    return logits;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
    return m;
}

}  // namespace

TEST_CASE("tiny random model: GGUF and safetensors readers give the same logits", "[cpu]") {
    std::vector<TinySpec> specs(5);
    specs[1].tied = true;
    specs[2].llama3_rope = true;
    specs[3].arch = "qwen2";
    specs[3].bias = true;
    specs[4].arch = "mistral";
    const std::vector<int32_t> ids = {1, 5, 9, 2, 36, 0, 17, 17, 3, 30, 11};
    int k = 0;
    for (const TinySpec& s : specs) {
        DYNAMIC_SECTION(s.arch << (s.tied ? " tied" : "")
                               << (s.llama3_rope ? " llama3-rope" : "")) {
            const HfTensors w = random_weights(s, 100 + uint32_t(k));
            kvs::test::TempDir dir;
            kvs::test::write_hf_model(dir.path(), hf_config(s), w, kvs::test::Dtype::F32);
            // llama.cpp converts Llama/Mistral Q/K to the interleaved pairing, not Qwen2.
            const bool permute = s.arch != "qwen2";
            const std::string gg = write_gguf(s, w, "tiny" + std::to_string(k) + ".gguf", permute);
            auto hf = open_weights(dir.str());
            auto gf = open_weights(gg);
            CHECK(hf->config().rope_pairing == RopePairing::Half);
            CHECK(gf->config().rope_pairing ==
                  (permute ? RopePairing::Interleaved : RopePairing::Half));
            const auto a = run_logits(*hf, ids), b = run_logits(*gf, ids);
            const double diff = max_abs_diff(a, b);
            INFO("max |logit diff| " << diff);
            CHECK(diff < 1e-4);
            // The comparison is sensitive: a GGUF whose Q/K were not permuted gives other logits.
            if (permute) {
                const std::string bad =
                    write_gguf(s, w, "tiny_bad" + std::to_string(k) + ".gguf", false);
                CHECK(max_abs_diff(a, run_logits(*open_weights(bad), ids)) > 1e-3);
            }
        }
        ++k;
    }
}

TEST_CASE("tiny model: a bad shape or a missing tensor is a clear error", "[cpu]") {
    TinySpec s;
    HfTensors w = random_weights(s, 7);
    kvs::test::TempDir dir;
    auto w2 = w;
    w2.erase("model.layers.1.mlp.up_proj.weight");
    kvs::test::write_hf_model(dir.path() / "missing", hf_config(s), w2);
    auto src = open_weights((dir.path() / "missing").string());
    REQUIRE_THROWS_WITH(Model::load(*src), Catch::Contains("blk.1.ffn_up.weight"));
    auto w3 = w;
    w3["model.layers.0.self_attn.k_proj.weight"].first = {10, 24};
    w3["model.layers.0.self_attn.k_proj.weight"].second.resize(10 * 24);
    kvs::test::write_hf_model(dir.path() / "shape", hf_config(s), w3);
    auto src3 = open_weights((dir.path() / "shape").string());
    REQUIRE_THROWS_WITH(Model::load(*src3), Catch::Contains("blk.0.attn_k.weight") &&
                                                Catch::Contains("expected [12, 24]"));
}
