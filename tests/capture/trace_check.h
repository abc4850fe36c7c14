// Test helpers for the capture tests: an independent recomputation of causal attention from a
// trace's stored q, k, v (double precision), compared with the stored o and lse.
//
// Tolerances. f32 storage: 1e-5 relative (o: of the row's largest |o|; lse: of max(1, |lse|)).
// f16 storage: what rounding q, k, v, o to binary16 can explain. With u = 2^-11 (unit
// roundoff), rounding q and k moves each score by at most
//   delta_t = scale * sum_i |q_ti k_ji| * 2.002u (+ a subnormal slack),
// so each softmax weight changes by a factor within exp(+-2 delta_t), the output by at most
// (exp(2 delta_t) - 1) max|v| + u max|v| (rounded v) + u |o| (rounded o), and lse by delta_t.
#pragma once
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "capture/trace_reader.h"

namespace kvs::test {

struct AttnCheck {
    int n_rows = 0;  // (layer, head, token) rows checked
    int n_bad = 0;
    double max_o_rel = 0, max_lse_abs = 0;  // worst observed errors (f32: relative o error)
    double max_ratio = 0;                   // worst error / tolerance (<= 1 passes)
    std::string first_bad;
};

// o_head_shift != 0 compares head h's recomputation with the stored o of head h + shift (mod
// n_head): a check that must fail, showing the comparison is sensitive.
inline AttnCheck check_attention(const capture::TraceReader& r, int o_head_shift = 0) {
    using capture::Field;
    const capture::TraceInfo& ti = r.info();
    const int64_t T = ti.n_tokens;
    const int d = ti.head_dim;
    const bool f16 = ti.dtype == capture::StorageDtype::F16;
    const double u = std::ldexp(1.0, -11);
    const double scale = 1.0 / std::sqrt(double(d));
    const std::vector<int32_t> pos = r.positions();
    AttnCheck c;
    for (int layer : ti.layers) {
        for (int h = 0; h < ti.n_head; ++h) {
            const int g = ti.kv_head_of_q_head[size_t(h)];
            const std::vector<float> q = r.read(Field::Q, layer, h, 0, T);
            const std::vector<float> k = r.read(Field::K, layer, g, 0, T);
            const std::vector<float> v = r.read(Field::V, layer, g, 0, T);
            const std::vector<float> o =
                r.read(Field::O, layer, (h + o_head_shift) % ti.n_head, 0, T);
            const std::vector<float> lse = r.read_lse(layer, h, 0, T);
            std::vector<double> s(static_cast<size_t>(T)), acc(static_cast<size_t>(d));
            for (int64_t t = 0; t < T; ++t) {
                const float* qt = &q[size_t(t) * d];
                double mx = -INFINITY, delta = 0, vmax = 0;
                for (int64_t j = 0; j < T; ++j) {
                    if (pos[size_t(j)] > pos[size_t(t)]) continue;
                    const float* kj = &k[size_t(j) * d];
                    double dot = 0, dabs = 0, slack = 0;
                    for (int i = 0; i < d; ++i) {
                        dot += double(qt[i]) * kj[i];
                        dabs += std::fabs(double(qt[i]) * kj[i]);
                        slack += std::fabs(qt[i]) + std::fabs(kj[i]);
                    }
                    s[size_t(j)] = dot * scale;
                    mx = std::max(mx, s[size_t(j)]);
                    delta =
                        std::max(delta, scale * (dabs * 2.002 * u + slack * std::ldexp(1.0, -24)));
                    for (int i = 0; i < d; ++i)
                        vmax = std::max(vmax, std::fabs(double(v[size_t(j) * d + size_t(i)])));
                }
                double sum = 0;
                std::fill(acc.begin(), acc.end(), 0.0);
                for (int64_t j = 0; j < T; ++j) {
                    if (pos[size_t(j)] > pos[size_t(t)]) continue;
                    const double p = std::exp(s[size_t(j)] - mx);
                    sum += p;
                    for (int i = 0; i < d; ++i) acc[size_t(i)] += p * v[size_t(j) * d + size_t(i)];
                }
                const double lse_ref = mx + std::log(sum);
                double oerr = 0, omax = 0;
                for (int i = 0; i < d; ++i) {
                    const double ref = acc[size_t(i)] / sum;
                    oerr = std::max(oerr, std::fabs(ref - o[size_t(t) * d + size_t(i)]));
                    omax = std::max(omax, std::fabs(ref));
                }
                const double lerr = std::fabs(lse_ref - lse[size_t(t)]);
                double otol, ltol;
                if (f16) {
                    otol = std::expm1(2 * delta) * vmax + u * vmax + u * omax + 1e-6;
                    ltol = delta + 1e-5 * std::max(1.0, std::fabs(lse_ref));
                } else {
                    otol = 1e-5 * std::max(omax, 1e-3 * vmax) + 1e-7;
                    ltol = 1e-5 * std::max(1.0, std::fabs(lse_ref));
                }
                ++c.n_rows;
                c.max_o_rel = std::max(c.max_o_rel, oerr / std::max(omax, 1e-12));
                c.max_lse_abs = std::max(c.max_lse_abs, lerr);
                c.max_ratio = std::max({c.max_ratio, oerr / otol, lerr / ltol});
                if (oerr > otol || lerr > ltol) {
                    if (c.n_bad++ == 0) {
                        std::ostringstream m;
                        m << "layer " << layer << " head " << h << " token " << t << ": |do| "
                          << oerr << " (tol " << otol << "), |dlse| " << lerr << " (tol " << ltol
                          << ")";
                        c.first_bad = m.str();
                    }
                }
            }
        }
    }
    return c;
}

}  // namespace kvs::test
