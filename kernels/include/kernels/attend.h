// attend: the one attention routine of kvscope. The engine's dense cache, the compressed
// (policy-driven) cache, replay, the viewer and mixed_attend all call it; there is no other.
//
// ## What it computes
// nq query rows attend one (layer, KV head) store of n entries. A row is one (query head, query
// token) pair: all query heads of a GQA group and all tokens of a chunk go in one call, because
// they read the same keys and values.
//   s_ij = scale * dot(q_i, k_j) + bias_j                  (bias: optional, per entry)
//   entry j is visible to row i when kpos[j] <= qpos[i]     (causal by stored position;
//                                                            qpos == nullptr: all visible)
//   m_i = max_j s_ij;  e_ij = exp(s_ij - m_i) (float);  z_i = sum_j e_ij (double, j ascending)
//   (exp is the routine's own: Cephes' expf polynomial, within 2 ulp, 0 below -87.3, the same
//   bits in the AVX2 and the scalar code; libm's expf would differ between them and costs ~10x)
//   p_ij = e_ij * float(1 / z_i);  lse_i = m_i + log(z_i);  out_i = sum_j p_ij v_j (j ascending)
// A row that sees no entry gets out = 0, lse = -inf and p = 0.
// k and v are fp32 rows (attend_cpu) or the packed rows a compressed cache really stores
// (attend_packed_cpu, kernels/packed_rows.h), decoded a tile of entries at a time inside the
// routine: the same values quant_unpack / block_unpack give, so both entry points give the same
// bits for the same entries, while the packed one reads only the packed bytes. The bias is what a
// merged entry adds to its logit (log of the number of tokens it stands for), or 0.
//
// ## Exactness contract (what makes replay and the live engine agree bit for bit)
// Every s_ij, p_ij and out_i is computed with the same operations in the same order whatever nq,
// n, the row's place in the call, or the invisible entries present: a row's result depends only
// on q_i, qpos_i and the visible entries (in order). Invisible entries contribute exact zeros.
// So a chunk of queries attended in one call gives the same bits as each query attended alone
// over a store holding only the entries it sees.
//
// ## Shapes (row-major)
//   q [nq, d], qpos [nq] or null; k, v [n, d]; kpos [n]; bias [n] or null;
//   out [nq, d] or null (then probs is required: the probabilities alone, no weighted sum);
//   lse [nq]; probs [nq, n] or null (written for every entry, 0 where invisible).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/packed_rows.h"

namespace kvs::kernels {

// Returns invalid_argument (nothing written) for d < 1, nq < 0, n < 0, or a null pointer that is
// required (q, lse and one of out / probs when nq > 0; k, kpos when n > 0; v when out is given).
// Single-threaded: callers run independent (head group, chunk) calls on their threads.
Status attend_cpu(const float* q, const int32_t* qpos, int nq, const float* k, const float* v,
                  const int32_t* kpos, const float* bias, int n, int d, float scale, float* out,
                  float* lse, float* probs);

// The same over packed rows (kernels/packed_rows.h): entry j's key is k's row j, its value v's
// row j, each in its own format. Bit for bit attend_cpu over the decoded rows. Returns
// invalid_argument for the cases above or a PackedRows without data / off / fmt.
Status attend_packed_cpu(const float* q, const int32_t* qpos, int nq, const PackedRows& k,
                         const PackedRows& v, const int32_t* kpos, const float* bias, int n, int d,
                         float scale, float* out, float* lse, float* probs);

// CUDA version (device pointers, same semantics; fp32 throughout, one block per row). The
// [cuda] test checks it against attend_cpu. Returns cuda_unavailable in a build without CUDA.
Status attend_cuda(const float* q, const int32_t* qpos, int nq, const float* k, const float* v,
                   const int32_t* kpos, const float* bias, int n, int d, float scale, float* out,
                   float* lse, float* probs, void* stream);

}  // namespace kvs::kernels
