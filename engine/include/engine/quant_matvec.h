// Matrix-vector products straight from ggml blocks (no dequantized copy): the decode step reads
// each weight once, so bytes per weight set its speed (Q4_1: 0.625 B, Q8_0: 1.06 B, F32: 4 B).
// The result equals the fp32 product of the dequantized matrix up to summation order.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/ggml_types.h"

namespace kvs {

// Types with a direct kernel: Q4_0, Q4_1, Q8_0, F16.
bool quant_matvec_supported(GgmlType t);

// y[r - r0] = dot(row r of w, x) for r in [r0, r1). w: rows of `cols` values of type t,
// row_bytes apart; cols is a multiple of the block size; x: [cols].
void quant_matvec(GgmlType t, const uint8_t* w, size_t row_bytes, int64_t cols, const float* x,
                  float* y, int64_t r0, int64_t r1);

}  // namespace kvs
