// Where a model's weights come from: a GGUF file or a Hugging Face folder
// (config.json + *.safetensors). The model code asks for tensors by canonical (ggml-style) name:
//   token_embd.weight, output_norm.weight, output.weight (absent when tied),
//   blk.N.attn_norm.weight, blk.N.attn_q.weight, blk.N.attn_k.weight, blk.N.attn_v.weight,
//   blk.N.attn_output.weight, blk.N.attn_q.bias, blk.N.attn_k.bias, blk.N.attn_v.bias (Qwen2),
//   blk.N.ffn_norm.weight, blk.N.ffn_gate.weight, blk.N.ffn_up.weight, blk.N.ffn_down.weight
// Shapes are given in PyTorch order: a matrix is [out_features, in_features], row-major.
// The Q/K rows are returned exactly as stored; config().rope_pairing says which RoPE pairing
// they expect (GGUF llama: Interleaved, HF: Half).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/ggml_types.h"

namespace kvs {

// A tensor's bytes as the file stores them (GGUF: ggml blocks, rows of ne[0] values).
struct RawTensorView {
    GgmlType type;
    const uint8_t* data;
    size_t row_bytes;
};

class WeightSource {
  public:
    virtual ~WeightSource() = default;
    virtual const ModelConfig& config() const = 0;
    virtual bool has(const std::string& name) const = 0;
    // PyTorch order; throws kvs::Error when absent.
    virtual std::vector<int64_t> shape(const std::string& name) const = 0;
    // Dequantized to fp32, row-major, in PyTorch order; throws kvs::Error when absent.
    virtual std::vector<float> read(const std::string& name) const = 0;
    // The stored bytes, when the format keeps ggml blocks (GGUF); valid while the source lives.
    virtual std::optional<RawTensorView> raw(const std::string& /*name*/) const {
        return std::nullopt;
    }
    // One line for logs: format, path, dominant tensor type.
    virtual std::string describe() const = 0;
    // Path of the file or folder.
    virtual const std::string& path() const = 0;
};

std::unique_ptr<WeightSource> open_gguf_weights(const std::string& path);
std::unique_ptr<WeightSource> open_hf_weights(const std::string& dir);
// A directory -> Hugging Face folder; a file -> GGUF. Throws kvs::Error with the cause.
std::unique_ptr<WeightSource> open_weights(const std::string& path);

}  // namespace kvs
