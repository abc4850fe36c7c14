// ggml tensor types: the type table, fp16/bf16 conversion and dequantization to fp32.
//
// The block structs below restate ggml's layouts (ggml-common.h) field by field; the static_asserts
// pin their sizes to the on-disk type sizes. Blocks are copied out of the source buffer with
// memcpy, so a tensor may start at any byte address (the mmap gives no alignment promise beyond
// the file's `general.alignment`). The math follows ggml's reference dequantizers: fp16 scales are
// widened to fp32 first and every product is formed in fp32.
#include <array>
#include <cstring>

#include "engine/error.h"
#include "engine/ggml_types.h"

namespace kvs {

// ---------------------------------------------------------------------------------------------
// fp16 / bf16
// ---------------------------------------------------------------------------------------------

namespace {

uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

}  // namespace

float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f)
        return bits_float(sign | 0x7f800000u | (mant << 13));  // inf, nan (payload kept)
    if (exp == 0) {
        // Zero or subnormal: mant * 2^-24, exact in fp32.
        const float v = float(mant) * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_float(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}

uint16_t fp32_to_fp16(float f) {
    const uint32_t bits = float_bits(f);
    const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
    const uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) {  // nan: keep it a (quiet) nan with the top payload bits
        return uint16_t(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
    }
    // 65520 is halfway between 65504 (largest half) and 65536; ties-to-even rounds it up to inf.
    if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);
    const uint32_t exp = abs >> 23;
    if (exp < 113) {
        // Result is a half subnormal (or zero): count units of 2^-24, rounding to nearest even.
        if (exp < 102) return sign;  // below 2^-25: rounds to zero (includes fp32 subnormals)
        const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;  // value = mant * 2^(exp - 150)
        const uint32_t shift = 126 - exp;                     // 14..24
        uint32_t r = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) ++r;  // may carry into the smallest normal
        return uint16_t(sign | r);
    }
    // Normal: rebias the exponent, keep 10 mantissa bits, round on the 13 dropped bits. A carry
    // out of the mantissa correctly bumps the exponent.
    uint32_t h = ((exp - 112) << 10) | ((abs >> 13) & 0x3ffu);
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
    return uint16_t(sign | h);
}

float bf16_to_fp32(uint16_t h) {
    return bits_float(uint32_t(h) << 16);
}

uint16_t fp32_to_bf16(float f) {
    const uint32_t bits = float_bits(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40u);  // quiet nan
    // Round to nearest even on the 16 dropped bits; overflow rounds to inf as it should.
    return uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// ---------------------------------------------------------------------------------------------
// Type table
// ---------------------------------------------------------------------------------------------

namespace {

constexpr int64_t QK_K = 256;  // values per K-quant super-block

constexpr std::array<GgmlTypeInfo, 42> make_type_table() {
    std::array<GgmlTypeInfo, 42> t{};
    for (auto& e : t) e = {nullptr, 0, 0, false};
    t[0] = {"f32", 1, 4, true};
    t[1] = {"f16", 1, 2, true};
    t[2] = {"q4_0", 32, 18, true};
    t[3] = {"q4_1", 32, 20, true};
    t[6] = {"q5_0", 32, 22, true};
    t[7] = {"q5_1", 32, 24, true};
    t[8] = {"q8_0", 32, 34, true};
    t[9] = {"q8_1", 32, 36, false};  // an activation format; ggml does not dequantize it either
    t[10] = {"q2_k", QK_K, 84, true};
    t[11] = {"q3_k", QK_K, 110, true};
    t[12] = {"q4_k", QK_K, 144, true};
    t[13] = {"q5_k", QK_K, 176, true};
    t[14] = {"q6_k", QK_K, 210, true};
    t[15] = {"q8_k", QK_K, 292, true};
    // Known so that a file using them parses and the loader can name the type; not dequantized.
    t[16] = {"iq2_xxs", QK_K, 66, false};
    t[17] = {"iq2_xs", QK_K, 74, false};
    t[18] = {"iq3_xxs", QK_K, 98, false};
    t[19] = {"iq1_s", QK_K, 50, false};
    t[20] = {"iq4_nl", 32, 18, false};
    t[21] = {"iq3_s", QK_K, 110, false};
    t[22] = {"iq2_s", QK_K, 82, false};
    t[23] = {"iq4_xs", QK_K, 136, false};
    t[24] = {"i8", 1, 1, false};
    t[25] = {"i16", 1, 2, false};
    t[26] = {"i32", 1, 4, false};
    t[27] = {"i64", 1, 8, false};
    t[28] = {"f64", 1, 8, false};
    t[29] = {"iq1_m", QK_K, 56, false};
    t[30] = {"bf16", 1, 2, true};
    t[34] = {"tq1_0", QK_K, 54, false};
    t[35] = {"tq2_0", QK_K, 66, false};
    t[39] = {"mxfp4", 32, 17, false};
    t[40] = {"nvfp4", 64, 36, false};
    t[41] = {"q1_0", 128, 18, false};
    return t;
}

constexpr std::array<GgmlTypeInfo, 42> kTypeTable = make_type_table();

const GgmlTypeInfo& info_or_fail(GgmlType t) {
    const GgmlTypeInfo* info = ggml_type_info(uint32_t(t));
    if (!info) fail("unknown ggml type id {}", uint32_t(t));
    return *info;
}

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
    if (type >= kTypeTable.size() || kTypeTable[type].name == nullptr) return nullptr;
    return &kTypeTable[type];
}

size_t ggml_row_bytes(GgmlType t, int64_t n) {
    const GgmlTypeInfo& info = info_or_fail(t);
    if (n < 0 || n % info.block_size != 0) {
        fail("{} values of type {} are not a whole number of {}-value blocks", n, info.name,
             info.block_size);
    }
    size_t bytes = 0;
    if (__builtin_mul_overflow(size_t(n / info.block_size), info.type_size, &bytes)) {
        fail("{} values of type {} overflow the addressable size", n, info.name);
    }
    return bytes;
}

// ---------------------------------------------------------------------------------------------
// Block layouts (ggml-common.h). `d`/`m`/`dmin` fields are fp16 bit patterns.
// ---------------------------------------------------------------------------------------------

namespace {

struct BlockQ4_0 {  // x = d * (q - 8), q in 0..15
    uint16_t d;
    uint8_t qs[16];  // byte j: value j in the low nibble, value j + 16 in the high nibble
};
struct BlockQ4_1 {  // x = d * q + m
    uint16_t d, m;
    uint8_t qs[16];
};
struct BlockQ5_0 {  // x = d * (q - 16), q in 0..31
    uint16_t d;
    uint8_t qh[4];  // u32 little-endian: bit i is bit 4 of value i
    uint8_t qs[16];
};
struct BlockQ5_1 {  // x = d * q + m
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
};
struct BlockQ8_0 {  // x = d * q
    uint16_t d;
    int8_t qs[32];
};
struct BlockQ2_K {       // 16 sub-blocks of 16: x = d * (sc & 15) * q - dmin * (sc >> 4)
    uint8_t scales[16];  // low nibble scale, high nibble min
    uint8_t qs[64];      // 2-bit quants
    uint16_t d, dmin;
};
struct BlockQ3_K {       // 16 sub-blocks of 16: x = d * (sc - 32) * q, q in -4..3
    uint8_t hmask[32];   // high bit of each quant (set means no -4 offset)
    uint8_t qs[64];      // low 2 bits
    uint8_t scales[12];  // 16 6-bit scales
    uint16_t d;
};
struct BlockQ4_K {  // 8 sub-blocks of 32: x = d * sc * q - dmin * m
    uint16_t d, dmin;
    uint8_t scales[12];  // 8 6-bit scales and 8 6-bit mins
    uint8_t qs[128];
};
struct BlockQ5_K {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];  // bit s of byte l: high bit of value l of sub-block s
    uint8_t qs[128];
};
struct BlockQ6_K {    // 16 sub-blocks of 16: x = d * sc * (q - 32), q in 0..63
    uint8_t ql[128];  // low 4 bits
    uint8_t qh[64];   // high 2 bits
    int8_t scales[16];
    uint16_t d;
};
struct BlockQ8_K {  // x = d * q
    float d;
    int8_t qs[256];
    int16_t bsums[16];  // sums of groups of 16 quants (for dot products; unused here)
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);

// ---------------------------------------------------------------------------------------------
// Per-block dequantizers: one block into y[0 .. block_size).
// ---------------------------------------------------------------------------------------------

void dequant_block(const BlockQ4_0& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    for (int j = 0; j < 16; ++j) {
        y[j] = float((b.qs[j] & 0x0f) - 8) * d;
        y[j + 16] = float((b.qs[j] >> 4) - 8) * d;
    }
}

void dequant_block(const BlockQ4_1& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    const float m = fp16_to_fp32(b.m);
    for (int j = 0; j < 16; ++j) {
        y[j] = float(b.qs[j] & 0x0f) * d + m;
        y[j + 16] = float(b.qs[j] >> 4) * d + m;
    }
}

uint32_t load_u32le(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

void dequant_block(const BlockQ5_0& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    const uint32_t qh = load_u32le(b.qh);
    for (int j = 0; j < 16; ++j) {
        const int hi0 = int((qh >> j) & 1) << 4;
        const int hi1 = int((qh >> (j + 16)) & 1) << 4;
        y[j] = float(((b.qs[j] & 0x0f) | hi0) - 16) * d;
        y[j + 16] = float(((b.qs[j] >> 4) | hi1) - 16) * d;
    }
}

void dequant_block(const BlockQ5_1& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    const float m = fp16_to_fp32(b.m);
    const uint32_t qh = load_u32le(b.qh);
    for (int j = 0; j < 16; ++j) {
        const int hi0 = int((qh >> j) & 1) << 4;
        const int hi1 = int((qh >> (j + 16)) & 1) << 4;
        y[j] = float((b.qs[j] & 0x0f) | hi0) * d + m;
        y[j + 16] = float((b.qs[j] >> 4) | hi1) * d + m;
    }
}

void dequant_block(const BlockQ8_0& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    for (int j = 0; j < 32; ++j) y[j] = float(b.qs[j]) * d;
}

// Q2_K and Q3_K share the 2-bit layout: the 256 values are two halves of 128; in half n, value
// 32 * j + l (j = 0..3, l = 0..31) sits in bits 2j..2j+1 of qs[32 * n + l].
void dequant_block(const BlockQ2_K& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    const float dmin = fp16_to_fp32(b.dmin);
    for (int n = 0; n < 2; ++n) {
        const uint8_t* q = b.qs + 32 * n;
        for (int j = 0; j < 4; ++j) {
            const int shift = 2 * j;
            for (int half = 0; half < 2; ++half) {  // two sub-blocks of 16 per 32 values
                const uint8_t sc = b.scales[8 * n + 2 * j + half];
                const float dl = d * float(sc & 0x0f);
                const float ml = dmin * float(sc >> 4);
                for (int l = 0; l < 16; ++l) {
                    *y++ = dl * float((q[16 * half + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

// The 16 6-bit Q3_K scales: the low 4 bits of scale i are nibble (i / 8) of byte (i % 8); the
// high 2 bits are bits 2 * (i / 4) .. +1 of byte 8 + (i % 4).
int q3_k_scale(const uint8_t* s, int i) {
    const int lo = (s[i % 8] >> (4 * (i / 8))) & 0x0f;
    const int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 0x03;
    return (lo | (hi << 4)) - 32;
}

void dequant_block(const BlockQ3_K& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    for (int n = 0; n < 2; ++n) {
        const uint8_t* q = b.qs + 32 * n;
        for (int j = 0; j < 4; ++j) {
            const int shift = 2 * j;
            const uint8_t hbit = uint8_t(1u << (4 * n + j));  // hmask bit for these 32 values
            for (int half = 0; half < 2; ++half) {
                const float dl = d * float(q3_k_scale(b.scales, 8 * n + 2 * j + half));
                for (int l = 16 * half; l < 16 * half + 16; ++l) {
                    const int v = ((q[l] >> shift) & 3) - ((b.hmask[l] & hbit) ? 0 : 4);
                    *y++ = dl * float(v);
                }
            }
        }
    }
}

// Q4_K / Q5_K scales: 8 6-bit scales and 8 6-bit mins in 12 bytes. Sub-blocks 0..3 keep theirs
// in the low 6 bits of bytes 0..3 (scale) and 4..7 (min); sub-blocks 4..7 keep the low 4 bits in
// bytes 8..11 (scale low nibble, min high nibble) and the top 2 bits in the top 2 bits of bytes
// 0..3 (scale) and 4..7 (min).
void k_scale_min(const uint8_t* s, int j, int& sc, int& mn) {
    if (j < 4) {
        sc = s[j] & 63;
        mn = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

void dequant_block(const BlockQ4_K& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    const float dmin = fp16_to_fp32(b.dmin);
    // Sub-blocks 2p and 2p + 1 share qs[32p .. 32p + 32): low nibbles, then high nibbles.
    for (int p = 0; p < 4; ++p) {
        const uint8_t* q = b.qs + 32 * p;
        int sc, mn;
        k_scale_min(b.scales, 2 * p, sc, mn);
        const float d1 = d * float(sc), m1 = dmin * float(mn);
        k_scale_min(b.scales, 2 * p + 1, sc, mn);
        const float d2 = d * float(sc), m2 = dmin * float(mn);
        for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0x0f) - m1;
        for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    }
}

void dequant_block(const BlockQ5_K& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    const float dmin = fp16_to_fp32(b.dmin);
    for (int p = 0; p < 4; ++p) {
        const uint8_t* q = b.qs + 32 * p;
        const uint8_t h1 = uint8_t(1u << (2 * p)), h2 = uint8_t(2u << (2 * p));
        int sc, mn;
        k_scale_min(b.scales, 2 * p, sc, mn);
        const float d1 = d * float(sc), m1 = dmin * float(mn);
        k_scale_min(b.scales, 2 * p + 1, sc, mn);
        const float d2 = d * float(sc), m2 = dmin * float(mn);
        for (int l = 0; l < 32; ++l) {
            *y++ = d1 * float((q[l] & 0x0f) + ((b.qh[l] & h1) ? 16 : 0)) - m1;
        }
        for (int l = 0; l < 32; ++l) {
            *y++ = d2 * float((q[l] >> 4) + ((b.qh[l] & h2) ? 16 : 0)) - m2;
        }
    }
}

// Q6_K: two halves of 128 values. In half n, for l = 0..31, the four values l, l + 32, l + 64,
// l + 96 take their low nibbles from ql[64n + l] (lo), ql[64n + l + 32] (lo), ql[64n + l] (hi),
// ql[64n + l + 32] (hi), and their top 2 bits from bits 0-1, 2-3, 4-5, 6-7 of qh[32n + l].
void dequant_block(const BlockQ6_K& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    for (int n = 0; n < 2; ++n) {
        const uint8_t* ql = b.ql + 64 * n;
        const uint8_t* qh = b.qh + 32 * n;
        const int8_t* sc = b.scales + 8 * n;
        for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * float(sc[is + 0]) * float(q1);
            y[l + 32] = d * float(sc[is + 2]) * float(q2);
            y[l + 64] = d * float(sc[is + 4]) * float(q3);
            y[l + 96] = d * float(sc[is + 6]) * float(q4);
        }
        y += 128;
    }
}

void dequant_block(const BlockQ8_K& b, float* y) {
    for (int j = 0; j < 256; ++j) y[j] = b.d * float(b.qs[j]);
}

template <class Block>
void dequant_blocks(const void* src, float* dst, int64_t n, int64_t block_size) {
    const auto* p = static_cast<const uint8_t*>(src);
    const int64_t n_blocks = n / block_size;
    for (int64_t i = 0; i < n_blocks; ++i) {
        Block b;
        std::memcpy(&b, p + size_t(i) * sizeof(Block), sizeof(Block));
        dequant_block(b, dst + i * block_size);
    }
}

}  // namespace

void dequantize(GgmlType t, const void* src, float* dst, int64_t n) {
    const GgmlTypeInfo& info = info_or_fail(t);
    if (!info.can_dequantize) fail("cannot dequantize tensor type {}", info.name);
    if (n < 0 || n % info.block_size != 0) {
        fail("cannot dequantize {} values of type {}: not a multiple of the block size {}", n,
             info.name, info.block_size);
    }
    const auto* p = static_cast<const uint8_t*>(src);
    switch (t) {
        case GgmlType::F32:
            if (n > 0) std::memcpy(dst, src, size_t(n) * sizeof(float));
            return;
        case GgmlType::F16:
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                dst[i] = fp16_to_fp32(h);
            }
            return;
        case GgmlType::BF16:
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                dst[i] = bf16_to_fp32(h);
            }
            return;
        case GgmlType::Q4_0:
            return dequant_blocks<BlockQ4_0>(src, dst, n, 32);
        case GgmlType::Q4_1:
            return dequant_blocks<BlockQ4_1>(src, dst, n, 32);
        case GgmlType::Q5_0:
            return dequant_blocks<BlockQ5_0>(src, dst, n, 32);
        case GgmlType::Q5_1:
            return dequant_blocks<BlockQ5_1>(src, dst, n, 32);
        case GgmlType::Q8_0:
            return dequant_blocks<BlockQ8_0>(src, dst, n, 32);
        case GgmlType::Q2_K:
            return dequant_blocks<BlockQ2_K>(src, dst, n, QK_K);
        case GgmlType::Q3_K:
            return dequant_blocks<BlockQ3_K>(src, dst, n, QK_K);
        case GgmlType::Q4_K:
            return dequant_blocks<BlockQ4_K>(src, dst, n, QK_K);
        case GgmlType::Q5_K:
            return dequant_blocks<BlockQ5_K>(src, dst, n, QK_K);
        case GgmlType::Q6_K:
            return dequant_blocks<BlockQ6_K>(src, dst, n, QK_K);
        case GgmlType::Q8_K:
            return dequant_blocks<BlockQ8_K>(src, dst, n, QK_K);
        default:
            break;
    }
    KVS_ASSERT(false && "type table marks a type dequantizable that dequantize() lacks");
}

}  // namespace kvs
