// packed_rows: the entries of one (layer, KV head) of a compressed cache as they are really
// stored (one K row or one V row per entry, each in its own format), and their decoding. The
// compressed store (simulator/unit_store.h) keeps nothing else; attention reads these bytes
// (kernels/attend.h, attend_packed_cpu), so decode reads what a real packed cache reads.
//
// ## Layout
// Entry j's row lives at data + off[j], in format fmt[j] (a RowFormat):
//   f32            d fp32 values (4 d bytes)
//   f16            d fp16 values (2 d bytes)
//   pt2/pt4/pt8    quant_pack(x [1, d], b, group, Axis::per_token) (kernels/quant_pack.h):
//                  ceil(d / group) {fp16 scale, fp16 zero} pairs, then ceil(d b / 8) code bytes
//   kv2/kv4/kv8    one token row of a KIVI key block (quant_pack(x [g, d], b, g,
//                  Axis::per_channel)): its ceil(d b / 8) code bytes at off[j]; the block's d
//                  {scale, zero} pairs (one per channel) at data + aux[j]
//   q8_0 / q4_0    llama.cpp blocks of one row (kernels/ggml_blocks.h)
//   lr16 / lr32    low rank (ZACK): r coefficients (fp16 / fp32) at off[j]; the basis at
//                  data + aux[j]: a uint32 r (1 <= r <= d), then r basis rows of d fp32 values
//                  (b_0 .. b_{r-1}); the row is x = sum_k c_k b_k
// All values little-endian, no alignment assumed. Rows may lie anywhere in `data` and in any
// order; only off/aux say where.
//
// ## Decoding
// dequant_rows writes the fp32 values that quant_unpack_cpu / block_unpack_cpu give for the same
// bytes, bit for bit (x' = fmaf(q, scale, zero); q8_0/q4_0: d * q): attention over packed rows
// equals attention over the unpacked rows exactly. Low-rank rows: x[c] = one fmaf chain over
// k = 0 .. r-1 of c_k b_k[c] (the same bits whichever path decodes them).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace kvs::kernels {

enum class RowFormat : uint8_t { f32, f16, pt2, pt4, pt8, kv2, kv4, kv8, q8_0, q4_0, lr16, lr32 };

struct PackedRows {
    const uint8_t* data = nullptr;
    const uint32_t* off = nullptr;  // [n] byte offset of entry j's row
    const uint32_t* aux = nullptr;  // [n] KIVI rows: offset of the block's params (else unused)
    const uint8_t* fmt = nullptr;   // [n] RowFormat
    int group = 32;                 // per-token group size of pt* rows
};

// Bits per element of a format (32, 16, 2, 4, 8, 2, 4, 8, 8, 4, 16, 32; low rank: per stored
// coefficient).
int row_format_bits(RowFormat f);
// Bytes a row of d elements occupies at off[j] (KIVI rows: the codes only; their block's params,
// 4 d bytes, are shared by the block's tokens). Low-rank rows: pass the basis's rank r as d
// (the row stores r coefficients; the basis, 4 + 4 d r bytes, is shared by the unit's rows).
size_t row_format_bytes(RowFormat f, int d, int group);
// The rank r of the low-rank basis at `basis` (its uint32 header).
uint32_t low_rank_of(const uint8_t* basis);

// rows [j0, j1) -> x [j1 - j0, d] fp32.
void dequant_rows(const PackedRows& r, int j0, int j1, int d, float* x);

}  // namespace kvs::kernels
