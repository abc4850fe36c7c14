// Colour maps as 256-entry lookup tables: viridis, cividis, magma (perceptually uniform,
// readable in grey scale and by colour-blind readers; cividis is made for colour-vision
// deficiency) and rdbu (ColorBrewer RdBu reversed: blue < 0 < red, for differences).
// Tables generated from matplotlib by viewer/tools/gen_colormaps.py.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace kvs::view {

enum class ColorMap { Viridis, Cividis, Magma, RdBu };
inline constexpr int kNumColorMaps = 4;
const char* colormap_name(ColorMap c);
bool colormap_from_name(const std::string& s, ColorMap* out);

struct Rgb8 {
    uint8_t r = 0, g = 0, b = 0;
};
// t in [0, 1] (clamped) -> colour.
Rgb8 colormap_at(ColorMap c, float t);
// Packed as OpenGL RGBA8 in memory (little-endian: r | g << 8 | b << 16 | a << 24).
inline uint32_t pack_rgba(Rgb8 c, uint8_t a = 255) {
    return uint32_t(c.r) | uint32_t(c.g) << 8 | uint32_t(c.b) << 16 | uint32_t(a) << 24;
}

// Value -> [0, 1]: linear between lo and hi, or log10 (values <= 0 clamp to lo).
struct ColorScale {
    float lo = 0, hi = 1;
    bool log = false;
    float normalize(float v) const;
};

// Colours a reduced grid `v` [n_r, n_c] (rows = x, columns = y) into an RGBA texture of width
// n_r and height n_c: texel (x = i, y = k) = v[i, k]. NaN -> `nan_rgba`.
void colorize_transposed(const float* v, int n_r, int n_c, ColorMap c, const ColorScale& s,
                         uint32_t nan_rgba, std::vector<uint32_t>* rgba);

// Paints `mask` [n_r, n_c] (laid out as colorize_transposed's `v`) over its texture: a texel whose
// mask is > 0 becomes `c` mixed into it with weight 0.45 + 0.55 * mask (so a cell marked in one of
// many aggregated units still shows; 1 = `c` itself); 0 or NaN leaves the texel as it is.
void overlay_transposed(const float* mask, int n_r, int n_c, Rgb8 c, std::vector<uint32_t>* rgba);

}  // namespace kvs::view
