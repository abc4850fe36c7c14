// Block dot products for the decode-time GEMV. Each kernel is the format's formula written so the
// compiler vectorizes it (`omp simd` reductions); Q4_1's offset term uses the block sum of x:
//   sum_j (d q_j + m) x_j = d sum_j q_j x_j + m sum_j x_j.
#include "engine/quant_matvec.h"

#include <immintrin.h>

#include <cstring>
#include <vector>

#include "engine/error.h"

namespace kvs {

namespace {

constexpr size_t kPrefetchBytes = 2048;  // how far ahead of the row being read

inline float half_at(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
#ifdef __F16C__
    return _cvtsh_ss(h);  // one instruction; same value as fp16_to_fp32
#else
    return fp16_to_fp32(h);
#endif
}

#ifndef __AVX2__
// Q4_0 block: f16 d, 16 bytes of nibbles; value j < 16 is the low nibble of byte j, value
// j + 16 the high nibble; x = d * (q - 8).
inline float dot_q4_0(const uint8_t* b, const float* x) {
    const uint8_t* qs = b + 2;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < 16; ++j)
        s += float(int(qs[j] & 15) - 8) * x[j] + float(int(qs[j] >> 4) - 8) * x[j + 16];
    return half_at(b) * s;
}

// Q4_1 block: f16 d, f16 m, 16 bytes of nibbles; x = d * q + m.
inline float dot_q4_1(const uint8_t* b, const float* x, float xsum) {
    const uint8_t* qs = b + 4;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < 16; ++j) s += float(qs[j] & 15) * x[j] + float(qs[j] >> 4) * x[j + 16];
    return half_at(b) * s + half_at(b + 2) * xsum;
}

// Q8_0 block: f16 d, 32 int8; x = d * q.
inline float dot_q8_0(const uint8_t* b, const float* x) {
    const auto* qs = reinterpret_cast<const int8_t*>(b + 2);
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < 32; ++j) s += float(qs[j]) * x[j];
    return half_at(b) * s;
}
#endif

}  // namespace

bool quant_matvec_supported(GgmlType t) {
    return t == GgmlType::Q4_0 || t == GgmlType::Q4_1 || t == GgmlType::Q8_0 || t == GgmlType::F16;
}

#ifdef __AVX2__
namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// 8 unsigned bytes -> 8 floats.
inline __m256 u8x8_to_ps(__m128i b) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
}
inline __m256 i8x8_to_ps(__m128i b) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

// sum_j q_j x_j over a block of 32 nibbles (values 0..15), as 8-wide partial sums.
inline __m256 nibble_dot(const uint8_t* qs, const float* x) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i mask = _mm_set1_epi8(15);
    const __m128i lo = _mm_and_si128(raw, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    __m256 s = _mm256_mul_ps(u8x8_to_ps(lo), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(u8x8_to_ps(hi), _mm256_loadu_ps(x + 16), s);
    return _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
}

float row_q4_1(const uint8_t* row, const float* x, const float* xsum, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (int64_t i = 0; i < nb; ++i, row += 20, x += 32) {
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half_at(row)), nibble_dot(row + 4, x), acc);
        off += half_at(row + 2) * xsum[i];
    }
    return hsum(acc) + off;
}

float row_q4_0(const uint8_t* row, const float* x, const float* xsum, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (int64_t i = 0; i < nb; ++i, row += 18, x += 32) {
        const float d = half_at(row);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), nibble_dot(row + 2, x), acc);
        off -= 8.0f * d * xsum[i];  // d (q - 8) x = d q x - 8 d x
    }
    return hsum(acc) + off;
}

float row_q8_0(const uint8_t* row, const float* x, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, row += 34, x += 32) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2));
        const __m128i q0 = _mm256_castsi256_si128(q), q1 = _mm256_extracti128_si256(q, 1);
        __m256 s = _mm256_mul_ps(i8x8_to_ps(q0), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(i8x8_to_ps(_mm_srli_si128(q0, 8)), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(i8x8_to_ps(q1), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(i8x8_to_ps(_mm_srli_si128(q1, 8)), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half_at(row)), s, acc);
    }
    return hsum(acc);
}

}  // namespace
#endif

void quant_matvec(GgmlType t, const uint8_t* w, size_t row_bytes, int64_t cols, const float* x,
                  float* y, int64_t r0, int64_t r1) {
    const int64_t nb = cols / 32;
    thread_local std::vector<float> xsum;  // per-block sums of x (Q4_0 / Q4_1 offsets)
    if (t == GgmlType::Q4_0 || t == GgmlType::Q4_1) {
        xsum.assign(size_t(nb), 0.0f);
        for (int64_t i = 0; i < nb; ++i)
            for (int j = 0; j < 32; ++j) xsum[size_t(i)] += x[i * 32 + j];
    }
    // Rows are read once, in order, from DRAM: the hardware prefetcher alone keeps too few lines
    // in flight at this kernel's pace (measured on a 2-core Xeon VM: a Q4_1 block costs 7.7 ns
    // streamed from DRAM, 2.3 ns from L2, 2.5 ns when each row's lines are prefetched ~2 KiB
    // ahead). Prefetching changes no result.
    const int64_t ahead = int64_t(kPrefetchBytes / row_bytes) + 1;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* row = w + size_t(r) * row_bytes;
        if (r + ahead < r1) {
            const char* next = reinterpret_cast<const char*>(row + size_t(ahead) * row_bytes);
            for (size_t b = 0; b < row_bytes; b += 64) _mm_prefetch(next + b, _MM_HINT_T0);
        }
        float s = 0;
        switch (t) {
#ifdef __AVX2__
            case GgmlType::Q4_0:
                s = row_q4_0(row, x, xsum.data(), nb);
                break;
            case GgmlType::Q4_1:
                s = row_q4_1(row, x, xsum.data(), nb);
                break;
            case GgmlType::Q8_0:
                s = row_q8_0(row, x, nb);
                break;
#else
            case GgmlType::Q4_0:
                for (int64_t i = 0; i < nb; ++i) s += dot_q4_0(row + i * 18, x + i * 32);
                break;
            case GgmlType::Q4_1:
                for (int64_t i = 0; i < nb; ++i)
                    s += dot_q4_1(row + i * 20, x + i * 32, xsum[size_t(i)]);
                break;
            case GgmlType::Q8_0:
                for (int64_t i = 0; i < nb; ++i) s += dot_q8_0(row + i * 34, x + i * 32);
                break;
#endif
            case GgmlType::F16:
                for (int64_t c = 0; c < cols; ++c) s += half_at(row + 2 * c) * x[c];
                break;
            default:
                fail("quant_matvec: no kernel for type {}", ggml_type_info(uint32_t(t))->name);
        }
        y[r - r0] = s;
    }
}

}  // namespace kvs
