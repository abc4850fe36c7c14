// Helpers shared by the kernels tests: a seeded RNG, random KV-like data, an fp16 oracle that is
// independent of kernels/detail/fp16.h (the CPU's F16C instructions), error measures, canaries.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace kvs_test {

struct Rng {
    uint64_t state;
    explicit Rng(uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint32_t next() {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        return uint32_t(state >> 32);
    }
    float uniform() { return float(next() >> 8) * (1.0f / 16777216.0f); }  // [0, 1)
    float normal() {                                                       // Box-Muller
        const float u1 = std::max(uniform(), 1e-7f), u2 = uniform();
        return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
    }
    int range(int lo, int hi) { return lo + int(next() % uint32_t(hi - lo + 1)); }
};

// [n_tok, d] values ~ N(offset_c, scale_t): per-channel offsets (keys have outlier channels) and
// per-token magnitudes, so both group axes see different ranges.
inline std::vector<float> kv_like(Rng& rng, int n_tok, int d, float base = 1.0f) {
    std::vector<float> off(static_cast<size_t>(d));
    for (auto& o : off) o = rng.normal() * base * (rng.uniform() < 0.1f ? 8.0f : 0.5f);
    std::vector<float> x(size_t(n_tok) * d);
    for (int t = 0; t < n_tok; ++t) {
        const float mag = base * (0.25f + 2.0f * rng.uniform());
        for (int c = 0; c < d; ++c) x[size_t(t) * d + c] = off[c] + mag * rng.normal();
    }
    return x;
}

// Hardware fp16 (F16C, round to nearest even): the oracle for kernels/detail/fp16.h.
inline uint16_t hw_fp16(float x) {
    return _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT);
}
inline float hw_fp32(uint16_t h) {
    return _cvtsh_ss(h);
}
inline uint16_t le16(const uint8_t* p) {
    return uint16_t(p[0] | (p[1] << 8));
}

inline double mse(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0.0;
    for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    return a.empty() ? 0.0 : s / double(a.size());
}
// Normalized MSE, as llama.cpp's test-backend-ops: sum (a-b)^2 / sum a^2.
inline double nmse(const std::vector<float>& ref, const std::vector<float>& got) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        num += (double(ref[i]) - got[i]) * (double(ref[i]) - got[i]);
        den += double(ref[i]) * ref[i];
    }
    return den > 0 ? num / den : num;
}
inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0.0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
    return m;
}

// "first mismatches at i: a vs b" for byte buffers (at most n of them), or "" when equal.
inline std::string byte_mismatches(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b,
                                   int n = 8) {
    std::string s;
    int shown = 0;
    size_t count = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
        if (a[i] == b[i]) continue;
        ++count;
        if (shown++ < n) {
            char buf[64];
            std::snprintf(buf, sizeof buf, " [%zu] %02x vs %02x", i, a[i], b[i]);
            s += buf;
        }
    }
    if (a.size() != b.size()) s += " (sizes differ)";
    if (!s.empty()) s = std::to_string(count) + " bytes differ:" + s;
    return s;
}

template <class T>
std::vector<T> read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) return {};
    const size_t n = size_t(f.tellg());
    std::vector<T> v(n / sizeof(T));
    f.seekg(0);
    f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
    return v;
}

}  // namespace kvs_test
