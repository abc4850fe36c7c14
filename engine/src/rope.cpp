// RoPE frequencies (engine/rope.h).
#include "engine/rope.h"

#include <cmath>
#include <numbers>

namespace kvs {

std::vector<float> rope_inv_freq(const ModelConfig& c) {
    const int half = c.head_dim / 2;
    std::vector<float> f(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i)
        f[size_t(i)] = float(1.0 / std::pow(double(c.rope_theta), 2.0 * i / c.head_dim));
    const RopeScaling& rs = c.rope_scaling;
    if (rs.type == "linear") {
        for (auto& x : f) x /= rs.factor;
    } else if (rs.type == "llama3") {
        const double lo_wl = rs.original_context / rs.low_freq_factor;
        const double hi_wl = rs.original_context / rs.high_freq_factor;
        for (auto& x : f) {
            const double wl = 2 * std::numbers::pi / x;
            if (wl < hi_wl) continue;
            if (wl > lo_wl) {
                x = float(x / rs.factor);
            } else {
                const double s = (rs.original_context / wl - rs.low_freq_factor) /
                                 (rs.high_freq_factor - rs.low_freq_factor);
                x = float((1 - s) * x / rs.factor + s * x);
            }
        }
    } else if (rs.type != "none" && rs.type != "") {
        return {};
    }
    return f;
}

}  // namespace kvs
