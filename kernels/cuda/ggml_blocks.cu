// CUDA q8_0 / q4_0 (format: kernels/include/kernels/ggml_blocks.h). One warp per 32-value block:
// lane j owns value j (coalesced loads), the block's amax / signed max come from warp shuffles,
// lane 0 stores d. Unpack: one thread per value.
#include <cstdint>

#include "cuda_util.cuh"
#include "kernels/detail/ggml_block_math.h"
#include "kernels/ggml_blocks.h"

namespace kvs::kernels {

namespace {

constexpr int QK = kGgmlBlockValues;
constexpr unsigned kFull = 0xffffffffu;

__global__ void block_pack_kernel(int fmt, const float* __restrict__ x, int n_tok, int d, int nb,
                                  uint8_t* __restrict__ out) {
    const int lane = threadIdx.x & 31;
    const size_t warps_per_block = blockDim.x / 32;
    const size_t n_blocks = size_t(n_tok) * size_t(nb);
    const size_t bb = fmt == int(BlockFormat::q8_0) ? 34 : 18;
    // The loop bound is the same for all lanes of a warp, so shuffles see the full warp.
    for (size_t bi = blockIdx.x * warps_per_block + threadIdx.x / 32; bi < n_blocks;
         bi += size_t(gridDim.x) * warps_per_block) {
        const size_t t = bi / size_t(nb);
        const int c = int(bi % size_t(nb)) * QK + lane;
        const float v = c < d ? x[t * size_t(d) + c] : 0.0f;
        // Largest finite |v|, and the lowest lane holding it (ggml keeps the first on ties).
        float a = detail::is_finite_f32(v) ? fabsf(v) : 0.0f;
        int arg = lane;
        for (int off = 16; off > 0; off >>= 1) {
            const float a2 = __shfl_xor_sync(kFull, a, off);
            const int arg2 = __shfl_xor_sync(kFull, arg, off);
            if (a2 > a || (a2 == a && arg2 < arg)) a = a2, arg = arg2;
        }
        const float amax = a;
        uint8_t* blk = out + bi * bb;
        if (fmt == int(BlockFormat::q8_0)) {
            const float dd = detail::q8_0_scale(amax);
            const float id = detail::inv_or_zero(dd);
            blk[2 + lane] = uint8_t(detail::q8_0_code(detail::block_sanitize(v, amax), id));
            if (lane == 0) detail::store_u16_le(blk, detail::fp32_to_fp16_rne(dd));
        } else {
            const float sv = __shfl_sync(kFull, v, arg);
            const float max = amax == 0.0f ? 0.0f : sv;  // ggml: max stays +0 if all |v| == 0
            const float dd = detail::q4_0_scale(max);
            const float id = detail::inv_or_zero(dd);
            const uint32_t q = detail::q4_0_code(detail::block_sanitize(v, amax), id);
            const uint32_t hi = __shfl_down_sync(kFull, q, 16);
            if (lane < 16) blk[2 + lane] = uint8_t(q | (hi << 4));
            if (lane == 0) detail::store_u16_le(blk, detail::fp32_to_fp16_rne(dd));
        }
    }
}

__global__ void block_unpack_kernel(int fmt, const uint8_t* __restrict__ packed, int n_tok, int d,
                                    int nb, float* __restrict__ x_out) {
    const size_t total = size_t(n_tok) * size_t(d);
    const size_t bb = fmt == int(BlockFormat::q8_0) ? 34 : 18;
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total;
         i += size_t(gridDim.x) * blockDim.x) {
        const size_t t = i / size_t(d);
        const int c = int(i % size_t(d));
        const int j = c % QK;
        const uint8_t* blk = packed + (t * size_t(nb) + size_t(c / QK)) * bb;
        const float dd = detail::fp16_to_fp32(detail::load_u16_le(blk));
        if (fmt == int(BlockFormat::q8_0)) {
            x_out[i] = dd * float(int8_t(blk[2 + j]));
        } else {
            const int q = j < QK / 2 ? (blk[2 + j] & 0x0f) : (blk[2 + j - QK / 2] >> 4);
            x_out[i] = dd * float(q - 8);
        }
    }
}

}  // namespace

Status block_pack_cuda(BlockFormat f, const float* x, int n_tok, int d, uint8_t* out,
                       void* stream) {
    if (n_tok < 0 || d < 1) return Status::invalid_argument;
    if (n_tok == 0) return Status::ok;
    if (!x || !out) return Status::invalid_argument;
    const int nb = (d + QK - 1) / QK;
    const size_t n_blocks = size_t(n_tok) * size_t(nb);
    constexpr int kWarps = 8;
    const unsigned grid = cuda::grid_for(n_blocks, kWarps);
    block_pack_kernel<<<grid, kWarps * 32, 0, cuda::as_stream(stream)>>>(int(f), x, n_tok, d, nb,
                                                                         out);
    return cuda::launch_status();
}

Status block_unpack_cuda(BlockFormat f, const uint8_t* packed, int n_tok, int d, float* x_out,
                         void* stream) {
    if (n_tok < 0 || d < 1) return Status::invalid_argument;
    if (n_tok == 0) return Status::ok;
    if (!packed || !x_out) return Status::invalid_argument;
    const int nb = (d + QK - 1) / QK;
    const size_t n = size_t(n_tok) * size_t(d);
    block_unpack_kernel<<<cuda::grid_for(n), cuda::kThreads, 0, cuda::as_stream(stream)>>>(
        int(f), packed, n_tok, d, nb, x_out);
    return cuda::launch_status();
}

}  // namespace kvs::kernels
