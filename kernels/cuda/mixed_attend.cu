// CUDA mixed_attend (kernels/include/kernels/mixed_attend.h). First version, in four launches,
// deterministic (no atomics), fp32:
//   scores_kernel:  one warp per token: s_j = scale * q . k'_j (lanes over channels, shuffle sum);
//   softmax_kernel: one block: max, sum of exp, lse; writes probs[pos_j] if asked;
//   partial_kernel: one block per chunk of kChunk tokens, threads over channels:
//                   partial[chunk, c] = sum_{j in chunk} p_j v'_j[c];
//   reduce_kernel:  out[c] = sum over chunks.
// Tokens are numbered class after class; a warp (or a chunk iteration) handles one token at a
// time, so all its threads decode the same precision: no divergence inside a class.
// Workspace: [lse: 16 bytes][scores: n_total floats][partial: n_chunks * d floats].
#include <cstdint>

#include "cuda_util.cuh"
#include "kernels/detail/quant_math.h"
#include "kernels/mixed_attend.h"
#include "kernels/quant_pack.h"

namespace kvs::kernels {

namespace {

constexpr int kChunk = 128;

struct ClassTable {
    int n;  // classes
    int d, group;
    long long start[kMaxMixedClasses + 1];  // first global token of each class; start[n] = total
    int bits[kMaxMixedClasses];
    int n_tok[kMaxMixedClasses];
    const uint8_t* k[kMaxMixedClasses];
    const uint8_t* v[kMaxMixedClasses];
    const int32_t* pos[kMaxMixedClasses];
};

// The class and the index within it of global token j.
__device__ inline int class_of(const ClassTable& ct, long long j, int* t) {
    int i = 0;
    while (i + 1 < ct.n && j >= ct.start[i + 1]) ++i;
    *t = int(j - ct.start[i]);
    return i;
}

// Element c of token t in a per-token quant_pack buffer (buf 4-byte aligned).
__device__ inline float load_elem(const uint8_t* buf, int n_tok, int t, int c, int bits, int d,
                                  int group) {
    if (bits == 16) {
        return detail::fp16_to_fp32(reinterpret_cast<const uint16_t*>(buf)[size_t(t) * d + c]);
    }
    const size_t gpt = (size_t(d) + group - 1) / size_t(group);
    const uint32_t p = reinterpret_cast<const uint32_t*>(buf)[size_t(t) * gpt + size_t(c / group)];
    const uint8_t* row =
        buf + 4 * size_t(n_tok) * gpt + size_t(t) * detail::quant_row_bytes(d, bits);
    return detail::quant_decode(detail::quant_get_code(row, c, bits),
                                detail::fp16_to_fp32(p & 0xffffu), detail::fp16_to_fp32(p >> 16));
}

__global__ void scores_kernel(const float* __restrict__ q, ClassTable ct, float scale,
                              float* __restrict__ scores) {
    const long long total = ct.start[ct.n];
    const int lane = threadIdx.x & 31;
    const long long warps = blockDim.x / 32;
    for (long long j = blockIdx.x * warps + threadIdx.x / 32; j < total;
         j += (long long)gridDim.x * warps) {
        int t;
        const int i = class_of(ct, j, &t);
        float acc = 0.0f;
        for (int c = lane; c < ct.d; c += 32) {
            acc =
                fmaf(q[c], load_elem(ct.k[i], ct.n_tok[i], t, c, ct.bits[i], ct.d, ct.group), acc);
        }
        for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (lane == 0) scores[j] = scale * acc;
    }
}

// One block of kThreads threads.
__global__ void softmax_kernel(ClassTable ct, const float* __restrict__ scores,
                               float* __restrict__ lse_ws, float* __restrict__ lse_out,
                               float* __restrict__ probs, int n_pos) {
    __shared__ float red[cuda::kThreads];
    const long long total = ct.start[ct.n];
    float m = -INFINITY;
    for (long long j = threadIdx.x; j < total; j += blockDim.x) m = fmaxf(m, scores[j]);
    red[threadIdx.x] = m;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (int(threadIdx.x) < w) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + w]);
        __syncthreads();
    }
    m = red[0];
    __syncthreads();
    float sum = 0.0f;
    for (long long j = threadIdx.x; j < total; j += blockDim.x) sum += expf(scores[j] - m);
    red[threadIdx.x] = sum;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (int(threadIdx.x) < w) red[threadIdx.x] += red[threadIdx.x + w];
        __syncthreads();
    }
    const float lse = m + logf(red[0]);
    if (threadIdx.x == 0) {
        *lse_ws = lse;
        *lse_out = lse;
    }
    if (probs) {
        for (long long j = threadIdx.x; j < total; j += blockDim.x) {
            int t;
            const int i = class_of(ct, j, &t);
            const int p = ct.pos[i][t];
            if (p >= 0 && p < n_pos) probs[p] = expf(scores[j] - lse);
        }
    }
}

__global__ void partial_kernel(ClassTable ct, const float* __restrict__ scores,
                               const float* __restrict__ lse_ws, float* __restrict__ partial) {
    const long long total = ct.start[ct.n];
    const long long j0 = (long long)blockIdx.x * kChunk;
    const long long j1 = j0 + kChunk < total ? j0 + kChunk : total;
    const float lse = *lse_ws;
    for (int c = threadIdx.x; c < ct.d; c += blockDim.x) {
        float acc = 0.0f;
        for (long long j = j0; j < j1; ++j) {
            int t;
            const int i = class_of(ct, j, &t);
            const float p = expf(scores[j] - lse);
            acc = fmaf(p, load_elem(ct.v[i], ct.n_tok[i], t, c, ct.bits[i], ct.d, ct.group), acc);
        }
        partial[size_t(blockIdx.x) * ct.d + c] = acc;
    }
}

__global__ void reduce_kernel(const float* __restrict__ partial, int n_chunks, int d,
                              float* __restrict__ out) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < d; c += gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int k = 0; k < n_chunks; ++k) acc += partial[size_t(k) * d + c];
        out[c] = acc;
    }
}

__global__ void empty_kernel(int d, float* __restrict__ out, float* __restrict__ lse) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < d; c += gridDim.x * blockDim.x) {
        out[c] = 0.0f;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) *lse = -INFINITY;
}

long long total_tokens(const PackedClass* classes, int n_classes) {
    long long n = 0;
    for (int i = 0; i < n_classes; ++i) n += classes[i].n_tok;
    return n;
}

}  // namespace

size_t mixed_attend_cuda_workspace_bytes(const PackedClass* classes, int n_classes, int d) {
    if (n_classes < 0 || n_classes > kMaxMixedClasses || d < 1 || (n_classes > 0 && !classes)) {
        return 0;
    }
    const long long n = total_tokens(classes, n_classes);
    const long long n_chunks = (n + kChunk - 1) / kChunk;
    return 16 + 4 * size_t(n) + 4 * size_t(n_chunks) * size_t(d);
}

Status mixed_attend_cuda(const float* q, int d, int group, const PackedClass* classes,
                         int n_classes, float softmax_scale, float* out, float* lse, float* probs,
                         int n_pos, void* workspace, size_t workspace_bytes, void* stream) {
    if (d < 1 || group < 1 || n_classes < 0 || n_classes > kMaxMixedClasses || !q || !out || !lse ||
        (n_classes > 0 && !classes) || (probs && n_pos < 0)) {
        return Status::invalid_argument;
    }
    ClassTable ct{};
    ct.n = 0, ct.d = d, ct.group = group;
    long long total = 0;
    for (int i = 0; i < n_classes; ++i) {
        const PackedClass& c = classes[i];
        if (!bits_supported(c.bits) || c.n_tok < 0) return Status::invalid_argument;
        if (c.n_tok == 0) continue;
        if (!c.k || !c.v || (probs && !c.pos)) return Status::invalid_argument;
        if ((reinterpret_cast<uintptr_t>(c.k) | reinterpret_cast<uintptr_t>(c.v)) & 3u) {
            return Status::invalid_argument;
        }
        ct.start[ct.n] = total;
        ct.bits[ct.n] = c.bits, ct.n_tok[ct.n] = c.n_tok;
        ct.k[ct.n] = c.k, ct.v[ct.n] = c.v, ct.pos[ct.n] = c.pos;
        ++ct.n;
        total += c.n_tok;
    }
    ct.start[ct.n] = total;
    const cudaStream_t st = cuda::as_stream(stream);
    if (total == 0) {
        empty_kernel<<<1, cuda::kThreads, 0, st>>>(d, out, lse);
        return cuda::launch_status();
    }
    if (!workspace || workspace_bytes < mixed_attend_cuda_workspace_bytes(classes, n_classes, d) ||
        (reinterpret_cast<uintptr_t>(workspace) & 15u)) {
        return Status::invalid_argument;
    }
    float* lse_ws = static_cast<float*>(workspace);
    float* scores = lse_ws + 4;
    float* partial = scores + total;
    const int n_chunks = int((total + kChunk - 1) / kChunk);
    constexpr int kWarps = 4;
    scores_kernel<<<cuda::grid_for(size_t(total), kWarps), kWarps * 32, 0, st>>>(
        q, ct, softmax_scale, scores);
    softmax_kernel<<<1, cuda::kThreads, 0, st>>>(ct, scores, lse_ws, lse, probs, n_pos);
    partial_kernel<<<n_chunks, 128, 0, st>>>(ct, scores, lse_ws, partial);
    reduce_kernel<<<cuda::grid_for(size_t(d)), cuda::kThreads, 0, st>>>(partial, n_chunks, d, out);
    return cuda::launch_status();
}

}  // namespace kvs::kernels
