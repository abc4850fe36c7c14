// fuzz_gguf: a GGUF file. Opens it (header, metadata, tensor infos), reads every metadata value
// through the typed getters, dequantizes every tensor whose type can be, then builds the model
// config and weight source from it (open_gguf_weights) and reads every tensor through that.
#include <vector>

#include "engine/gguf.h"
#include "engine/weights.h"
#include "fuzz_entries.h"

void kvs::fuzz::gguf(const uint8_t* data, size_t size) {
    const std::string path = scratch_file("in.gguf", data, size);
    attempt([&] {
        const GgufFile f = GgufFile::open(path);
        for (const auto& kv : f.metadata()) {
            const std::string& key = kv.first;
            attempt([&] { (void)f.get_string(key); });
            attempt([&] { (void)f.get_int(key); });
            attempt([&] { (void)f.get_float(key); });
            attempt([&] { (void)f.get_string_array(key); });
        }
        std::vector<float> out;
        for (const GgufTensor& t : f.tensors()) {
            const GgmlTypeInfo* info = ggml_type_info(uint32_t(t.type));
            if (info == nullptr || !info->can_dequantize) continue;
            attempt([&] {
                out.resize(size_t(t.n_elements));
                dequantize(t.type, t.data, out.data(), t.n_elements);
            });
        }
    });
    attempt([&] {
        const auto w = open_gguf_weights(path);
        (void)w->describe();
        for (const char* name : {"token_embd.weight", "output_norm.weight", "output.weight",
                                 "blk.0.attn_q.weight", "blk.0.attn_k.weight"})
            attempt([&] {
                if (w->has(name)) {
                    (void)w->shape(name);
                    (void)w->read(name);
                }
            });
    });
}
