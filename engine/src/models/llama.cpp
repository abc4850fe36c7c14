// Llama family: Llama 1/2/3, SmolLM, TinyLlama, Mistral (same graph: RMSNorm, RoPE, GQA, SwiGLU).
// llama.cpp's converter permutes Q/K rows so that ggml's "normal" RoPE (adjacent pairs) applies:
// GGUF files use the interleaved pairing, HF checkpoints the rotate-half pairing.
// Llama 3 RoPE scaling comes from config.json (HF) or the `rope_freqs.weight` tensor (GGUF).
#include "engine/model.h"

namespace kvs {

const ArchSpec* arch_llama() {
    static const ArchSpec spec{"llama", {"mistral"}, RopePairing::Interleaved, false};
    return &spec;
}

}  // namespace kvs
