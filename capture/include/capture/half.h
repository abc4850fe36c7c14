// Bulk fp32 <-> IEEE binary16 conversion (round to nearest even), with F16C when the build
// targets it (x86-64-v3, the default) and the engine's scalar converters otherwise.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/ggml_types.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace kvs::capture {

inline void f32_to_f16(const float* src, uint16_t* dst, size_t n) {
    size_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
    }
#endif
    for (; i < n; ++i) dst[i] = kvs::fp32_to_fp16(src[i]);
}

inline void f16_to_f32(const uint16_t* src, float* dst, size_t n) {
    size_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
#endif
    for (; i < n; ++i) dst[i] = kvs::fp16_to_fp32(src[i]);
}

}  // namespace kvs::capture
