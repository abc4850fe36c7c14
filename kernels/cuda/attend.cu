// CUDA attend (kernels/include/kernels/attend.h). First version: one block per query row, fp32,
// three passes over the entries held in registers / shared memory:
//   1. threads over entries: s_j = scale * q . k_j + bias_j (masked: -inf), block max;
//   2. threads over entries: e_j = exp(s_j - m), block sum z (tree reduction: deterministic);
//      probs written when asked;
//   3. threads over channels: out[c] = sum_j (e_j / z) v_j[c], entries in order.
// Scores live in dynamic shared memory (n floats), so n is limited by the block's shared memory
// (48 KiB: 12288 entries); larger stores return invalid_argument.
#include <cfloat>
#include <cstdint>

#include "cuda_util.cuh"
#include "kernels/attend.h"

namespace kvs::kernels {

namespace {

constexpr int kAttendThreads = 128;
constexpr int kMaxSharedEntries = 12288 - 2 * kAttendThreads;

__device__ float block_reduce(float x, float* red, bool is_max) {
    red[threadIdx.x] = x;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (int(threadIdx.x) < s) {
            const float a = red[threadIdx.x], b = red[threadIdx.x + s];
            red[threadIdx.x] = is_max ? fmaxf(a, b) : a + b;
        }
        __syncthreads();
    }
    const float r = red[0];
    __syncthreads();
    return r;
}

__global__ void attend_kernel(const float* __restrict__ q, const int32_t* __restrict__ qpos,
                              const float* __restrict__ k, const float* __restrict__ v,
                              const int32_t* __restrict__ kpos, const float* __restrict__ bias,
                              int n, int d, float scale, float* __restrict__ out,
                              float* __restrict__ lse, float* __restrict__ probs) {
    extern __shared__ float sh[];
    float* red = sh;                 // [blockDim]
    float* s = sh + kAttendThreads;  // [n]
    const int i = blockIdx.x;
    const float* qr = q + size_t(i) * size_t(d);
    const int32_t qp = qpos ? qpos[i] : 0;
    float m = -FLT_MAX;
    bool any = false;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float x = -INFINITY;
        if (!qpos || kpos[j] <= qp) {
            float acc = 0.0f;
            const float* kr = k + size_t(j) * size_t(d);
            for (int c = 0; c < d; ++c) acc = fmaf(qr[c], kr[c], acc);
            x = acc * scale + (bias ? bias[j] : 0.0f);
            m = fmaxf(m, x);
            any = true;
        }
        s[j] = x;
    }
    m = block_reduce(any ? m : -FLT_MAX, red, true);
    const bool none = block_reduce(any ? 1.0f : 0.0f, red, false) == 0.0f;
    float z = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float e = (none || s[j] == -INFINITY) ? 0.0f : __expf(s[j] - m);
        s[j] = e;
        z += e;
    }
    z = block_reduce(z, red, false);
    const float inv = none ? 0.0f : 1.0f / z;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        s[j] *= inv;
        if (probs) probs[size_t(i) * size_t(n) + size_t(j)] = s[j];
    }
    __syncthreads();
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < n; ++j)
            if (s[j] != 0.0f) acc = fmaf(s[j], v[size_t(j) * size_t(d) + size_t(c)], acc);
        out[size_t(i) * size_t(d) + size_t(c)] = acc;
    }
    if (threadIdx.x == 0) lse[i] = none ? -INFINITY : m + logf(z);
}

}  // namespace

Status attend_cuda(const float* q, const int32_t* qpos, int nq, const float* k, const float* v,
                   const int32_t* kpos, const float* bias, int n, int d, float scale, float* out,
                   float* lse, float* probs, void* stream) {
    if (d < 1 || nq < 0 || n < 0 || n > kMaxSharedEntries) return Status::invalid_argument;
    if (nq > 0 && (!q || !out || !lse)) return Status::invalid_argument;
    if (n > 0 && (!k || !v || !kpos)) return Status::invalid_argument;
    if (nq == 0) return Status::ok;
    const size_t shared = sizeof(float) * (size_t(kAttendThreads) + size_t(n));
    attend_kernel<<<unsigned(nq), kAttendThreads, shared, cuda::as_stream(stream)>>>(
        q, qpos, k, v, kpos, bias, n, d, scale, out, lse, probs);
    return cuda::launch_status();
}

}  // namespace kvs::kernels
