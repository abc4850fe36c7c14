// Direct block GEMV (decode path) against dequantize() followed by a double-precision dot.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "engine/ggml_types.h"
#include "engine/quant_matvec.h"

using namespace kvs;

namespace {

// Random but valid blocks of type t: fp16 scales in a sane range, random quant bytes.
std::vector<uint8_t> random_rows(GgmlType t, int64_t rows, int64_t cols, std::mt19937& rng) {
    const GgmlTypeInfo* info = ggml_type_info(uint32_t(t));
    const size_t row_bytes = ggml_row_bytes(t, cols);
    std::vector<uint8_t> data(row_bytes * size_t(rows));
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
    for (auto& b : data) b = uint8_t(byte(rng));
    const int64_t n_blocks = rows * cols / info->block_size;
    for (int64_t i = 0; i < n_blocks; ++i) {
        uint8_t* blk = data.data() + size_t(i) * info->type_size;
        const int n_halfs = t == GgmlType::Q4_1 ? 2 : (t == GgmlType::F16 ? 0 : 1);
        for (int h = 0; h < n_halfs; ++h) {
            const uint16_t v = fp32_to_fp16(scale(rng));
            std::memcpy(blk + 2 * h, &v, 2);
        }
    }
    if (t == GgmlType::F16)
        for (size_t i = 0; i + 1 < data.size(); i += 2) {
            const uint16_t v = fp32_to_fp16(scale(rng) * 20);
            std::memcpy(&data[i], &v, 2);
        }
    return data;
}

}  // namespace

TEST_CASE("quant_matvec equals dequantize + dot for every direct type", "[cpu]") {
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F16}) {
        REQUIRE(quant_matvec_supported(t));
        for (int64_t cols : {32, 96, 576}) {
            for (int64_t rows : {1, 19, 111}) {
                DYNAMIC_SECTION(ggml_type_info(uint32_t(t))->name << " " << rows << "x" << cols) {
                    const auto w = random_rows(t, rows, cols, rng);
                    const size_t rb = ggml_row_bytes(t, cols);
                    std::vector<float> x(static_cast<size_t>(cols));
                    for (auto& v : x) v = nd(rng);
                    std::vector<float> deq(static_cast<size_t>(rows * cols));
                    dequantize(t, w.data(), deq.data(), rows * cols);
                    // A slice [r0, r1) as one thread computes it.
                    const int64_t r0 = rows / 3, r1 = rows;
                    std::vector<float> y(static_cast<size_t>(r1 - r0));
                    quant_matvec(t, w.data(), rb, cols, x.data(), y.data(), r0, r1);
                    double worst = 0;
                    for (int64_t r = r0; r < r1; ++r) {
                        double ref = 0, mag = 0;
                        for (int64_t c = 0; c < cols; ++c) {
                            ref += double(deq[size_t(r * cols + c)]) * x[size_t(c)];
                            mag += std::fabs(double(deq[size_t(r * cols + c)]) * x[size_t(c)]);
                        }
                        worst = std::max(worst, std::fabs(y[size_t(r - r0)] - ref) / (mag + 1e-30));
                    }
                    INFO("worst error relative to sum |w x|: " << worst);
                    CHECK(worst < 1e-6);
                }
            }
        }
    }
    CHECK_FALSE(quant_matvec_supported(GgmlType::Q6_K));
}
