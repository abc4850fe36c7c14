// quant_pack: per-group asymmetric integer quantization of a KV block, bit-packed (the KIVI
// family of formats), plus fp16 passthrough. The replay simulator and the compressed cache both
// store K/V through these functions, so bytes and errors measured offline are the real ones.
//
// ## Format (version 1)
// Input x: [n_tok, d] row-major fp32 (one KV head: n_tok tokens of head_dim d).
// bits b in {2, 4, 8}: integer codes q in [0, 2^b - 1]; b == 16: fp16 passthrough (no groups).
// Groups of `group` (g) consecutive elements share one (scale, zero):
//   Axis::per_token   groups run along d within one token (KIVI's values):
//                     token t has G_t = ceil(d / g) groups; group (t, j) covers channels
//                     [j*g, min(d, (j+1)*g)); n_groups = n_tok * G_t; index t*G_t + j.
//   Axis::per_channel groups run along tokens within one channel (KIVI's keys):
//                     channel c has G_c = ceil(n_tok / g) groups; group (i, c) covers tokens
//                     [i*g, min(n_tok, (i+1)*g)); n_groups = G_c * d; index i*d + c.
//   The last group along the axis is partial when d (per token) or n_tok (per channel) is not a
//   multiple of g; it is quantized from the elements it has.
// Byte layout (all multi-byte values little-endian; no padding between sections):
//   [params: n_groups x {fp16 scale, fp16 zero}]   4 bytes per group, group index order above
//   [payload: n_tok rows x row_bytes]               row_bytes = ceil(d*b / 8)
// The params come first so that, with a 4-byte aligned buffer, each (scale, zero) pair is one
// aligned 32-bit load. Each token row starts on a byte boundary (a token can be read, evicted or
// re-packed alone); code k of a row occupies bits [k*b, (k+1)*b) of the row, counting bit 0 as
// the least significant bit of the row's first byte ("little-endian within bytes": with b = 4,
// channel 0 is the low nibble of byte 0, channel 1 the high nibble). Unused trailing bits of a
// row are written as 0. With b = 16 there are no params and a row is d fp16 values.
//   quant_packed_bytes = 4 * n_groups + n_tok * row_bytes      (exact; nothing else is written)
//
// ## Rounding (per group; min/max in fp32)
//   zero  = fp16_round_down(min)                       largest fp16 <= min
//   scale = fp16_round_up((max - zero_f) / (2^b - 1))  smallest fp16 >= that (fp32 arithmetic)
//   q     = clamp(roundf((x - zero_f) / scale_f), 0, 2^b - 1)  (q = 0 when scale == 0)
//   x'    = fmaf(q, scale_f, zero_f)                   (one rounding, same on CPU and CUDA)
// where zero_f, scale_f are the stored fp16 values. Directed rounding (instead of rounding both
// to nearest) keeps [zero, zero + (2^b-1)*scale] covering [min, max], which gives the bound
//   |x - x'| <= scale_f / 2   (plus fp32 rounding of the arithmetic, ~1e-7 relative)
// for every finite element. With round-to-nearest the bound fails: for a group in [100, 100.01]
// the fp16 zero alone is off by up to 0.03, far more than scale/2.
// max == min: zero = min rounded down; if min is an fp16 value, scale = 0 and every element
// decodes to exactly min; otherwise scale is the tiny step covering min - zero.
// b == 16: x' = fp16 round-to-nearest-even of x, finite values saturated to +-65504.
//
// ## Range and non-finite input
// Finite values are first clamped to fp16's range [-65504, 65504]. NaN and +-inf are left out of
// a group's min/max (the group is quantized from its finite elements; all non-finite: min = max
// = 0); then +inf stores the top code, -inf code 0, NaN code 0. The pack still writes every byte
// and returns Status::non_finite_input. With b == 16, +-inf and NaN are stored as fp16 inf/NaN.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace kvs::kernels {

enum class Axis : int { per_token = 0, per_channel = 1 };

// The widths the format stores. snap_bits rounds any request to the nearest of {2, 4, 8, 16},
// ties to the larger one: <= 2 -> 2; 3..5 -> 4; 6..11 -> 8; >= 12 -> 16.
inline bool bits_supported(int bits) {
    return bits == 2 || bits == 4 || bits == 8 || bits == 16;
}
int snap_bits(int bits);

// Exact bytes quant_pack writes (params + payload); 0 for arguments it rejects (bits not in
// {2,4,8,16}, group < 1, n_tok < 0, d < 1) or for n_tok == 0.
size_t quant_packed_bytes(int n_tok, int d, int bits, int group, Axis axis);
// Number of (scale, zero) groups (0 for bits == 16).
size_t quant_n_groups(int n_tok, int d, int bits, int group, Axis axis);

// x: [n_tok, d] fp32 -> out: quant_packed_bytes(...) bytes. Returns ok, invalid_argument (out
// untouched) or non_finite_input (out fully written, see above). No alignment required.
Status quant_pack_cpu(const float* x, int n_tok, int d, int bits, int group, Axis axis,
                      uint8_t* out);
// packed -> x_out: [n_tok, d] fp32. Returns ok or invalid_argument.
Status quant_unpack_cpu(const uint8_t* packed, int n_tok, int d, int bits, int group, Axis axis,
                        float* x_out);

// ## z-score codes (seed 001's mean / std quantizer, zscore_pack_cpu)
// The same bytes as quant_pack with Axis::per_token (so quant_unpack_cpu, dequant_rows and the
// attention kernels decode them unchanged and the byte count is quant_packed_bytes), filled by
// the seed's rule x' = round((x - mu) / sigma * h / s) * s * sigma / h + mu, h = 2^(b-1) - 1,
// with mu, sigma the mean and (population) standard deviation of the group's finite elements
// and s the outlier scale: the codes -h .. +h are stored as q = code + h in [0, 2h] (the top
// code 2^b - 1 is unused), with
//   scale = fp16_round_up(s * sigma / h),  zero = fp16_round_nearest(mu - h * scale_f)
//   q     = clamp(roundf((x - zero_f) / scale_f), 0, 2h),   x' = fmaf(q, scale_f, zero_f)
// so values within s * sigma of the mean are kept to scale_f / 2 (plus the fp16 rounding of
// zero), and values further out are clipped to mu +- h * scale_f (larger s: fewer clipped,
// coarser steps). sigma = 0 or NaN input: q = h (the mean). bits == 16: quant_pack's fp16.
// Returns invalid_argument for bits not in {2, 4, 8, 16}, group < 1, d < 1, s not > 0.
Status zscore_pack_cpu(const float* x, int n_tok, int d, int bits, int group, float s,
                       uint8_t* out);
// CUDA version (device pointers, `out` 4-byte aligned): byte for byte the CPU's.
Status zscore_pack_cuda(const float* x, int n_tok, int d, int bits, int group, float s,
                        uint8_t* out, void* stream);

// CUDA versions: device pointers; `packed`/`out` must be 4-byte aligned (cudaMalloc is). Byte for
// byte the same output as the CPU versions. The non_finite_input status is not reported (it
// would need a device-to-host copy): the bytes follow the same policy and the call returns ok.
Status quant_pack_cuda(const float* x, int n_tok, int d, int bits, int group, Axis axis,
                       uint8_t* out, void* stream);
Status quant_unpack_cuda(const uint8_t* packed, int n_tok, int d, int bits, int group, Axis axis,
                         float* x_out, void* stream);

}  // namespace kvs::kernels
