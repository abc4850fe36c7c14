// GGUF v2/v3 reader over a read-only mmap.
//
// File layout (little-endian):
//   u32 magic "GGUF" | u32 version (2 or 3) | u64 n_tensors | u64 n_kv
//   n_kv x { string key | u32 value_type | value }
//       string = u64 len + bytes; array = u32 elem_type + u64 count + elems (no nested arrays of
//       arrays are accepted beyond what the spec allows)
//   n_tensors x { string name | u32 n_dims (1..4) | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32) | tensor data (offsets relative to its start)
// Every count, length, offset and size is checked against the file before it is used; a bad
// file raises kvs::Error naming the file, the field and the byte offset. Nothing asserts on
// file contents.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/ggml_types.h"

namespace kvs {

enum class GgufType : uint32_t {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    BOOL = 7,
    STRING = 8,
    ARRAY = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
};

struct GgufValue {
    GgufType type = GgufType::U8;
    GgufType elem_type = GgufType::U8;  // for ARRAY
    // Scalars: integers and bools in `i`, floats in `f`, strings in `s`. A u64 above INT64_MAX
    // keeps its bit pattern in `i` (negative); get_int() rejects it, get_float() reads it right.
    int64_t i = 0;
    double f = 0.0;
    std::string s;
    // Arrays: integer/bool elements in `ints`, float elements in `floats`, strings in `strs`.
    std::vector<int64_t> ints;
    std::vector<double> floats;
    std::vector<std::string> strs;
};

// "u32", "string", "array", ... for messages.
const char* gguf_type_name(GgufType t);

struct GgufTensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;  // ggml order: ne[0] is the contiguous (innermost) dimension
    uint64_t offset;          // relative to the start of the data section
    size_t nbytes;
    int64_t n_elements;
    const uint8_t* data;  // points into the mapping
};

class GgufFile {
  public:
    // Throws kvs::Error (missing file, bad magic, unsupported version, truncated or hostile data).
    static GgufFile open(const std::string& path);
    GgufFile(GgufFile&&) noexcept;
    GgufFile& operator=(GgufFile&&) noexcept;
    ~GgufFile();

    const std::string& path() const { return path_; }
    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }

    const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
    const GgufValue* find(std::string_view key) const;
    // Typed getters: throw kvs::Error naming the key when missing or of the wrong type.
    std::string get_string(std::string_view key) const;
    int64_t get_int(std::string_view key) const;   // any integer or bool type
    double get_float(std::string_view key) const;  // F32/F64 (or an integer)
    // The _opt getters return nullopt when the key is missing and still throw on a wrong type.
    std::optional<std::string> get_string_opt(std::string_view key) const;
    std::optional<int64_t> get_int_opt(std::string_view key) const;
    std::optional<double> get_float_opt(std::string_view key) const;
    const std::vector<std::string>& get_string_array(std::string_view key) const;

    const std::vector<GgufTensor>& tensors() const { return tensors_; }
    const GgufTensor* tensor(std::string_view name) const;  // nullptr when absent

  private:
    GgufFile() = default;
    std::string path_;
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    std::vector<std::pair<std::string, GgufValue>> kv_;
    std::vector<GgufTensor> tensors_;
    struct Mapping;
    std::unique_ptr<Mapping> map_;
};

}  // namespace kvs
