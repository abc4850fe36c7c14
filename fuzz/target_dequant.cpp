// fuzz_dequant: raw ggml blocks of any type. Byte 0 picks the type (modulo the type ids kvscope
// knows), the rest is whole blocks of it; dequantizes them and, for the float types, checks the
// round trip of fp16 / bf16 conversion on every value.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/ggml_types.h"
#include "fuzz_entries.h"

void kvs::fuzz::dequant(const uint8_t* data, size_t size) {
    if (size < 1) return;
    const uint32_t type = data[0] % 40;
    const GgmlTypeInfo* info = ggml_type_info(type);
    if (info == nullptr) return;
    const size_t blocks = (size - 1) / info->type_size;
    // The block bytes in their own buffer (the engine reads blocks at any alignment).
    std::vector<uint8_t> src(data + 1, data + 1 + blocks * info->type_size);
    const int64_t n = int64_t(blocks) * info->block_size;
    std::vector<float> out(static_cast<size_t>(n));
    attempt([&] { (void)ggml_row_bytes(GgmlType(type), n); });
    attempt([&] { dequantize(GgmlType(type), src.data(), out.data(), n); });
    for (float x : out) {
        // fp16(fp32(h)) == h for every non-NaN half (the converters are exact inverses there).
        const uint16_t h = fp32_to_fp16(x);
        const float back = fp16_to_fp32(h);
        if (!std::isnan(x) && std::fabs(x) <= 65504.0f &&
            std::fabs(back - x) > std::fabs(x) * 1e-3f + 1e-7f)
            std::abort();
        (void)fp32_to_bf16(x);
    }
}
