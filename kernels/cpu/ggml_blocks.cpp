// CPU reference of q8_0 / q4_0 (format: kernels/include/kernels/ggml_blocks.h), following
// ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref step by step.
#include "kernels/ggml_blocks.h"

#include <algorithm>
#include <cmath>

#include "kernels/detail/ggml_block_math.h"

namespace kvs::kernels {

namespace {

constexpr int QK = kGgmlBlockValues;

// One block's values: x[0..n) then zeros up to 32. Returns true when all were finite.
bool load_block(const float* x, int n, float* v) {
    bool finite = true;
    for (int j = 0; j < QK; ++j) {
        v[j] = j < n ? x[j] : 0.0f;
        finite &= detail::is_finite_f32(v[j]);
    }
    return finite;
}

void pack_q8_0(const float* v, uint8_t* blk) {
    float amax = 0.0f;  // largest finite |x|
    for (int j = 0; j < QK; ++j) {
        if (detail::is_finite_f32(v[j])) amax = std::max(amax, std::fabs(v[j]));
    }
    const float d = detail::q8_0_scale(amax);
    const float id = detail::inv_or_zero(d);
    detail::store_u16_le(blk, detail::fp32_to_fp16_rne(d));
    for (int j = 0; j < QK; ++j) {
        blk[2 + j] = uint8_t(detail::q8_0_code(detail::block_sanitize(v[j], amax), id));
    }
}

void pack_q4_0(const float* v, uint8_t* blk) {
    float amax = 0.0f, max = 0.0f;  // the first element of largest finite |x|, with its sign
    for (int j = 0; j < QK; ++j) {
        if (detail::is_finite_f32(v[j]) && amax < std::fabs(v[j])) {
            amax = std::fabs(v[j]);
            max = v[j];
        }
    }
    const float d = detail::q4_0_scale(max);
    const float id = detail::inv_or_zero(d);
    detail::store_u16_le(blk, detail::fp32_to_fp16_rne(d));
    for (int j = 0; j < QK / 2; ++j) {
        const uint8_t lo = detail::q4_0_code(detail::block_sanitize(v[j], amax), id);
        const uint8_t hi = detail::q4_0_code(detail::block_sanitize(v[j + QK / 2], amax), id);
        blk[2 + j] = uint8_t(lo | (hi << 4));
    }
}

}  // namespace

size_t block_packed_bytes(BlockFormat f, int n_tok, int d) {
    if (n_tok < 0 || d < 1) return 0;
    return size_t(n_tok) * size_t((d + QK - 1) / QK) * ggml_block_bytes(f);
}

Status block_pack_cpu(BlockFormat f, const float* x, int n_tok, int d, uint8_t* out) {
    if (n_tok < 0 || d < 1 || (n_tok > 0 && (!x || !out))) return Status::invalid_argument;
    const int nb = (d + QK - 1) / QK;
    const size_t bb = ggml_block_bytes(f);
    bool finite = true;
    for (int t = 0; t < n_tok; ++t) {
        for (int b = 0; b < nb; ++b) {
            float v[QK];
            finite &= load_block(x + size_t(t) * d + size_t(b) * QK, std::min(QK, d - b * QK), v);
            uint8_t* blk = out + (size_t(t) * nb + b) * bb;
            if (f == BlockFormat::q8_0) {
                pack_q8_0(v, blk);
            } else {
                pack_q4_0(v, blk);
            }
        }
    }
    return finite ? Status::ok : Status::non_finite_input;
}

Status block_unpack_cpu(BlockFormat f, const uint8_t* packed, int n_tok, int d, float* x_out) {
    if (n_tok < 0 || d < 1 || (n_tok > 0 && (!packed || !x_out))) return Status::invalid_argument;
    const int nb = (d + QK - 1) / QK;
    const size_t bb = ggml_block_bytes(f);
    for (int t = 0; t < n_tok; ++t) {
        for (int c = 0; c < d; ++c) {
            const int b = c / QK, j = c % QK;
            const uint8_t* blk = packed + (size_t(t) * nb + b) * bb;
            const float dd = detail::fp16_to_fp32(detail::load_u16_le(blk));
            float v;
            if (f == BlockFormat::q8_0) {
                v = dd * float(int8_t(blk[2 + j]));
            } else {
                const int q = j < QK / 2 ? (blk[2 + j] & 0x0f) : (blk[2 + j - QK / 2] >> 4);
                v = dd * float(q - 8);
            }
            x_out[size_t(t) * d + c] = v;
        }
    }
    return Status::ok;
}

}  // namespace kvs::kernels
