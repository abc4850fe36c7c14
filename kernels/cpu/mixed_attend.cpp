// CPU reference of mixed_attend (kernels/include/kernels/mixed_attend.h): dequantize every class
// with quant_unpack_cpu, then the one attention routine (kernels/attend.h).
#include "kernels/mixed_attend.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/attend.h"
#include "kernels/quant_pack.h"

namespace kvs::kernels {

Status mixed_attend_cpu(const float* q, int d, int group, const PackedClass* classes, int n_classes,
                        float softmax_scale, float* out, float* lse, float* probs, int n_pos) {
    if (d < 1 || group < 1 || n_classes < 0 || n_classes > kMaxMixedClasses || !q || !out || !lse ||
        (n_classes > 0 && !classes) || (probs && n_pos < 0)) {
        return Status::invalid_argument;
    }
    for (int i = 0; i < n_classes; ++i) {
        const PackedClass& c = classes[i];
        if (!bits_supported(c.bits) || c.n_tok < 0) return Status::invalid_argument;
        if (c.n_tok > 0 && (!c.k || !c.v || (probs && !c.pos))) return Status::invalid_argument;
        for (int j = 0; probs && j < c.n_tok; ++j) {
            if (c.pos[j] < 0 || c.pos[j] >= n_pos) return Status::invalid_argument;
        }
    }

    // Dequantize: k, v: [n_total, d], classes one after the other.
    std::vector<float> k, v;
    std::vector<int32_t> pos;
    for (int i = 0; i < n_classes; ++i) {
        const PackedClass& c = classes[i];
        if (c.n_tok == 0) continue;
        const size_t base = k.size();
        k.resize(base + size_t(c.n_tok) * d);
        v.resize(base + size_t(c.n_tok) * d);
        quant_unpack_cpu(c.k, c.n_tok, d, c.bits, group, Axis::per_token, k.data() + base);
        quant_unpack_cpu(c.v, c.n_tok, d, c.bits, group, Axis::per_token, v.data() + base);
        if (probs) pos.insert(pos.end(), c.pos, c.pos + c.n_tok);
    }
    const size_t n = k.size() / size_t(d);
    if (n == 0) {
        for (int c = 0; c < d; ++c) out[c] = 0.0f;
        *lse = -std::numeric_limits<float>::infinity();
        return Status::ok;
    }

    // The one attention routine over the dequantized entries (no causal mask: a decode query
    // sees every held token).
    std::vector<float> p(probs ? n : 0);
    if (!probs) pos.assign(n, 0);
    const Status st = attend_cpu(q, nullptr, 1, k.data(), v.data(), pos.data(), nullptr, int(n), d,
                                 softmax_scale, out, lse, probs ? p.data() : nullptr);
    if (st != Status::ok) return st;
    for (size_t j = 0; probs && j < n; ++j) probs[pos[j]] = p[j];
    return Status::ok;
}

}  // namespace kvs::kernels
