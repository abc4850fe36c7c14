// fuzz_safetensors: a .safetensors file. Opens it (header length, JSON header, every tensor's
// dtype, shape and offsets) and converts every tensor to fp32.
#include "engine/safetensors.h"
#include "fuzz_entries.h"

void kvs::fuzz::safetensors(const uint8_t* data, size_t size) {
    const std::string path = scratch_file("in.safetensors", data, size);
    attempt([&] {
        const SafetensorsFile f = SafetensorsFile::open(path);
        for (const auto& t : f.tensors()) {
            (void)f.tensor(t.name);
            (void)st_read_fp32(t);
        }
        for (const auto& kv : f.metadata()) (void)kv;
    });
}
