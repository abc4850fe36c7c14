// IEEE binary16 conversions in plain integer arithmetic, identical on host and device (no F16C,
// no cuda_fp16.h), so that the CPU reference and the CUDA kernels write the same bits.
//  - fp32_to_fp16_rne: round to nearest, ties to even; overflow -> inf; NaN stays NaN (quiet).
//    Same result as F16C _cvtss_sh(x, 0), CUDA __float2half_rn and numpy astype(float16).
//  - fp16_round_down / fp16_round_up: the largest fp16 <= x / the smallest fp16 >= x, for
//    finite x within fp16's range [-65504, 65504].
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/common.h"

namespace kvs::kernels::detail {

KVS_HD inline uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
#endif
}
KVS_HD inline float f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

KVS_HD inline float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (mant << 13));  // inf / NaN
    if (exp != 0) return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
    if (mant == 0) return f32_from_bits(sign);  // +-0
    // Subnormal: mant * 2^-24; normalise it for fp32.
    uint32_t e = 113;  // fp32 biased exponent of 2^-14
    while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --e;
    }
    return f32_from_bits(sign | (e << 23) | ((mant & 0x3ffu) << 13));
}

KVS_HD inline uint16_t fp32_to_fp16_rne(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) {  // inf or NaN (NaN keeps its top payload bits, forced quiet)
        return uint16_t(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0u));
    }
    if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520: rounds to inf
    const uint32_t e = a >> 23;
    if (e < 113) {                           // below 2^-14: fp16 subnormal (or zero), unit 2^-24
        if (e < 102) return uint16_t(sign);  // below 2^-25: rounds to zero
        const uint32_t m = (a & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - e;  // 14..24
        uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) ++q;
        return uint16_t(sign | q);  // q == 0x400 is the smallest normal: the bits say so
    }
    uint32_t h = ((e - 112) << 10) | ((a >> 13) & 0x3ffu);
    const uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry moves into the exponent
    return uint16_t(sign | h);
}

// The next fp16 towards +inf / -inf (finite, non-NaN h).
KVS_HD inline uint16_t fp16_next_up(uint16_t h) {
    if (h == 0x8000u) return 0x0001u;
    return (h & 0x8000u) ? uint16_t(h - 1) : uint16_t(h + 1);
}
KVS_HD inline uint16_t fp16_next_down(uint16_t h) {
    if (h == 0x0000u) return 0x8001u;
    return (h & 0x8000u) ? uint16_t(h + 1) : uint16_t(h - 1);
}

KVS_HD inline uint16_t fp16_round_down(float x) {
    const uint16_t h = fp32_to_fp16_rne(x);
    return fp16_to_fp32(h) > x ? fp16_next_down(h) : h;
}
KVS_HD inline uint16_t fp16_round_up(float x) {
    const uint16_t h = fp32_to_fp16_rne(x);
    return fp16_to_fp32(h) < x ? fp16_next_up(h) : h;
}

KVS_HD inline bool is_finite_f32(float x) {
    return (f32_bits(x) & 0x7f800000u) != 0x7f800000u;
}

// Little-endian 16-bit load / store at any byte address (no alignment assumed).
KVS_HD inline uint16_t load_u16_le(const uint8_t* p) {
    return uint16_t(p[0] | (p[1] << 8));
}
KVS_HD inline void store_u16_le(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v & 0xffu);
    p[1] = uint8_t(v >> 8);
}

}  // namespace kvs::kernels::detail
