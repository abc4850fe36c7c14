// Safetensors reader over a read-only mmap (Hugging Face's tensor file format).
//
// File layout:
//   u64 N (little-endian)  | N bytes of UTF-8 JSON (may be padded with trailing spaces) | data
//   JSON: { "<tensor name>": { "dtype": "F32" | "F16" | "BF16" | ...,
//                              "shape": [d0, d1, ...],            // row-major, PyTorch order
//                              "data_offsets": [begin, end] },   // bytes, relative to `data`
//           ...,
//           "__metadata__": { "<key>": "<string value>", ... } }  // optional
// kvscope reads F32, F16 and BF16; any other dtype is rejected with the tensor's name.
// Every field is checked before it is used: the header length against the file (and a 100 MB
// cap), the JSON syntax and nesting depth, each field's presence and type, non-negative dims
// whose element count does not overflow, end >= begin, end - begin == numel * itemsize and
// end within the file. A bad file raises kvs::Error naming the file and the tensor; nothing
// asserts on file contents. Overlapping tensors are not detected (they read fine).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvs {

enum class StDtype { F32, F16, BF16 };

const char* st_dtype_name(StDtype t);  // "F32", "F16", "BF16"
size_t st_dtype_size(StDtype t);       // bytes per element

struct SafetensorsTensor {
    std::string name;
    StDtype dtype = StDtype::F32;
    std::vector<int64_t> shape;  // as stored (PyTorch order); empty for a scalar
    int64_t n_elements = 0;
    const uint8_t* data = nullptr;  // points into the mapping; not necessarily aligned
    size_t nbytes = 0;
};

class SafetensorsFile {
  public:
    // Throws kvs::Error (missing file, truncated or hostile header, unsupported dtype).
    static SafetensorsFile open(const std::string& path);
    SafetensorsFile(SafetensorsFile&&) noexcept;
    SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
    SafetensorsFile(const SafetensorsFile&) = delete;
    SafetensorsFile& operator=(const SafetensorsFile&) = delete;
    ~SafetensorsFile();

    const std::string& path() const { return path_; }
    // Sorted by data offset (file order).
    const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
    const SafetensorsTensor* tensor(std::string_view name) const;  // nullptr when absent
    // "__metadata__", in key order.
    const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }

  private:
    SafetensorsFile() = default;
    void release() noexcept;

    std::string path_;
    void* map_ = nullptr;
    size_t map_size_ = 0;
    std::vector<SafetensorsTensor> tensors_;
    std::vector<std::pair<std::string, std::string>> metadata_;
};

// Converts a tensor's data to fp32 (row-major, same order as stored).
std::vector<float> st_read_fp32(const SafetensorsTensor& t);

}  // namespace kvs
