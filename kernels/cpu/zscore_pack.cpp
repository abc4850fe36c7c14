// CPU reference of zscore_pack (seed 001's mean / std quantizer; format and rounding:
// kernels/include/kernels/quant_pack.h, section "z-score codes"). Written for reading: per group,
// one pass for the mean and standard deviation, one for the codes.
#include <algorithm>
#include <cstring>

#include "kernels/detail/quant_math.h"
#include "kernels/quant_pack.h"

namespace kvs::kernels {

Status zscore_pack_cpu(const float* x, int n_tok, int d, int bits, int group, float s,
                       uint8_t* out) {
    if (bits == 16) return quant_pack_cpu(x, n_tok, d, bits, group, Axis::per_token, out);
    if (!bits_supported(bits) || group < 1 || n_tok < 0 || d < 1 || !(s > 0) || !std::isfinite(s) ||
        (n_tok > 0 && (!x || !out)))
        return Status::invalid_argument;
    const size_t row_bytes = detail::quant_row_bytes(d, bits);
    const size_t g_per_row = detail::ceil_div(size_t(d), size_t(group));
    uint8_t* params = out;
    uint8_t* payload = out + 4 * size_t(n_tok) * g_per_row;
    bool non_finite = false;
    for (int t = 0; t < n_tok; ++t) {
        const float* xt = x + size_t(t) * size_t(d);
        uint8_t* row = payload + size_t(t) * row_bytes;
        std::memset(row, 0, row_bytes);
        for (size_t j = 0; j < g_per_row; ++j) {
            const int c0 = int(j) * group, c1 = std::min(d, c0 + group);
            double mu, sigma;
            non_finite |= !detail::zscore_group_stats(xt + c0, c1 - c0, &mu, &sigma);
            uint16_t scale, zero;
            detail::zscore_group_params(mu, sigma, bits, s, &scale, &zero);
            const float scale_f = detail::fp16_to_fp32(scale), zero_f = detail::fp16_to_fp32(zero);
            detail::store_u16_le(params + 4 * (size_t(t) * g_per_row + j), scale);
            detail::store_u16_le(params + 4 * (size_t(t) * g_per_row + j) + 2, zero);
            for (int c = c0; c < c1; ++c) {
                const uint32_t q = detail::zscore_code(xt[c], scale_f, zero_f, bits);
                const size_t bit = size_t(c) * size_t(bits);
                row[bit >> 3] = uint8_t(row[bit >> 3] | (q << (bit & 7)));
            }
        }
    }
    return non_finite ? Status::non_finite_input : Status::ok;
}

}  // namespace kvs::kernels
