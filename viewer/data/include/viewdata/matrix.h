// A dense [rows, cols] float matrix, row-major, NaN = no data. The viewer's heatmaps are
// [steps, tokens]: row r = decode step, column j = token position.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace kvs::view {

inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Matrix {
    int64_t rows = 0, cols = 0;
    std::vector<float> v;  // [rows, cols]

    Matrix() = default;
    Matrix(int64_t r, int64_t c, float fill = kNaN)
        : rows(r), cols(c), v(static_cast<size_t>(r * c), fill) {}
    bool empty() const { return rows == 0 || cols == 0; }
    float& at(int64_t r, int64_t c) { return v[static_cast<size_t>(r * cols + c)]; }
    float at(int64_t r, int64_t c) const { return v[static_cast<size_t>(r * cols + c)]; }
    float* row(int64_t r) { return v.data() + r * cols; }
    const float* row(int64_t r) const { return v.data() + r * cols; }
};

// The finite range of m (lo > hi when m holds no finite value).
struct Range {
    float lo = std::numeric_limits<float>::infinity();
    float hi = -std::numeric_limits<float>::infinity();
    bool valid() const { return lo <= hi; }
};
Range finite_range(const float* v, size_t n);
// The p-th percentile (p in [0, 100]) of the finite values (NaN when there are none).
float finite_percentile(const float* v, size_t n, double p);

}  // namespace kvs::view
