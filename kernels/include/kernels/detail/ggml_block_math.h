// The scalar arithmetic of q8_0 / q4_0 (see kernels/ggml_blocks.h), shared by the CPU reference
// and the CUDA kernels. Multiplies and adds are rounded separately (no FMA contraction), as in
// ggml's reference C; on the device that is spelled out with __fmul_rn / __fadd_rn, on the host
// the translation unit must be compiled with -ffp-contract=off (kernels/CMakeLists.txt does).
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/detail/fp16.h"

namespace kvs::kernels::detail {

KVS_HD inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
KVS_HD inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

// Non-finite policy: NaN -> 0, +-inf -> +-amax (amax: the block's largest finite |x|).
KVS_HD inline float block_sanitize(float x, float amax) {
    if (x != x) return 0.0f;
    if (!is_finite_f32(x)) return x > 0.0f ? amax : -amax;
    return x;
}

// q8_0: the fp32 scale from amax, and the code of x given id = 1/d (0 when d == 0).
KVS_HD inline float q8_0_scale(float amax) {
    return amax / 127.0f;
}
KVS_HD inline int8_t q8_0_code(float x, float id) {
    float q = roundf(mul_rn(x, id));
    q = q < -127.0f ? -127.0f : (q > 127.0f ? 127.0f : q);
    return int8_t(q);
}

// q4_0: the fp32 scale from the signed max, and the code of x given id.
KVS_HD inline float q4_0_scale(float signed_max) {
    return signed_max / -8.0f;
}
KVS_HD inline uint8_t q4_0_code(float x, float id) {
    const float t = add_rn(mul_rn(x, id), 8.5f);
    const int q = t <= 0.0f ? 0 : int(t);  // int(t): truncation, as ggml's (int8_t) cast
    return uint8_t(q > 15 ? 15 : q);
}

KVS_HD inline float inv_or_zero(float d) {
    return d != 0.0f ? 1.0f / d : 0.0f;
}

}  // namespace kvs::kernels::detail
