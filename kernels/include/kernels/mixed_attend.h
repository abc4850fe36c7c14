// mixed_attend: decode attention for one query head over a KV cache whose tokens are stored at
// mixed precisions (the cache a bits-per-token policy such as seeds 000 / 001 produces).
//
// ## Inputs
// The held tokens of one (layer, KV head) come in precision classes (bits 16, 8, 4 or 2; any
// number of classes, at most kMaxMixedClasses, a width may repeat). Class i holds n_tok tokens:
//   k, v: quant_pack(x [n_tok, d], bits, group, Axis::per_token) buffers (kernels/quant_pack.h).
//         Both K and V use per-token groups in this op, for simplicity: a token's bytes are
//         self-contained, so a token can change class or be evicted alone. (KIVI's per-channel
//         keys would tie the tokens of a group together.)
//   pos:  [n_tok] int32 positions of those tokens in the sequence.
// Attention is a sum over tokens, so it does not depend on their order: tokens are grouped by
// class (no divergence between threads of a class), and positions matter only for `probs`.
// Keys are post-RoPE, as the engine stores them.
//
// ## Outputs
//   out[d] = sum_j p_j v'_j,  p_j = exp(s_j - lse),  s_j = softmax_scale * dot(q, k'_j),
//   lse    = log(sum_j exp(s_j))  (natural log; the trace's convention)
// where k', v' are the dequantized keys/values: exactly a dense attention over
// quant_unpack'ed K/V (the CPU reference dequantizes, then calls kernels/attend.h's attend_cpu).
// probs (optional, nullptr to skip): probs[pos_j] = p_j for every held token; other entries are
// not touched. Positions must lie in [0, n_pos). No tokens at all: out = 0, lse = -inf.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace kvs::kernels {

constexpr int kMaxMixedClasses = 8;

struct PackedClass {
    int bits = 16;                 // 16, 8, 4 or 2
    int n_tok = 0;                 // tokens in this class (0 is fine)
    const uint8_t* k = nullptr;    // quant_pack'ed keys [n_tok, d], per-token groups
    const uint8_t* v = nullptr;    // quant_pack'ed values, same layout
    const int32_t* pos = nullptr;  // [n_tok]; only read when probs != nullptr
};

// q: [d]; classes: host array of n_classes descriptors (their pointers: host memory here).
// Returns ok or invalid_argument (bad bits / group / d, null buffers, a position out of range).
Status mixed_attend_cpu(const float* q, int d, int group, const PackedClass* classes, int n_classes,
                        float softmax_scale, float* out, float* lse, float* probs, int n_pos);

// CUDA: q, out, lse, probs and the classes' k / v / pos are device pointers; `classes` itself is
// a host array. fp32 accumulation (the [cuda] test asks NMSE <= 1e-10 vs the CPU). Needs a
// device workspace of mixed_attend_cuda_workspace_bytes(...) bytes. Positions out of range are
// skipped (not reported).
size_t mixed_attend_cuda_workspace_bytes(const PackedClass* classes, int n_classes, int d);
Status mixed_attend_cuda(const float* q, int d, int group, const PackedClass* classes,
                         int n_classes, float softmax_scale, float* out, float* lse, float* probs,
                         int n_pos, void* workspace, size_t workspace_bytes, void* stream);

}  // namespace kvs::kernels
