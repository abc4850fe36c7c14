// fuzz_hf_config: the config.json of a Hugging Face folder. The folder holds the input as
// config.json and a fixed tiny model.safetensors (written once, made by hand below), so the
// config is parsed, checked against the tensors, and the tensors are read.
#include <cstring>
#include <string>

#include "engine/weights.h"
#include "fuzz_entries.h"

namespace {

// A safetensors file holding one F32 tensor "model.norm.weight" of shape [4].
std::string tiny_safetensors() {
    const std::string header =
        R"({"model.norm.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
    std::string out(8, '\0');
    const uint64_t n = header.size();
    std::memcpy(out.data(), &n, 8);
    out += header;
    const float v[4] = {1, 1, 1, 1};
    out.append(reinterpret_cast<const char*>(v), sizeof v);
    return out;
}

}  // namespace

void kvs::fuzz::hf_config(const uint8_t* data, size_t size) {
    static const std::string dir = [] {
        const std::string d = scratch_dir("hf");
        const std::string st = tiny_safetensors();
        scratch_file("hf/model.safetensors", reinterpret_cast<const uint8_t*>(st.data()),
                     st.size());
        return d;
    }();
    scratch_file("hf/config.json", data, size);
    attempt([&] {
        const auto w = open_hf_weights(dir);
        (void)w->describe();
        if (w->has("output_norm.weight")) (void)w->read("output_norm.weight");
    });
}
