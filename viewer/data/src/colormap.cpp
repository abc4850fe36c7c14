// Colour map lookup tables and colouring of reduced grids (see colormap.h).
#include "viewdata/colormap.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace kvs::view {

namespace {
#include "colormap_tables.inc"

const uint8_t (*table(ColorMap c))[3] {
    switch (c) {
        case ColorMap::Viridis:
            return k_viridis;
        case ColorMap::Cividis:
            return k_cividis;
        case ColorMap::Magma:
            return k_magma;
        case ColorMap::RdBu:
            return k_rdbu;
    }
    return k_viridis;
}
}  // namespace

const char* colormap_name(ColorMap c) {
    switch (c) {
        case ColorMap::Viridis:
            return "viridis";
        case ColorMap::Cividis:
            return "cividis";
        case ColorMap::Magma:
            return "magma";
        case ColorMap::RdBu:
            return "rdbu";
    }
    return "viridis";
}

bool colormap_from_name(const std::string& s, ColorMap* out) {
    for (int i = 0; i < kNumColorMaps; ++i)
        if (s == colormap_name(ColorMap(i))) {
            *out = ColorMap(i);
            return true;
        }
    return false;
}

Rgb8 colormap_at(ColorMap c, float t) {
    if (!(t >= 0)) t = 0;  // NaN too
    if (t > 1) t = 1;
    const int i = std::min(255, int(t * 256.0f));
    const uint8_t* e = table(c)[i];
    return {e[0], e[1], e[2]};
}

float ColorScale::normalize(float v) const {
    if (log) {
        const float l0 = std::log10(std::max(lo, 1e-30f)), l1 = std::log10(std::max(hi, 1e-30f));
        if (!(l1 > l0)) return 0.5f;
        const float lv = v > 0 ? std::log10(v) : l0;
        return std::clamp((lv - l0) / (l1 - l0), 0.0f, 1.0f);
    }
    if (!(hi > lo)) return 0.5f;
    return std::clamp((v - lo) / (hi - lo), 0.0f, 1.0f);
}

namespace {
// log2 to ~1e-4 (plenty for 256 colours), without a libm call per texel.
inline float fast_log2(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    const float e = float(int((b >> 23) & 255) - 127);
    b = (b & 0x007FFFFFu) | 0x3F800000u;
    float m;
    std::memcpy(&m, &b, 4);  // [1, 2)
    // Minimax-style cubic for log2(m) on [1, 2).
    const float p =
        -1.7417939f + (2.8212026f + (-1.4699568f + (0.44717955f - 0.056570851f * m) * m) * m) * m;
    return e + p;
}
}  // namespace

void colorize_transposed(const float* v, int n_r, int n_c, ColorMap c, const ColorScale& s,
                         uint32_t nan_rgba, std::vector<uint32_t>* rgba) {
    rgba->resize(size_t(n_r) * size_t(n_c));
    uint32_t lut[256];
    for (int i = 0; i < 256; ++i) lut[i] = pack_rgba(colormap_at(c, (i + 0.5f) / 256.0f));
    uint32_t* out = rgba->data();
    // t = (f(x) - f0) * inv, f = identity or log2.
    const bool lg = s.log;
    const float f0 = lg ? std::log2(std::max(s.lo, 1e-30f)) : s.lo;
    const float f1 = lg ? std::log2(std::max(s.hi, 1e-30f)) : s.hi;
    const bool flat = !(f1 > f0);
    const float inv = flat ? 0.0f : 256.0f / (f1 - f0);
    for (int i = 0; i < n_r; ++i) {
        const float* row = v + size_t(i) * n_c;
        for (int k = 0; k < n_c; ++k) {
            const float x = row[k];
            uint32_t col;
            if (std::isnan(x)) {
                col = nan_rgba;
            } else if (flat) {
                col = lut[128];
            } else {
                const float f = lg ? (x > 0 ? fast_log2(x) : f0) : x;
                const float t = (f - f0) * inv;
                col = lut[t <= 0 ? 0 : t >= 255 ? 255 : int(t)];
            }
            out[size_t(k) * n_r + i] = col;
        }
    }
}

void overlay_transposed(const float* mask, int n_r, int n_c, Rgb8 c, std::vector<uint32_t>* rgba) {
    if (rgba->size() != size_t(n_r) * size_t(n_c)) return;
    uint32_t* out = rgba->data();
    for (int i = 0; i < n_r; ++i) {
        const float* row = mask + size_t(i) * n_c;
        for (int k = 0; k < n_c; ++k) {
            const float x = row[k];
            if (!(x > 0)) continue;
            const float w = 0.45f + 0.55f * std::min(x, 1.0f);
            uint32_t& px = out[size_t(k) * n_r + i];
            auto mix = [&](int shift, uint8_t to) {
                const float from = float((px >> shift) & 0xFFu);
                return uint32_t(std::lround(from + (float(to) - from) * w)) << shift;
            };
            px = mix(0, c.r) | mix(8, c.g) | mix(16, c.b) | (px & 0xFF000000u);
        }
    }
}

}  // namespace kvs::view
