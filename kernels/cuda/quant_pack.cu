// CUDA quant_pack and zscore_pack (format: kernels/include/kernels/quant_pack.h). First version,
// written for clarity and exact agreement with kernels/cpu/quant_pack.cpp rather than peak
// bandwidth:
//   quant_params_kernel: one thread per group: min / max, then (scale, zero) as one 32-bit store;
//   codes_kernel:        one thread per payload byte: it gathers the 8/b codes of that byte, so no
//                        two threads write the same byte whatever the group size (template
//                        flag: quant_pack or zscore_pack codes; zscore_params_kernel: mean /
//                        std per group);
//   quant_fp16_kernel:   b == 16, one thread per element;
//   quant_unpack_kernel: one thread per element.
// Per-channel groups make adjacent threads read adjacent channels (coalesced); per-token groups
// read g consecutive floats per thread (not coalesced; fine for a pack done once per token).
#include <cstdint>

#include "cuda_util.cuh"
#include "kernels/detail/quant_math.h"
#include "kernels/quant_pack.h"

namespace kvs::kernels {

namespace {

using detail::fp16_to_fp32;

struct Shape {
    int n_tok, d, bits, group, axis;
    size_t groups_per_tok;  // per token: ceil(d / g)
    size_t n_groups, row_bytes;
};

__device__ size_t group_of(const Shape& s, int t, int c) {
    if (s.axis == int(Axis::per_token)) return size_t(t) * s.groups_per_tok + size_t(c / s.group);
    return size_t(t / s.group) * size_t(s.d) + size_t(c);
}

__global__ void quant_params_kernel(const float* __restrict__ x, Shape s,
                                    uint32_t* __restrict__ params) {
    for (size_t gi = blockIdx.x * size_t(blockDim.x) + threadIdx.x; gi < s.n_groups;
         gi += size_t(gridDim.x) * blockDim.x) {
        // The group's elements: (t0 + i*dt, c0 + i*dc) for i < n.
        int t0, c0, dt, dc, n;
        if (s.axis == int(Axis::per_token)) {
            t0 = int(gi / s.groups_per_tok);
            c0 = int(gi % s.groups_per_tok) * s.group;
            dt = 0, dc = 1;
            n = min(s.group, s.d - c0);
        } else {
            t0 = int(gi / size_t(s.d)) * s.group;
            c0 = int(gi % size_t(s.d));
            dt = 1, dc = 0;
            n = min(s.group, s.n_tok - t0);
        }
        float mn = 0.0f, mx = 0.0f;
        bool seen = false;
        for (int i = 0; i < n; ++i) {
            const float v = x[size_t(t0 + i * dt) * s.d + (c0 + i * dc)];
            if (!detail::is_finite_f32(v)) continue;
            const float vc = detail::clamp_fp16_range(v);
            mn = seen ? fminf(mn, vc) : vc;
            mx = seen ? fmaxf(mx, vc) : vc;
            seen = true;
        }
        uint16_t scale, zero;
        detail::quant_group_params(mn, mx, s.bits, &scale, &zero);
        params[gi] = uint32_t(scale) | (uint32_t(zero) << 16);  // little-endian {scale, zero}
    }
}

// Zscore = true: zscore_pack's codes (seed 001's mean / std rule), else quant_pack's.
template <bool Zscore>
__global__ void codes_kernel(const float* __restrict__ x, Shape s,
                             const uint32_t* __restrict__ params, uint8_t* __restrict__ payload) {
    const size_t total = size_t(s.n_tok) * s.row_bytes;
    const int per_byte = 8 / s.bits;
    for (size_t idx = blockIdx.x * size_t(blockDim.x) + threadIdx.x; idx < total;
         idx += size_t(gridDim.x) * blockDim.x) {
        const int t = int(idx / s.row_bytes);
        const int c0 = int(idx % s.row_bytes) * per_byte;
        uint32_t byte = 0;
        for (int k = 0; k < per_byte && c0 + k < s.d; ++k) {
            const int c = c0 + k;
            const uint32_t p = params[group_of(s, t, c)];
            const float xv = x[size_t(t) * s.d + c];
            const float scale = fp16_to_fp32(p & 0xffffu), zero = fp16_to_fp32(p >> 16);
            const uint32_t q = Zscore ? detail::zscore_code(xv, scale, zero, s.bits)
                                      : detail::quant_code(xv, scale, zero, s.bits);
            byte |= q << (k * s.bits);
        }
        payload[idx] = uint8_t(byte);
    }
}

__global__ void quant_fp16_kernel(const float* __restrict__ x, size_t n,
                                  uint16_t* __restrict__ out) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
         i += size_t(gridDim.x) * blockDim.x) {
        out[i] = detail::quant_fp16_store(x[i]);
    }
}

__global__ void quant_unpack_kernel(const uint8_t* __restrict__ packed, Shape s,
                                    float* __restrict__ x_out) {
    const size_t total = size_t(s.n_tok) * size_t(s.d);
    const uint32_t* params = reinterpret_cast<const uint32_t*>(packed);
    const uint8_t* payload = packed + 4 * s.n_groups;
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total;
         i += size_t(gridDim.x) * blockDim.x) {
        const int t = int(i / size_t(s.d)), c = int(i % size_t(s.d));
        const uint8_t* row = payload + size_t(t) * s.row_bytes;
        if (s.bits == 16) {
            x_out[i] = fp16_to_fp32(reinterpret_cast<const uint16_t*>(row)[c]);
        } else {
            const uint32_t p = params[group_of(s, t, c)];
            x_out[i] = detail::quant_decode(detail::quant_get_code(row, c, s.bits),
                                            fp16_to_fp32(p & 0xffffu), fp16_to_fp32(p >> 16));
        }
    }
}

// zscore_pack (seed 001's mean / std codes, per-token groups): one thread per group for the
// (scale, zero) pair, then one thread per payload byte, as above.
__global__ void zscore_params_kernel(const float* __restrict__ x, Shape s, float os,
                                     uint32_t* __restrict__ params) {
    for (size_t gi = blockIdx.x * size_t(blockDim.x) + threadIdx.x; gi < s.n_groups;
         gi += size_t(gridDim.x) * blockDim.x) {
        const int t = int(gi / s.groups_per_tok), c0 = int(gi % s.groups_per_tok) * s.group;
        double mu, sigma;
        detail::zscore_group_stats(x + size_t(t) * s.d + c0, min(s.group, s.d - c0), &mu, &sigma);
        uint16_t scale, zero;
        detail::zscore_group_params(mu, sigma, s.bits, os, &scale, &zero);
        params[gi] = uint32_t(scale) | (uint32_t(zero) << 16);
    }
}

bool make_shape(int n_tok, int d, int bits, int group, Axis axis, Shape* s) {
    if (!bits_supported(bits) || group < 1 || n_tok < 0 || d < 1) return false;
    s->n_tok = n_tok, s->d = d, s->bits = bits, s->group = group, s->axis = int(axis);
    s->groups_per_tok = detail::ceil_div(size_t(d), size_t(group));
    s->n_groups = quant_n_groups(n_tok, d, bits, group, axis);
    s->row_bytes = detail::quant_row_bytes(d, bits);
    return true;
}

bool aligned4(const void* p) {
    return (reinterpret_cast<uintptr_t>(p) & 3u) == 0;
}

}  // namespace

Status quant_pack_cuda(const float* x, int n_tok, int d, int bits, int group, Axis axis,
                       uint8_t* out, void* stream) {
    Shape s;
    if (!make_shape(n_tok, d, bits, group, axis, &s)) return Status::invalid_argument;
    if (n_tok == 0) return Status::ok;
    if (!x || !out || !aligned4(out)) return Status::invalid_argument;
    const cudaStream_t st = cuda::as_stream(stream);
    const int nt = cuda::kThreads;
    if (bits == 16) {
        const size_t n = size_t(n_tok) * size_t(d);
        quant_fp16_kernel<<<cuda::grid_for(n), nt, 0, st>>>(x, n, reinterpret_cast<uint16_t*>(out));
        return cuda::launch_status();
    }
    uint32_t* params = reinterpret_cast<uint32_t*>(out);
    quant_params_kernel<<<cuda::grid_for(s.n_groups), nt, 0, st>>>(x, s, params);
    codes_kernel<false><<<cuda::grid_for(size_t(n_tok) * s.row_bytes), nt, 0, st>>>(
        x, s, params, out + 4 * s.n_groups);
    return cuda::launch_status();
}

Status quant_unpack_cuda(const uint8_t* packed, int n_tok, int d, int bits, int group, Axis axis,
                         float* x_out, void* stream) {
    Shape s;
    if (!make_shape(n_tok, d, bits, group, axis, &s)) return Status::invalid_argument;
    if (n_tok == 0) return Status::ok;
    if (!packed || !x_out || !aligned4(packed)) return Status::invalid_argument;
    const size_t n = size_t(n_tok) * size_t(d);
    quant_unpack_kernel<<<cuda::grid_for(n), cuda::kThreads, 0, cuda::as_stream(stream)>>>(
        packed, s, x_out);
    return cuda::launch_status();
}

Status zscore_pack_cuda(const float* x, int n_tok, int d, int bits, int group, float os,
                        uint8_t* out, void* stream) {
    if (bits == 16) return quant_pack_cuda(x, n_tok, d, bits, group, Axis::per_token, out, stream);
    Shape s;
    if (!make_shape(n_tok, d, bits, group, Axis::per_token, &s) || !(os > 0) || !isfinite(os))
        return Status::invalid_argument;
    if (n_tok == 0) return Status::ok;
    if (!x || !out || !aligned4(out)) return Status::invalid_argument;
    const cudaStream_t st = cuda::as_stream(stream);
    uint32_t* params = reinterpret_cast<uint32_t*>(out);
    zscore_params_kernel<<<cuda::grid_for(s.n_groups), cuda::kThreads, 0, st>>>(x, s, os, params);
    codes_kernel<true><<<cuda::grid_for(size_t(n_tok) * s.row_bytes), cuda::kThreads, 0, st>>>(
        x, s, params, out + 4 * s.n_groups);
    return cuda::launch_status();
}

}  // namespace kvs::kernels
