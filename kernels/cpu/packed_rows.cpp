// CPU decoding of packed rows (kernels/include/kernels/packed_rows.h). A scalar path written
// from the format's definition (the same helpers as quant_unpack_cpu / block_unpack_cpu) and an
// AVX2 path for the formats a decode step reads in bulk (f16, pt*, kv* with d and the group
// multiples of 8); both give the same bits (one fmaf per element, exact fp16 conversions).
#include "kernels/packed_rows.h"

#include <cmath>
#include <cstring>

#include "kernels/detail/fp16.h"
#include "kernels/detail/quant_math.h"
#include "kernels/ggml_blocks.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define KVS_PACKED_AVX2 1
#endif

namespace kvs::kernels {

namespace {

int pt_bits(RowFormat f) {
    switch (f) {
        case RowFormat::pt2:
        case RowFormat::kv2:
            return 2;
        case RowFormat::pt4:
        case RowFormat::kv4:
            return 4;
        default:
            return 8;
    }
}

bool is_pt(RowFormat f) {
    return f == RowFormat::pt2 || f == RowFormat::pt4 || f == RowFormat::pt8;
}
bool is_kv(RowFormat f) {
    return f == RowFormat::kv2 || f == RowFormat::kv4 || f == RowFormat::kv8;
}

// Codes of one row: code c of a b-bit row (little-endian within bytes).
void decode_scalar(const PackedRows& r, int j, int d, float* x) {
    const RowFormat f = RowFormat(r.fmt[j]);
    const uint8_t* p = r.data + r.off[j];
    switch (f) {
        case RowFormat::f32:
            std::memcpy(x, p, size_t(d) * 4);
            return;
        case RowFormat::f16:
            for (int c = 0; c < d; ++c) x[c] = detail::fp16_to_fp32(detail::load_u16_le(p + 2 * c));
            return;
        case RowFormat::q8_0:
        case RowFormat::q4_0:
            block_unpack_cpu(f == RowFormat::q8_0 ? BlockFormat::q8_0 : BlockFormat::q4_0, p, 1, d,
                             x);
            return;
        case RowFormat::lr16:
        case RowFormat::lr32: {
            // x = sum_k c_k b_k: each x[c] one fmaf chain over k in order (the loop over c is
            // the vector one: independent chains).
            const uint8_t* basis = r.data + r.aux[j];
            const int rank = int(low_rank_of(basis));
            const uint8_t* b = basis + 4;
            for (int c = 0; c < d; ++c) x[c] = 0.0f;
            for (int k = 0; k < rank; ++k) {
                float ck;
                if (f == RowFormat::lr16) {
                    ck = detail::fp16_to_fp32(detail::load_u16_le(p + 2 * k));
                } else {
                    std::memcpy(&ck, p + 4 * k, 4);
                }
                float row[512];
                const int n = d < 512 ? d : 512;
                for (int c0 = 0; c0 < d; c0 += n) {
                    const int m = d - c0 < n ? d - c0 : n;
                    std::memcpy(row, b + 4 * (size_t(k) * size_t(d) + size_t(c0)), size_t(m) * 4);
                    for (int c = 0; c < m; ++c) x[c0 + c] = std::fmaf(ck, row[c], x[c0 + c]);
                }
            }
            return;
        }
        default:
            break;
    }
    const int bits = pt_bits(f);
    if (is_pt(f)) {
        const int ng = (d + r.group - 1) / r.group;
        const uint8_t* codes = p + 4 * size_t(ng);
        for (int c = 0; c < d; ++c) {
            const size_t gi = size_t(c / r.group);
            const float s = detail::fp16_to_fp32(detail::load_u16_le(p + 4 * gi));
            const float z = detail::fp16_to_fp32(detail::load_u16_le(p + 4 * gi + 2));
            x[c] = detail::quant_decode(detail::quant_get_code(codes, c, bits), s, z);
        }
    } else if (is_kv(f)) {
        const uint8_t* params = r.data + r.aux[j];
        for (int c = 0; c < d; ++c) {
            const float s = detail::fp16_to_fp32(detail::load_u16_le(params + 4 * size_t(c)));
            const float z = detail::fp16_to_fp32(detail::load_u16_le(params + 4 * size_t(c) + 2));
            x[c] = detail::quant_decode(detail::quant_get_code(p, c, bits), s, z);
        }
    }
}

#if KVS_PACKED_AVX2
// 8 codes of a b-bit row starting at channel c (c a multiple of 8) as floats.
inline __m256 codes8(const uint8_t* codes, int c, int bits) {
    if (bits == 8) {
        uint64_t w;
        std::memcpy(&w, codes + c, 8);
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(w))));
    }
    uint32_t w = 0;
    if (bits == 4) {
        std::memcpy(&w, codes + c / 2, 4);  // 8 codes = 4 bytes
    } else {
        uint16_t h;
        std::memcpy(&h, codes + c / 4, 2);  // 8 codes = 2 bytes
        w = h;
    }
    const __m256i sh = bits == 4 ? _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
                                 : _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i m = _mm256_set1_epi32((1 << bits) - 1);
    return _mm256_cvtepi32_ps(
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int32_t(w)), sh), m));
}

// 8 interleaved {fp16 scale, fp16 zero} pairs -> 8 scales, 8 zeros.
inline void params8(const uint8_t* p, __m256* s, __m256* z) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
    const __m128i sel = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const __m128i as = _mm_shuffle_epi8(a, sel), bs = _mm_shuffle_epi8(b, sel);
    *s = _mm256_cvtph_ps(_mm_unpacklo_epi64(as, bs));
    *z = _mm256_cvtph_ps(_mm_unpackhi_epi64(as, bs));
}

// The decoded per-channel params of the KIVI block whose rows are being read (consecutive rows
// of a block share them).
struct KvParams {
    uint32_t aux = UINT32_MAX;
    const uint8_t* data = nullptr;
    float s[512], z[512];
};

// True when the row was decoded here.
inline bool decode_avx2(const PackedRows& r, int j, int d, float* x, KvParams& kp) {
    if (d % 8 != 0) return false;
    const RowFormat f = RowFormat(r.fmt[j]);
    const uint8_t* p = r.data + r.off[j];
    if (f == RowFormat::f16) {
        for (int c = 0; c < d; c += 8)
            _mm256_storeu_ps(
                x + c,
                _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * c))));
        return true;
    }
    if (is_pt(f)) {
        if (r.group % 8 != 0) return false;
        const int bits = pt_bits(f), ng = (d + r.group - 1) / r.group;
        const uint8_t* codes = p + 4 * size_t(ng);
        for (int g = 0; g < ng; ++g) {
            int32_t sz;
            std::memcpy(&sz, p + 4 * g, 4);
            const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(sz));  // {scale, zero, 0, 0}
            const __m256 s = _mm256_broadcastss_ps(f);
            const __m256 z = _mm256_broadcastss_ps(_mm_movehdup_ps(f));
            const int c1 = (g + 1) * r.group < d ? (g + 1) * r.group : d;
            for (int c = g * r.group; c < c1; c += 8)
                _mm256_storeu_ps(x + c, _mm256_fmadd_ps(codes8(codes, c, bits), s, z));
        }
        return true;
    }
    if (f == RowFormat::q8_0 || f == RowFormat::q4_0) {
        // llama.cpp's blocks of 32: an fp16 scale, then 32 int8 codes (q8_0) or 16 bytes of
        // nibbles, values 0..15 of the block's first half low, second half high (q4_0, minus 8);
        // each value scale * code, as block_unpack_cpu computes it.
        if (d % kGgmlBlockValues != 0) return false;
        const size_t bb =
            ggml_block_bytes(f == RowFormat::q8_0 ? BlockFormat::q8_0 : BlockFormat::q4_0);
        for (int c0 = 0; c0 < d; c0 += kGgmlBlockValues, p += bb) {
            uint16_t h;
            std::memcpy(&h, p, 2);
            const __m256 s = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))));
            if (f == RowFormat::q8_0) {
                for (int k = 0; k < 4; ++k) {
                    uint64_t w;
                    std::memcpy(&w, p + 2 + 8 * k, 8);
                    const __m256 q =
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(int64_t(w))));
                    _mm256_storeu_ps(x + c0 + 8 * k, _mm256_mul_ps(s, q));
                }
            } else {
                const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
                const __m128i m = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
                const __m128i lo = _mm_sub_epi8(_mm_and_si128(b, m), eight);
                const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), eight);
                const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
                for (int k = 0; k < 4; ++k)
                    _mm256_storeu_ps(
                        x + c0 + 8 * k,
                        _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part[k]))));
            }
        }
        return true;
    }
    if (is_kv(f)) {
        const int bits = pt_bits(f);
        if (d > 512) return false;
        if (kp.aux != r.aux[j] || kp.data != r.data) {
            const uint8_t* params = r.data + r.aux[j];
            for (int c = 0; c < d; c += 8) {
                __m256 s, z;
                params8(params + 4 * size_t(c), &s, &z);
                _mm256_storeu_ps(kp.s + c, s);
                _mm256_storeu_ps(kp.z + c, z);
            }
            kp.aux = r.aux[j];
            kp.data = r.data;
        }
        for (int c = 0; c < d; c += 8)
            _mm256_storeu_ps(x + c, _mm256_fmadd_ps(codes8(p, c, bits), _mm256_loadu_ps(kp.s + c),
                                                    _mm256_loadu_ps(kp.z + c)));
        return true;
    }
    return false;
}
#endif

}  // namespace

int row_format_bits(RowFormat f) {
    switch (f) {
        case RowFormat::f32:
            return 32;
        case RowFormat::f16:
            return 16;
        case RowFormat::q8_0:
            return 8;
        case RowFormat::q4_0:
            return 4;
        case RowFormat::lr16:
            return 16;
        case RowFormat::lr32:
            return 32;
        default:
            return pt_bits(f);
    }
}

uint32_t low_rank_of(const uint8_t* basis) {
    uint32_t r;
    std::memcpy(&r, basis, 4);
    return r;
}

size_t row_format_bytes(RowFormat f, int d, int group) {
    switch (f) {
        case RowFormat::f32:
            return size_t(d) * 4;
        case RowFormat::f16:
            return size_t(d) * 2;
        case RowFormat::q8_0:
            return block_packed_bytes(BlockFormat::q8_0, 1, d);
        case RowFormat::q4_0:
            return block_packed_bytes(BlockFormat::q4_0, 1, d);
        case RowFormat::lr16:
            return size_t(d) * 2;  // d = the rank
        case RowFormat::lr32:
            return size_t(d) * 4;
        default:
            break;
    }
    const size_t codes = (size_t(d) * size_t(pt_bits(f)) + 7) / 8;
    return is_pt(f) ? 4 * size_t((d + group - 1) / group) + codes : codes;
}

void dequant_rows(const PackedRows& r, int j0, int j1, int d, float* x) {
#if KVS_PACKED_AVX2
    KvParams kp;
#endif
    for (int j = j0; j < j1; ++j) {
        float* xr = x + size_t(j - j0) * size_t(d);
#if KVS_PACKED_AVX2
        if (decode_avx2(r, j, d, xr, kp)) continue;
#endif
        decode_scalar(r, j, d, xr);
    }
}

}  // namespace kvs::kernels
