// Test helper: a tiny in-memory GGUF writer, plus temp-file helpers.
//
//   kvs::test::GgufWriter w;                      // version 3, alignment 32
//   w.add_string("general.architecture", "llama");
//   w.add_u32("llama.block_count", 2);
//   w.add_string_array("tokenizer.ggml.tokens", {"<s>", "a", "b"});
//   w.add_f32_array("some.floats", {1.0f, 2.5f});
//   w.add_tensor_f32("token_embd.weight", {ne0, ne1}, data);   // ne in ggml order
//   w.add_tensor_raw("blk.0.attn_q.weight", kvs::GgmlType::Q4_1, {64, 2}, bytes);
//   std::string path = kvs::test::temp_path("tiny.gguf");
//   w.write(path);
//
// The writer is deliberately dumb: it writes what it is given without validating it, so tests
// can also build broken files (n_dims 0, unknown types, bad offsets, overridden counts, raw value
// bytes). Layout: header, key/values in insertion order (general.alignment first when set with
// set_alignment), tensor infos, padding to the alignment, then each tensor's data at the next
// aligned offset. The file ends right after the last tensor's data (no trailing padding), so
// any truncation of a file with tensors cuts something the reader needs.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/ggml_types.h"
#include "engine/gguf.h"

namespace kvs::test {

// Little-endian byte buffer.
struct ByteBuf {
    std::vector<uint8_t> bytes;

    template <class T>
    ByteBuf& put(T v) {
        // resize + memcpy rather than insert: GCC 12 -O3 reports a false -Wnonnull for insert
        // into an empty vector.
        const size_t at = bytes.size();
        bytes.resize(at + sizeof(T));
        std::memcpy(bytes.data() + at, &v, sizeof(T));
        return *this;
    }
    ByteBuf& u8(uint8_t v) { return put(v); }
    ByteBuf& u16(uint16_t v) { return put(v); }
    ByteBuf& u32(uint32_t v) { return put(v); }
    ByteBuf& u64(uint64_t v) { return put(v); }
    ByteBuf& f32(float v) { return put(v); }
    ByteBuf& f64(double v) { return put(v); }
    ByteBuf& raw(const void* p, size_t n) {
        if (n == 0) return *this;
        const size_t at = bytes.size();
        bytes.resize(at + n);
        std::memcpy(bytes.data() + at, p, n);
        return *this;
    }
    ByteBuf& raw(const std::vector<uint8_t>& v) { return raw(v.data(), v.size()); }
    ByteBuf& str(std::string_view s) { return u64(s.size()).raw(s.data(), s.size()); }
    ByteBuf& pad_to(size_t alignment) {
        while (bytes.size() % alignment != 0) bytes.push_back(0);
        return *this;
    }
    size_t size() const { return bytes.size(); }
};

class GgufWriter {
  public:
    struct Tensor {
        std::string name;
        uint32_t type;             // ggml type id (need not be a known one)
        std::vector<uint64_t> ne;  // written as given; n_dims = ne.size()
        std::vector<uint8_t> data;
        std::optional<uint64_t> offset_override;  // written instead of the real data offset
    };

    explicit GgufWriter(uint32_t version = 3) : version_(version) {}

    GgufWriter& set_version(uint32_t v) {
        version_ = v;
        return *this;
    }
    // Lays the data out with this alignment and (unless write_key is false) records it as the
    // first key/value, general.alignment (u32). To write a bad value, add the key yourself.
    GgufWriter& set_alignment(uint32_t a, bool write_key = true) {
        alignment_ = a;
        write_alignment_key_ = write_key;
        return *this;
    }
    // Written instead of the real counts (for hostile-header tests).
    std::optional<uint64_t> n_kv_override, n_tensors_override;

    // --- scalars ---
    GgufWriter& add_u8(std::string_view k, uint8_t v) { return scalar(k, GgufType::U8, v); }
    GgufWriter& add_i8(std::string_view k, int8_t v) { return scalar(k, GgufType::I8, v); }
    GgufWriter& add_u16(std::string_view k, uint16_t v) { return scalar(k, GgufType::U16, v); }
    GgufWriter& add_i16(std::string_view k, int16_t v) { return scalar(k, GgufType::I16, v); }
    GgufWriter& add_u32(std::string_view k, uint32_t v) { return scalar(k, GgufType::U32, v); }
    GgufWriter& add_i32(std::string_view k, int32_t v) { return scalar(k, GgufType::I32, v); }
    GgufWriter& add_u64(std::string_view k, uint64_t v) { return scalar(k, GgufType::U64, v); }
    GgufWriter& add_i64(std::string_view k, int64_t v) { return scalar(k, GgufType::I64, v); }
    GgufWriter& add_f32(std::string_view k, float v) { return scalar(k, GgufType::F32, v); }
    GgufWriter& add_f64(std::string_view k, double v) { return scalar(k, GgufType::F64, v); }
    GgufWriter& add_bool(std::string_view k, bool v) {
        return scalar(k, GgufType::BOOL, uint8_t(v ? 1 : 0));
    }
    GgufWriter& add_string(std::string_view k, std::string_view v) {
        ByteBuf b;
        b.str(v);
        return add_kv_raw(k, GgufType::STRING, b.bytes);
    }

    // --- arrays ---
    GgufWriter& add_u8_array(std::string_view k, const std::vector<uint8_t>& v) {
        return array(k, GgufType::U8, v);
    }
    GgufWriter& add_i8_array(std::string_view k, const std::vector<int8_t>& v) {
        return array(k, GgufType::I8, v);
    }
    GgufWriter& add_u16_array(std::string_view k, const std::vector<uint16_t>& v) {
        return array(k, GgufType::U16, v);
    }
    GgufWriter& add_i16_array(std::string_view k, const std::vector<int16_t>& v) {
        return array(k, GgufType::I16, v);
    }
    GgufWriter& add_u32_array(std::string_view k, const std::vector<uint32_t>& v) {
        return array(k, GgufType::U32, v);
    }
    GgufWriter& add_i32_array(std::string_view k, const std::vector<int32_t>& v) {
        return array(k, GgufType::I32, v);
    }
    GgufWriter& add_u64_array(std::string_view k, const std::vector<uint64_t>& v) {
        return array(k, GgufType::U64, v);
    }
    GgufWriter& add_i64_array(std::string_view k, const std::vector<int64_t>& v) {
        return array(k, GgufType::I64, v);
    }
    GgufWriter& add_f32_array(std::string_view k, const std::vector<float>& v) {
        return array(k, GgufType::F32, v);
    }
    GgufWriter& add_f64_array(std::string_view k, const std::vector<double>& v) {
        return array(k, GgufType::F64, v);
    }
    GgufWriter& add_bool_array(std::string_view k, const std::vector<bool>& v) {
        std::vector<uint8_t> bytes(v.begin(), v.end());
        return array(k, GgufType::BOOL, bytes);
    }
    GgufWriter& add_string_array(std::string_view k, const std::vector<std::string>& v) {
        ByteBuf b;
        b.u32(uint32_t(GgufType::STRING)).u64(v.size());
        for (const auto& s : v) b.str(s);
        return add_kv_raw(k, GgufType::ARRAY, b.bytes);
    }

    // Any key/value: `value` is the encoded bytes that follow the u32 value type (for an array:
    // element type, count, elements). The type id need not be a valid one.
    GgufWriter& add_kv_raw(std::string_view k, GgufType type, std::vector<uint8_t> value) {
        return add_kv_raw(k, uint32_t(type), std::move(value));
    }
    GgufWriter& add_kv_raw(std::string_view k, uint32_t type_id, std::vector<uint8_t> value) {
        kvs_.push_back({std::string(k), type_id, std::move(value)});
        return *this;
    }

    // --- tensors (ne in ggml order: ne[0] is the contiguous dimension) ---
    Tensor& add_tensor_raw(std::string_view name, GgmlType type, const std::vector<int64_t>& ne,
                           std::vector<uint8_t> data) {
        return add_tensor_raw(name, uint32_t(type), ne, std::move(data));
    }
    Tensor& add_tensor_raw(std::string_view name, uint32_t type_id, const std::vector<int64_t>& ne,
                           std::vector<uint8_t> data) {
        Tensor t{std::string(name), type_id, {}, std::move(data), std::nullopt};
        for (int64_t n : ne) t.ne.push_back(uint64_t(n));
        tensors_.push_back(std::move(t));
        return tensors_.back();
    }
    Tensor& add_tensor_f32(std::string_view name, const std::vector<int64_t>& ne,
                           const std::vector<float>& data) {
        std::vector<uint8_t> bytes(data.size() * sizeof(float));
        if (!data.empty()) std::memcpy(bytes.data(), data.data(), bytes.size());
        return add_tensor_raw(name, GgmlType::F32, ne, std::move(bytes));
    }
    // Stores fp16 (rounded to nearest even) of the given floats.
    Tensor& add_tensor_f16(std::string_view name, const std::vector<int64_t>& ne,
                           const std::vector<float>& data) {
        ByteBuf b;
        for (float x : data) b.u16(kvs::fp32_to_fp16(x));
        return add_tensor_raw(name, GgmlType::F16, ne, std::move(b.bytes));
    }

    std::vector<Tensor>& tensors() { return tensors_; }

    // The encoded file. data_start (optional) receives the offset of the tensor data section.
    std::vector<uint8_t> bytes(size_t* data_start = nullptr) const {
        const size_t align = alignment_ ? alignment_ : 1;  // a zero alignment: lay out unpadded
        ByteBuf b;
        b.raw("GGUF", 4).u32(version_);
        const uint64_t n_kv = kvs_.size() + (write_alignment_key_ ? 1 : 0);
        b.u64(n_tensors_override.value_or(tensors_.size()));
        b.u64(n_kv_override.value_or(n_kv));
        if (write_alignment_key_) {
            b.str("general.alignment").u32(uint32_t(GgufType::U32)).u32(alignment_);
        }
        for (const Kv& kv : kvs_) b.str(kv.key).u32(kv.type).raw(kv.value);
        // Data offsets: each tensor at the next aligned offset after the previous one.
        std::vector<uint64_t> offsets;
        uint64_t off = 0;
        for (const Tensor& t : tensors_) {
            offsets.push_back(off);
            off += t.data.size();
            off = (off + align - 1) / align * align;
        }
        for (size_t i = 0; i < tensors_.size(); ++i) {
            const Tensor& t = tensors_[i];
            b.str(t.name).u32(uint32_t(t.ne.size()));
            for (uint64_t n : t.ne) b.u64(n);
            b.u32(t.type).u64(t.offset_override.value_or(offsets[i]));
        }
        b.pad_to(align);
        if (data_start) *data_start = b.size();
        const size_t base = b.size();
        for (size_t i = 0; i < tensors_.size(); ++i) {
            b.bytes.resize(base + offsets[i], 0);
            b.raw(tensors_[i].data);
        }
        return std::move(b.bytes);
    }

    void write(const std::string& path) const { write_file(path, bytes()); }

    static void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
        // Unlink first: on ext4, truncating and rewriting a file forces a flush to disk, which
        // makes tests that rewrite one file thousands of times very slow.
        std::error_code ec;
        std::filesystem::remove(path, ec);
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
        if (!out) throw std::runtime_error("GgufWriter: cannot write " + path);
    }

  private:
    struct Kv {
        std::string key;
        uint32_t type;
        std::vector<uint8_t> value;
    };

    template <class T>
    GgufWriter& scalar(std::string_view k, GgufType type, T v) {
        ByteBuf b;
        b.put(v);
        return add_kv_raw(k, type, b.bytes);
    }
    template <class T>
    GgufWriter& array(std::string_view k, GgufType elem, const std::vector<T>& v) {
        ByteBuf b;
        b.u32(uint32_t(elem)).u64(v.size());
        for (const T& x : v) b.put(x);
        return add_kv_raw(k, GgufType::ARRAY, b.bytes);
    }

    uint32_t version_ = 3;
    uint32_t alignment_ = 32;
    bool write_alignment_key_ = false;
    std::vector<Kv> kvs_;
    std::vector<Tensor> tensors_;
};

// A per-process scratch directory under the system temp dir, removed at exit.
inline const std::filesystem::path& temp_dir() {
    struct Dir {
        std::filesystem::path path;
        Dir() {
            path = std::filesystem::temp_directory_path() /
                   ("kvscope-test-" + std::to_string(::getpid()));
            std::filesystem::create_directories(path);
        }
        ~Dir() {
            std::error_code ec;
            std::filesystem::remove_all(path, ec);
        }
    };
    static Dir dir;
    return dir.path;
}

// temp_dir() / name.
inline std::string temp_path(std::string_view name) {
    return (temp_dir() / std::string(name)).string();
}

}  // namespace kvs::test
