// Test helpers: write safetensors files and Hugging Face model folders (config.json + shards)
// into a temporary directory. Independent of the engine's reader and of ggml_types: the fp16 /
// bf16 encoders and decoders here are written from the IEEE / bfloat16 definitions.
//
// Typical use (a tiny random model as an HF folder):
//   kvs::test::TempDir tmp;
//   kvs::test::HfTensors w;
//   w["model.embed_tokens.weight"] = {{n_vocab, n_embd}, values};
//   ...
//   kvs::test::write_hf_model(tmp.path(), config_json, w, kvs::test::Dtype::BF16);
//   auto src = kvs::open_hf_weights(tmp.str());
#pragma once
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace kvs::test {

enum class Dtype { F32, F16, BF16 };

inline const char* dtype_name(Dtype d) {
    return d == Dtype::F32 ? "F32" : d == Dtype::F16 ? "F16" : "BF16";
}

// fp32 -> IEEE half, round to nearest even; overflow -> inf, NaN -> quiet NaN.
inline uint16_t encode_f16(float f) {
    const uint32_t x = std::bit_cast<uint32_t>(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7E00u;   // NaN
    if (ax >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds to inf (or is inf)
    if (ax < 0x38800000u) {                        // below 2^-14: a half subnormal (or zero)
        const float v = std::bit_cast<float>(ax) * 16777216.0f;  // in units of 2^-24, exact
        return sign | static_cast<uint16_t>(std::nearbyint(v));  // ties to even
    }
    const uint32_t r = ax + 0xFFFu + ((ax >> 13) & 1u);  // round the 13 dropped bits
    return sign | static_cast<uint16_t>((r - 0x38000000u) >> 13);
}

// fp32 -> bfloat16, round to nearest even; NaN stays NaN.
inline uint16_t encode_bf16(float f) {
    const uint32_t x = std::bit_cast<uint32_t>(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
    return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

inline float decode_f16(uint16_t h) {
    const float s = (h & 0x8000u) ? -1.0f : 1.0f;
    const int e = (h >> 10) & 0x1F;
    const int m = h & 0x3FF;
    if (e == 0) return s * std::ldexp(static_cast<float>(m), -24);
    if (e == 31) return m ? std::nanf("") : s * INFINITY;
    return s * std::ldexp(static_cast<float>(m + 1024), e - 25);
}

inline float decode_bf16(uint16_t h) {
    const float s = (h & 0x8000u) ? -1.0f : 1.0f;
    const int e = (h >> 7) & 0xFF;
    const int m = h & 0x7F;
    if (e == 0) return s * std::ldexp(static_cast<float>(m), -133);
    if (e == 255) return m ? std::nanf("") : s * INFINITY;
    return s * std::ldexp(static_cast<float>(m + 128), e - 134);
}

// The value a reader should return after `v` was stored as `d`.
inline float stored_value(float v, Dtype d) {
    switch (d) {
        case Dtype::F16:
            return decode_f16(encode_f16(v));
        case Dtype::BF16:
            return decode_bf16(encode_bf16(v));
        default:
            return v;
    }
}

// One tensor as it goes into a file: `bytes` already encoded (little-endian).
struct RawTensor {
    std::string name;
    std::string dtype;  // "F32", "F16", "BF16", or anything (for malformed files)
    std::vector<int64_t> shape;
    std::string bytes;
};

inline RawTensor make_tensor(std::string name, std::vector<int64_t> shape,
                             const std::vector<float>& values, Dtype d) {
    RawTensor t{std::move(name), dtype_name(d), std::move(shape), {}};
    if (d == Dtype::F32) {
        t.bytes.resize(values.size() * 4);
        if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
    } else {
        t.bytes.resize(values.size() * 2);
        for (size_t i = 0; i < values.size(); ++i) {
            const uint16_t h = d == Dtype::F16 ? encode_f16(values[i]) : encode_bf16(values[i]);
            std::memcpy(t.bytes.data() + 2 * i, &h, 2);
        }
    }
    return t;
}

// A 16-bit tensor from raw bit patterns.
inline RawTensor make_tensor_bits(std::string name, std::vector<int64_t> shape,
                                  const std::vector<uint16_t>& bits, Dtype d) {
    RawTensor t{std::move(name), dtype_name(d), std::move(shape),
                std::string(bits.size() * 2, '\0')};
    if (!bits.empty()) std::memcpy(t.bytes.data(), bits.data(), t.bytes.size());
    return t;
}

// u64 header length + header + data. `header_len` overrides the stored length (malformed files).
inline std::string safetensors_raw(const std::string& header, const std::string& data,
                                   std::optional<uint64_t> header_len = std::nullopt) {
    const uint64_t n = header_len.value_or(header.size());
    std::string out(8, '\0');
    std::memcpy(out.data(), &n, 8);
    return out + header + data;
}

// A well-formed file: tensors laid out in the given order, header padded with spaces to a
// multiple of 8 bytes (as the Python writer does).
inline std::string safetensors_bytes(const std::vector<RawTensor>& tensors,
                                     const std::map<std::string, std::string>& metadata = {}) {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    if (!metadata.empty()) h["__metadata__"] = metadata;
    std::string data;
    for (const auto& t : tensors) {
        h[t.name] = {{"dtype", t.dtype},
                     {"shape", t.shape},
                     {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
        data += t.bytes;
    }
    std::string header = h.dump();
    header.resize((header.size() + 7) / 8 * 8, ' ');
    return safetensors_raw(header, data);
}

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + p.string());
}

inline void write_safetensors(const std::filesystem::path& p, const std::vector<RawTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    write_file(p, safetensors_bytes(tensors, metadata));
}

inline void write_config(const std::filesystem::path& dir, const nlohmann::json& config) {
    write_file(dir / "config.json", config.dump(2));
}

// HF tensor name -> (shape in PyTorch order, fp32 values row-major).
using HfTensors = std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>;

// config.json + the tensors, stored as `dtype`, spread round-robin over `n_shards` files
// (model.safetensors, or model-0000i-of-0000n.safetensors); with `write_index`, also a
// model.safetensors.index.json naming each tensor's shard.
inline void write_hf_model(const std::filesystem::path& dir, const nlohmann::json& config,
                           const HfTensors& tensors, Dtype dtype = Dtype::F32, int n_shards = 1,
                           bool write_index = false) {
    std::filesystem::create_directories(dir);
    write_config(dir, config);
    auto shard_name = [&](int i) {
        if (n_shards == 1) return std::string("model.safetensors");
        char buf[64];
        std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i + 1, n_shards);
        return std::string(buf);
    };
    std::vector<std::vector<RawTensor>> shards(static_cast<size_t>(n_shards));
    nlohmann::json weight_map = nlohmann::json::object();
    int k = 0;
    for (const auto& [name, sv] : tensors) {
        const int s = k++ % n_shards;
        shards[static_cast<size_t>(s)].push_back(make_tensor(name, sv.first, sv.second, dtype));
        weight_map[name] = shard_name(s);
    }
    for (int i = 0; i < n_shards; ++i) {
        write_safetensors(dir / shard_name(i), shards[static_cast<size_t>(i)], {{"format", "pt"}});
    }
    if (write_index) {
        const nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                                      {"weight_map", weight_map}};
        write_file(dir / "model.safetensors.index.json", index.dump(2));
    }
}

// A fresh directory under the system temp dir, removed with its contents on destruction.
class TempDir {
  public:
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "kvs_test_XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return path_; }
    std::string str() const { return path_.string(); }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

  private:
    std::filesystem::path path_;
};

}  // namespace kvs::test
