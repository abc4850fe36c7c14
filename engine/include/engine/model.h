// A decoder-only transformer of the Llama family (Llama 1/2/3, SmolLM2, TinyLlama, Mistral) or
// Qwen2, run on CPU in fp32 with Eigen GEMMs and OpenMP. Architectures live one per file in
// engine/src/models/ and register in models/registry.cpp (see engine/README.md).
//
// Hook points (ARCHITECTURE.md, contract 1): for every layer and processed chunk the forward pass
// calls ForwardObserver::on_layer with the tensors named in LayerTap. Capture and live policies
// subscribe there; they never reach into the forward pass.
#pragma once
#include <Eigen/Core>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/ggml_types.h"
#include "engine/kv_cache.h"

namespace kvs {

class WeightSource;

// What the forward pass publishes per layer and chunk (all row-major, valid during the call).
struct LayerTap {
    int layer = 0;
    int n_tok = 0;
    int n_head = 0, n_head_kv = 0, head_dim = 0;
    const int32_t* tokens = nullptr;  // [n_tok]
    const int32_t* pos = nullptr;     // [n_tok]
    const float* q = nullptr;         // "attn.q":   [n_head, n_tok, d], post-RoPE
    const float* k = nullptr;         // "attn.k":   [n_head_kv, n_tok, d], post-RoPE
    const float* v = nullptr;         // "attn.v":   [n_head_kv, n_tok, d]
    const float* out = nullptr;  // "attn.out": [n_head, n_tok, d], before the output projection
    const float* lse =
        nullptr;  // "attn.lse": [n_head, n_tok], natural log of sum(exp(q.k/sqrt(d)))
};

class ForwardObserver {
  public:
    virtual ~ForwardObserver() = default;
    virtual void on_layer(const LayerTap& tap) = 0;
    // Called after the layers of a chunk with the chunk's tokens (before logits).
    virtual void on_chunk_done(int /*n_tok*/, const int32_t* /*pos*/) {}
};

enum class LogitsFor { None, Last, All };

using MatrixRM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A weight matrix: fp32 for the prefill GEMMs, and, when the file stores ggml blocks that have a
// direct kernel (engine/quant_matvec.h), a view of those blocks for the decode GEMV, which is
// bound by the bytes it reads. The view points into the WeightSource's mapping.
struct Weight {
    MatrixRM f32;  // [out, in]
    GgmlType q_type = GgmlType::F32;
    const uint8_t* q_data = nullptr;  // null: no direct kernel, use f32
    size_t q_row_bytes = 0;
};

struct LayerWeights {
    Eigen::VectorXf attn_norm, ffn_norm;
    Weight wq, wk, wv, wo;       // [out, in]
    Eigen::VectorXf bq, bk, bv;  // empty unless qkv_bias
    Weight w_gate, w_up, w_down;
};

class Model {
  public:
    // Loads and validates every tensor (shapes against the config); throws kvs::Error.
    // The model may read quantized blocks from `src` directly: keep `src` alive as long as the
    // model (LoadedModel in runner.h holds both).
    static std::unique_ptr<Model> load(const WeightSource& src);

    const ModelConfig& config() const { return cfg_; }
    KvShape kv_shape() const { return {cfg_.n_layer, cfg_.n_head, cfg_.n_head_kv, cfg_.head_dim}; }
    size_t n_params() const;

    // Runs n_tok tokens at positions pos[i] (consecutive for a normal run) through all layers,
    // appending their K/V to `cache` and attending over it. Logits (row-major [n_out, n_vocab])
    // are written to `logits` for the last token or all tokens.
    void forward(const int32_t* tokens, const int32_t* pos, int n_tok, KvCache& cache,
                 LogitsFor which, std::vector<float>& logits, ForwardObserver* obs = nullptr) const;

    // RoPE in place on x: [n_heads, n_tok, d] at positions pos, with this model's pairing,
    // theta and scaling.
    void apply_rope(float* x, int n_heads, int n_tok, const int32_t* pos) const;
    // The d/2 frequencies apply_rope rotates with (engine/rope.h, and a GGUF file's divisors).
    const std::vector<float>& rope_inv_freq() const { return inv_freq_; }

  private:
    ModelConfig cfg_;
    Weight tok_embd_;  // [n_vocab, n_embd]
    Weight output_;    // [n_vocab, n_embd]; empty when tied
    Eigen::VectorXf output_norm_;
    std::vector<LayerWeights> layers_;
    std::vector<float> inv_freq_;  // [d/2], scaling applied
};

// The architecture registry: maps GGUF `general.architecture` / HF model_type to what differs
// between architectures. One entry per file in engine/src/models/.
struct ArchSpec {
    const char* name;                  // "llama"
    std::vector<std::string> aliases;  // other names that map here ("mistral")
    RopePairing gguf_rope_pairing;     // how llama.cpp's converter stores Q/K for this arch
    bool qkv_bias;                     // Q/K/V projections carry a bias
};
const ArchSpec* find_arch(const std::string& name);  // nullptr if unknown
std::string supported_archs();                       // "llama, mistral, qwen2"

}  // namespace kvs
