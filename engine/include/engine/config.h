// Model hyper-parameters, independent of the file format they came from.
#pragma once
#include <string>

namespace kvs {

// Which dimensions of a head RoPE rotates together.
//  - Interleaved: (2i, 2i+1). Llama GGUF files store Q/K weights permuted for this pairing
//    (llama.cpp's convert script permutes HF weights; ggml's "normal" RoPE mode).
//  - Half: (i, i + d/2), "rotate_half". HF checkpoints of Llama, and Qwen2 in any format (NEOX).
enum class RopePairing { Interleaved, Half };

inline const char* rope_pairing_name(RopePairing p) {
    return p == RopePairing::Interleaved ? "interleaved" : "half";
}

struct RopeScaling {
    std::string type = "none";  // "none", "linear", "llama3"
    float factor = 1.0f;
    float low_freq_factor = 1.0f;   // llama3
    float high_freq_factor = 4.0f;  // llama3
    int original_context = 8192;    // llama3
};

struct ModelConfig {
    std::string arch;  // registry key: "llama", "qwen2"
    std::string name;  // human-readable, e.g. "SmolLM2 135M Instruct"
    int n_layer = 0;
    int n_embd = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    int n_ff = 0;
    int n_vocab = 0;
    int n_ctx_train = 0;
    float rms_eps = 1e-5f;
    float rope_theta = 10000.0f;
    RopeScaling rope_scaling;
    RopePairing rope_pairing = RopePairing::Half;
    bool tied_embeddings = false;
    bool qkv_bias = false;
};

}  // namespace kvs
