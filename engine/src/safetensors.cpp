// Safetensors reader; the format and the checks are described in engine/safetensors.h.
#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/error.h"
#include "engine/ggml_types.h"

static_assert(std::endian::native == std::endian::little, "kvscope assumes a little-endian host");

namespace kvs {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // 100 MB
constexpr int kMaxJsonDepth = 16;                   // the format needs 3

// A name from the file, made safe for a one-line message: control bytes escaped, length capped.
// With ascii_only, bytes >= 0x80 are escaped too (for text that may not be valid UTF-8).
std::string printable(std::string_view s, bool ascii_only = false) {
    const size_t kMax = ascii_only ? 400 : 120;
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (out.size() >= kMax && (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
            out += "...";
            break;
        }
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7F || (ascii_only && c >= 0x80)) {
            out += fmt::format("\\x{:02x}", c);
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

bool parse_dtype(const std::string& s, StDtype* out) {
    if (s == "F32") {
        *out = StDtype::F32;
    } else if (s == "F16") {
        *out = StDtype::F16;
    } else if (s == "BF16") {
        *out = StDtype::BF16;
    } else {
        return false;
    }
    return true;
}

// A non-negative JSON integer, or false.
bool get_u64(const json& v, uint64_t* out) {
    if (!v.is_number_unsigned()) return false;  // negative ints are number_integer, not unsigned
    *out = v.get<uint64_t>();
    return true;
}

struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

}  // namespace

const char* st_dtype_name(StDtype t) {
    switch (t) {
        case StDtype::F32:
            return "F32";
        case StDtype::F16:
            return "F16";
        case StDtype::BF16:
            return "BF16";
    }
    return "?";
}

size_t st_dtype_size(StDtype t) {
    return t == StDtype::F32 ? 4 : 2;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept
    : path_(std::move(o.path_)),
      map_(std::exchange(o.map_, nullptr)),
      map_size_(std::exchange(o.map_size_, 0)),
      tensors_(std::move(o.tensors_)),
      metadata_(std::move(o.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
    if (this != &o) {
        release();
        path_ = std::move(o.path_);
        map_ = std::exchange(o.map_, nullptr);
        map_size_ = std::exchange(o.map_size_, 0);
        tensors_ = std::move(o.tensors_);
        metadata_ = std::move(o.metadata_);
    }
    return *this;
}

SafetensorsFile::~SafetensorsFile() {
    release();
}

void SafetensorsFile::release() noexcept {
    if (map_ != nullptr) ::munmap(map_, map_size_);
    map_ = nullptr;
    map_size_ = 0;
}

const SafetensorsTensor* SafetensorsFile::tensor(std::string_view name) const {
    for (const auto& t : tensors_) {
        if (t.name == name) return &t;
    }
    return nullptr;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
    SafetensorsFile f;
    f.path_ = path;

    Fd fd;
    fd.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd.fd < 0) fail("cannot open safetensors file '{}': {}", path, std::strerror(errno));
    struct stat st {};
    if (::fstat(fd.fd, &st) != 0) fail("cannot stat '{}': {}", path, std::strerror(errno));
    if (!S_ISREG(st.st_mode)) fail("'{}' is not a regular file", path);
    const uint64_t file_size = static_cast<uint64_t>(st.st_size);
    if (file_size < 8) {
        fail("{}: file is {} bytes, too short for the 8-byte header length", path, file_size);
    }
    void* m = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
    if (m == MAP_FAILED) fail("cannot mmap '{}': {}", path, std::strerror(errno));
    f.map_ = m;
    f.map_size_ = file_size;
    const auto* base = static_cast<const uint8_t*>(m);

    uint64_t header_len = 0;
    std::memcpy(&header_len, base, 8);
    if (header_len > kMaxHeaderBytes) {
        fail("{}: header length {} at offset 0 is absurd (limit {} bytes)", path, header_len,
             kMaxHeaderBytes);
    }
    if (header_len > file_size - 8) {
        fail("{}: header length {} at offset 0 runs past the end of the file ({} bytes)", path,
             header_len, file_size);
    }
    if (header_len < 2)
        fail("{}: header length {} is too short for a JSON object", path, header_len);

    // Parse the header, rejecting deep nesting and duplicate tensor names on the way.
    const char* hbegin = reinterpret_cast<const char*>(base + 8);
    std::set<std::string> seen_keys;
    auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
        if (depth > kMaxJsonDepth)
            fail("{}: header JSON nests deeper than {}", path, kMaxJsonDepth);
        if (ev == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
            const auto& k = parsed.get_ref<const std::string&>();
            if (!seen_keys.insert(k).second) {
                fail("{}: tensor '{}' appears twice in the header", path, printable(k));
            }
        }
        return true;
    };
    json header;
    try {
        header = json::parse(hbegin, hbegin + header_len, cb);
    } catch (const json::exception& e) {
        fail("{}: header ({} bytes at offset 8) is not valid JSON: {}", path, header_len,
             printable(e.what(), true));
    }
    if (!header.is_object()) fail("{}: header is not a JSON object", path);

    const uint64_t data_start = 8 + header_len;
    const uint64_t data_size = file_size - data_start;

    for (const auto& [name, v] : header.items()) {
        if (name == "__metadata__") {
            if (!v.is_object()) fail("{}: __metadata__ is not a JSON object", path);
            for (const auto& [k, mv] : v.items()) {
                if (!mv.is_string()) {
                    fail("{}: __metadata__ value for key '{}' is not a string", path, printable(k));
                }
                f.metadata_.emplace_back(k, mv.get<std::string>());
            }
            continue;
        }
        const std::string pname = printable(name);
        if (!v.is_object()) fail("{}: tensor '{}': entry is not a JSON object", path, pname);

        SafetensorsTensor t;
        t.name = name;

        const auto dt = v.find("dtype");
        if (dt == v.end()) fail("{}: tensor '{}': missing field 'dtype'", path, pname);
        if (!dt->is_string()) fail("{}: tensor '{}': 'dtype' is not a string", path, pname);
        if (!parse_dtype(dt->get<std::string>(), &t.dtype)) {
            fail("{}: unsupported dtype {} for tensor '{}' (kvscope reads F32, F16, BF16)", path,
                 printable(dt->get<std::string>()), pname);
        }

        const auto sh = v.find("shape");
        if (sh == v.end()) fail("{}: tensor '{}': missing field 'shape'", path, pname);
        if (!sh->is_array()) fail("{}: tensor '{}': 'shape' is not an array", path, pname);
        uint64_t numel = 1;
        for (size_t i = 0; i < sh->size(); ++i) {
            const json& d = (*sh)[i];
            uint64_t dim = 0;
            if (!get_u64(d, &dim)) {
                fail("{}: tensor '{}': shape[{}] = {} is not a non-negative integer", path, pname,
                     i, d.dump());
            }
            if (dim > static_cast<uint64_t>(INT64_MAX) ||
                __builtin_mul_overflow(numel, dim, &numel) ||
                numel > static_cast<uint64_t>(INT64_MAX)) {
                fail("{}: tensor '{}': shape {} overflows the element count", path, pname,
                     sh->dump());
            }
            t.shape.push_back(static_cast<int64_t>(dim));
        }
        uint64_t expect_bytes = 0;
        if (__builtin_mul_overflow(numel, st_dtype_size(t.dtype), &expect_bytes)) {
            fail("{}: tensor '{}': shape {} overflows the byte count", path, pname, sh->dump());
        }

        const auto off = v.find("data_offsets");
        if (off == v.end()) fail("{}: tensor '{}': missing field 'data_offsets'", path, pname);
        uint64_t begin = 0, end = 0;
        if (!off->is_array() || off->size() != 2 || !get_u64((*off)[0], &begin) ||
            !get_u64((*off)[1], &end)) {
            fail("{}: tensor '{}': 'data_offsets' = {} is not [begin, end] (non-negative integers)",
                 path, pname, off->dump());
        }
        if (end < begin) {
            fail("{}: tensor '{}': data_offsets end {} < begin {}", path, pname, end, begin);
        }
        if (end - begin != expect_bytes) {
            fail("{}: tensor '{}': data_offsets span {} bytes but shape {} x {} needs {}", path,
                 pname, end - begin, sh->dump(), st_dtype_name(t.dtype), expect_bytes);
        }
        if (end > data_size) {
            fail(
                "{}: tensor '{}': data_offsets end {} is past the end of the data ({} bytes, "
                "file truncated?)",
                path, pname, end, data_size);
        }
        t.n_elements = static_cast<int64_t>(numel);
        t.nbytes = static_cast<size_t>(expect_bytes);
        t.data = base + data_start + begin;
        f.tensors_.push_back(std::move(t));
    }
    std::stable_sort(
        f.tensors_.begin(), f.tensors_.end(),
        [&](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.data < b.data; });
    return f;
}

std::vector<float> st_read_fp32(const SafetensorsTensor& t) {
    KVS_ASSERT(t.nbytes == static_cast<size_t>(t.n_elements) * st_dtype_size(t.dtype));
    std::vector<float> out(static_cast<size_t>(t.n_elements));
    if (t.n_elements == 0) return out;
    switch (t.dtype) {
        case StDtype::F32:
            std::memcpy(out.data(), t.data, t.nbytes);
            break;
        case StDtype::F16:
        case StDtype::BF16: {
            const bool half = t.dtype == StDtype::F16;
            for (size_t i = 0; i < out.size(); ++i) {
                uint16_t h;
                std::memcpy(&h, t.data + 2 * i, 2);
                out[i] = half ? fp16_to_fp32(h) : bf16_to_fp32(h);
            }
            break;
        }
    }
    return out;
}

}  // namespace kvs
