// Qwen2: the Llama graph plus a bias on the Q/K/V projections. llama.cpp does not permute
// Qwen2's Q/K (it uses NEOX-style RoPE), so GGUF and HF both use the rotate-half pairing.
#include "engine/model.h"

namespace kvs {

const ArchSpec* arch_qwen2() {
    static const ArchSpec spec{"qwen2", {}, RopePairing::Half, true};
    return &spec;
}

}  // namespace kvs
