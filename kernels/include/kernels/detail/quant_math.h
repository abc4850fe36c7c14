// The scalar arithmetic of the quant_pack format (see kernels/quant_pack.h), shared by the CPU
// reference and the CUDA kernels so that both write the same bits. Layout arithmetic (offsets,
// group indices) is written out separately in each implementation.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/detail/fp16.h"

namespace kvs::kernels::detail {

constexpr float kFp16Max = 65504.0f;

KVS_HD inline float clamp_fp16_range(float x) {
    return x < -kFp16Max ? -kFp16Max : (x > kFp16Max ? kFp16Max : x);
}

KVS_HD inline size_t ceil_div(size_t a, size_t b) {
    return (a + b - 1) / b;
}

KVS_HD inline size_t quant_row_bytes(int d, int bits) {
    return (size_t(d) * size_t(bits) + 7) / 8;
}

// (scale, zero) of a group from the min / max of its finite, range-clamped elements.
KVS_HD inline void quant_group_params(float mn, float mx, int bits, uint16_t* scale,
                                      uint16_t* zero) {
    *zero = fp16_round_down(mn);
    const float zero_f = fp16_to_fp32(*zero);
    const float levels = float((1 << bits) - 1);
    const float step = (mx - zero_f) / levels;
    *scale = fp16_round_up(step);
}

// The code of x in a group (scale_f, zero_f are the decoded fp16 params).
KVS_HD inline uint32_t quant_code(float x, float scale_f, float zero_f, int bits) {
    const uint32_t qmax = (1u << bits) - 1u;
    if (x != x) return 0u;  // NaN
    if (scale_f == 0.0f) return 0u;
    x = clamp_fp16_range(x);  // also maps +-inf to the range ends
    const float t = roundf((x - zero_f) / scale_f);
    if (!(t > 0.0f)) return 0u;
    if (t >= float(qmax)) return qmax;
    return uint32_t(t);
}

// z-score codes (zscore_pack, quant_pack.h): a group's (scale, zero) from its mean and standard
// deviation (of the finite, range-clamped elements, in double), and an element's code in [0, 2h].
// Mean and (population) standard deviation of the finite, range-clamped elements of x[0, n), in
// double, in element order; false when any element is not finite.
KVS_HD inline bool zscore_group_stats(const float* x, int n, double* mu, double* sigma) {
    double sum = 0, sq = 0;
    int m = 0;
    bool finite = true;
    for (int i = 0; i < n; ++i) {
        if (!is_finite_f32(x[i])) {
            finite = false;
            continue;
        }
        sum += double(clamp_fp16_range(x[i]));
        ++m;
    }
    *mu = m > 0 ? sum / m : 0.0;
    for (int i = 0; i < n; ++i)
        if (is_finite_f32(x[i])) {
            const double e = double(clamp_fp16_range(x[i])) - *mu;
            sq += e * e;
        }
    *sigma = m > 0 ? sqrt(sq / m) : 0.0;
    return finite;
}
KVS_HD inline void zscore_group_params(double mu, double sigma, int bits, float s, uint16_t* scale,
                                       uint16_t* zero) {
    const double half = double((1 << (bits - 1)) - 1);
    *scale = fp16_round_up(float(double(s) * sigma / half));
    const float scale_f = fp16_to_fp32(*scale);
    *zero = fp32_to_fp16_rne(clamp_fp16_range(float(mu - half * double(scale_f))));
}
KVS_HD inline uint32_t zscore_code(float x, float scale_f, float zero_f, int bits) {
    const uint32_t half = (1u << (bits - 1)) - 1u;
    if (x != x || scale_f == 0.0f) return half;  // NaN, or sigma = 0: the mean
    const float r = roundf((clamp_fp16_range(x) - zero_f) / scale_f);
    if (!(r > 0.0f)) return 0u;
    if (r >= float(2 * half)) return 2 * half;
    return uint32_t(r);
}

KVS_HD inline float quant_decode(uint32_t q, float scale_f, float zero_f) {
    return fmaf(float(q), scale_f, zero_f);
}

// fp16 passthrough value (b == 16): finite values saturate, inf / NaN stay.
KVS_HD inline uint16_t quant_fp16_store(float x) {
    return fp32_to_fp16_rne(is_finite_f32(x) ? clamp_fp16_range(x) : x);
}

// Code k of a packed row with b in {2, 4, 8} (codes never straddle a byte).
KVS_HD inline uint32_t quant_get_code(const uint8_t* row, int k, int bits) {
    const size_t bit = size_t(k) * size_t(bits);
    return (uint32_t(row[bit >> 3]) >> (bit & 7u)) & ((1u << bits) - 1u);
}

}  // namespace kvs::kernels::detail
