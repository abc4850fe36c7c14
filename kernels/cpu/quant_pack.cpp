// CPU reference of quant_pack (format and rounding: kernels/include/kernels/quant_pack.h).
// Written for reading, not speed: one pass computes every group's (scale, zero), a second pass
// writes each token row's codes.
#include "kernels/quant_pack.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/detail/quant_math.h"

namespace kvs::kernels {

using detail::ceil_div;

int snap_bits(int bits) {
    if (bits <= 2) return 2;
    if (bits <= 5) return 4;   // 3 is a tie between 2 and 4: up
    if (bits <= 11) return 8;  // 6 is a tie between 4 and 8: up
    return 16;                 // 12 is a tie between 8 and 16: up
}

namespace {

bool args_ok(int n_tok, int d, int bits, int group) {
    return bits_supported(bits) && group >= 1 && n_tok >= 0 && d >= 1;
}

// Index of the group that element (t, c) belongs to.
size_t group_index(int t, int c, int n_tok, int d, int group, Axis axis) {
    (void)n_tok;
    if (axis == Axis::per_token) return size_t(t) * ceil_div(size_t(d), size_t(group)) + c / group;
    return size_t(t / group) * size_t(d) + size_t(c);
}

}  // namespace

size_t quant_n_groups(int n_tok, int d, int bits, int group, Axis axis) {
    if (!args_ok(n_tok, d, bits, group) || bits == 16) return 0;
    if (axis == Axis::per_token) return size_t(n_tok) * ceil_div(size_t(d), size_t(group));
    return ceil_div(size_t(n_tok), size_t(group)) * size_t(d);
}

size_t quant_packed_bytes(int n_tok, int d, int bits, int group, Axis axis) {
    if (!args_ok(n_tok, d, bits, group)) return 0;
    return 4 * quant_n_groups(n_tok, d, bits, group, axis) +
           size_t(n_tok) * detail::quant_row_bytes(d, bits);
}

Status quant_pack_cpu(const float* x, int n_tok, int d, int bits, int group, Axis axis,
                      uint8_t* out) {
    if (!args_ok(n_tok, d, bits, group) || (n_tok > 0 && (!x || !out))) {
        return Status::invalid_argument;
    }
    const size_t row_bytes = detail::quant_row_bytes(d, bits);
    const size_t n_groups = quant_n_groups(n_tok, d, bits, group, axis);
    uint8_t* params = out;
    uint8_t* payload = out + 4 * n_groups;
    bool non_finite = false;

    if (bits == 16) {
        for (int t = 0; t < n_tok; ++t) {
            for (int c = 0; c < d; ++c) {
                const float v = x[size_t(t) * d + c];
                non_finite |= !detail::is_finite_f32(v);
                detail::store_u16_le(payload + size_t(t) * row_bytes + 2 * size_t(c),
                                     detail::quant_fp16_store(v));
            }
        }
        return non_finite ? Status::non_finite_input : Status::ok;
    }

    // Pass 1: min / max of the finite (range-clamped) elements of every group.
    std::vector<float> mn(n_groups, 0.0f), mx(n_groups, 0.0f);
    std::vector<bool> seen(n_groups, false);
    for (int t = 0; t < n_tok; ++t) {
        for (int c = 0; c < d; ++c) {
            const float v = x[size_t(t) * d + c];
            if (!detail::is_finite_f32(v)) {
                non_finite = true;
                continue;
            }
            const float vc = detail::clamp_fp16_range(v);
            const size_t gi = group_index(t, c, n_tok, d, group, axis);
            mn[gi] = seen[gi] ? std::min(mn[gi], vc) : vc;
            mx[gi] = seen[gi] ? std::max(mx[gi], vc) : vc;
            seen[gi] = true;
        }
    }
    std::vector<float> scale_f(n_groups), zero_f(n_groups);
    for (size_t gi = 0; gi < n_groups; ++gi) {
        uint16_t scale, zero;
        detail::quant_group_params(mn[gi], mx[gi], bits, &scale, &zero);
        detail::store_u16_le(params + 4 * gi, scale);
        detail::store_u16_le(params + 4 * gi + 2, zero);
        scale_f[gi] = detail::fp16_to_fp32(scale);
        zero_f[gi] = detail::fp16_to_fp32(zero);
    }

    // Pass 2: codes, little-endian within bytes; trailing bits of a row stay 0.
    for (int t = 0; t < n_tok; ++t) {
        uint8_t* row = payload + size_t(t) * row_bytes;
        std::memset(row, 0, row_bytes);
        for (int c = 0; c < d; ++c) {
            const size_t gi = group_index(t, c, n_tok, d, group, axis);
            const uint32_t q =
                detail::quant_code(x[size_t(t) * d + c], scale_f[gi], zero_f[gi], bits);
            const size_t bit = size_t(c) * size_t(bits);
            row[bit >> 3] = uint8_t(row[bit >> 3] | (q << (bit & 7)));
        }
    }
    return non_finite ? Status::non_finite_input : Status::ok;
}

Status quant_unpack_cpu(const uint8_t* packed, int n_tok, int d, int bits, int group, Axis axis,
                        float* x_out) {
    if (!args_ok(n_tok, d, bits, group) || (n_tok > 0 && (!packed || !x_out))) {
        return Status::invalid_argument;
    }
    const size_t row_bytes = detail::quant_row_bytes(d, bits);
    const size_t n_groups = quant_n_groups(n_tok, d, bits, group, axis);
    const uint8_t* params = packed;
    const uint8_t* payload = packed + 4 * n_groups;
    for (int t = 0; t < n_tok; ++t) {
        const uint8_t* row = payload + size_t(t) * row_bytes;
        for (int c = 0; c < d; ++c) {
            float v;
            if (bits == 16) {
                v = detail::fp16_to_fp32(detail::load_u16_le(row + 2 * size_t(c)));
            } else {
                const size_t gi = group_index(t, c, n_tok, d, group, axis);
                const float scale_f = detail::fp16_to_fp32(detail::load_u16_le(params + 4 * gi));
                const float zero_f = detail::fp16_to_fp32(detail::load_u16_le(params + 4 * gi + 2));
                v = detail::quant_decode(detail::quant_get_code(row, c, bits), scale_f, zero_f);
            }
            x_out[size_t(t) * d + c] = v;
        }
    }
    return Status::ok;
}

}  // namespace kvs::kernels
