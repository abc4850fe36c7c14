// ggml tensor types as stored in GGUF files, their block layouts, and dequantization to fp32.
// Layouts follow ggml's definitions (ggml-common.h): a row of n values is n / block_size blocks,
// each type_size bytes. All multi-byte fields are little-endian.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kvs {

enum class GgmlType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    BF16 = 30,
};

struct GgmlTypeInfo {
    const char* name;     // "q4_1"
    int64_t block_size;   // values per block
    size_t type_size;     // bytes per block
    bool can_dequantize;  // dequantize() supports it
};

// nullptr for a type id kvscope does not know (the caller reports it with the tensor's name).
const GgmlTypeInfo* ggml_type_info(uint32_t type);
// Bytes of n values of type t; throws kvs::Error if n is not a multiple of the block size.
size_t ggml_row_bytes(GgmlType t, int64_t n);
// Dequantizes n values (a multiple of the block size) from src into dst.
// Throws kvs::Error for a type that cannot be dequantized.
void dequantize(GgmlType t, const void* src, float* dst, int64_t n);

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);  // round to nearest even

}  // namespace kvs
