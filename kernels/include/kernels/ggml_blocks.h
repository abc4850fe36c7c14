// ggml_blocks: llama.cpp's q8_0 and q4_0 block formats (its quantized KV cache types), packed and
// unpacked bit-identically to ggml's reference quantizers (quantize_row_q8_0_ref /
// quantize_row_q4_0_ref in ggml-quants.c) for finite input. Checked against gguf-py's
// gguf.quants by tests/kernels/test_ggml_blocks.cpp with a committed fixture.
//
// ## Format
// Input x: [n_tok, d] row-major fp32. Each row is cut into ceil(d / 32) blocks of 32 values;
// when d is not a multiple of 32 the last block is padded with zeros (a kvscope extension:
// ggml requires full blocks; the bytes equal ggml's for the zero-padded row). Blocks are stored
// row after row, no padding between them; fp16 values little-endian.
//   q8_0 (34 bytes): fp16 d, then 32 x int8 q.          x' = d * q
//       amax = max |x|; d = amax / 127 (fp32); q = roundf(x * (1/d)) (0 if d == 0),
//       roundf = half away from zero; stored d = fp16(d) round-to-nearest-even.
//   q4_0 (18 bytes): fp16 d, then 16 bytes of nibbles.  x' = d * (q - 8)
//       max = the element of largest |x| WITH its sign (the first one on ties); d = max / -8;
//       id = 1/d (0 if d == 0); q = min(15, trunc(x * id + 8.5)); byte j holds q[j] in its low
//       nibble and q[j + 16] in its high nibble (ggml's order, not consecutive pairs).
//   bytes = n_tok * ceil(d / 32) * {34, 18}
// One known difference between ggml's C and gguf-py: for an all-zero q4_0 block whose first value
// is -0.0, gguf-py stores d = +0 and ggml (and kvscope) d = -0 (0x8000); both decode to zeros.
//
// ## Non-finite input (ggml's behaviour there is undefined)
// NaN and +-inf are left out of the block's amax / max; then NaN stores the code of 0, and +-inf
// the code of +-amax (the block's largest finite magnitude with inf's sign; 0 if none), i.e.
// q8_0 +-127 and for q4_0 the code that +-amax gets. Every byte is written and the pack returns
// Status::non_finite_input.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace kvs::kernels {

enum class BlockFormat : int { q8_0 = 0, q4_0 = 1 };

constexpr int kGgmlBlockValues = 32;
// 34 for q8_0, 18 for q4_0.
constexpr size_t ggml_block_bytes(BlockFormat f) {
    return f == BlockFormat::q8_0 ? 34 : 18;
}

// Exact bytes the pack writes; 0 for n_tok < 0 or d < 1.
size_t block_packed_bytes(BlockFormat f, int n_tok, int d);

// x: [n_tok, d] -> out: block_packed_bytes bytes. Returns ok, invalid_argument (out untouched)
// or non_finite_input (out fully written).
Status block_pack_cpu(BlockFormat f, const float* x, int n_tok, int d, uint8_t* out);
// packed -> x_out: [n_tok, d] (padding values are not written).
Status block_unpack_cpu(BlockFormat f, const uint8_t* packed, int n_tok, int d, float* x_out);

// CUDA versions (device pointers; same bytes as the CPU versions; non_finite_input is not
// reported, the call returns ok).
Status block_pack_cuda(BlockFormat f, const float* x, int n_tok, int d, uint8_t* out, void* stream);
Status block_unpack_cuda(BlockFormat f, const uint8_t* packed, int n_tok, int d, float* x_out,
                         void* stream);

}  // namespace kvs::kernels
