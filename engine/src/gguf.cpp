// GGUF v2/v3 reader (format summary in engine/gguf.h).
//
// The file is mapped read-only and parsed by a bounds-checked cursor: every read first checks
// that the bytes exist, every count is checked against the bytes left before anything is
// allocated for it, and all size arithmetic is overflow-checked. Any violation raises kvs::Error
// with a one-line message: "<path>: <where>: <what is wrong> (<what was expected>)".
#include "engine/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <unordered_map>

#include "engine/error.h"

namespace kvs {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader assumes a little-endian host");

// Read-only mapping of the whole file; unmapped on destruction.
struct GgufFile::Mapping {
    const uint8_t* data = nullptr;
    size_t size = 0;
    Mapping() = default;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping() {
        if (data) ::munmap(const_cast<uint8_t*>(data), size);
    }
};

GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

const char* gguf_type_name(GgufType t) {
    switch (t) {
        case GgufType::U8:
            return "u8";
        case GgufType::I8:
            return "i8";
        case GgufType::U16:
            return "u16";
        case GgufType::I16:
            return "i16";
        case GgufType::U32:
            return "u32";
        case GgufType::I32:
            return "i32";
        case GgufType::F32:
            return "f32";
        case GgufType::BOOL:
            return "bool";
        case GgufType::STRING:
            return "string";
        case GgufType::ARRAY:
            return "array";
        case GgufType::U64:
            return "u64";
        case GgufType::I64:
            return "i64";
        case GgufType::F64:
            return "f64";
    }
    return "unknown";
}

namespace {

constexpr uint32_t kMaxDims = 4;
constexpr size_t kDefaultAlignment = 32;
// Smallest possible encodings, used to reject counts that cannot fit in the file:
// a key/value is a key length (8) + value type (4) + a 1-byte value; a tensor info is a name
// length (8) + n_dims (4) + one dimension (8) + type (4) + offset (8).
constexpr size_t kMinKvBytes = 8 + 4 + 1;
constexpr size_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

bool is_integer(GgufType t) {
    switch (t) {
        case GgufType::U8:
        case GgufType::I8:
        case GgufType::U16:
        case GgufType::I16:
        case GgufType::U32:
        case GgufType::I32:
        case GgufType::U64:
        case GgufType::I64:
            return true;
        default:
            return false;
    }
}

bool is_known_value_type(uint32_t t) {
    return t <= uint32_t(GgufType::F64);
}

// Encoded size of one element of a scalar type (strings: the minimum, their length field).
size_t value_size(GgufType t) {
    switch (t) {
        case GgufType::U8:
        case GgufType::I8:
        case GgufType::BOOL:
            return 1;
        case GgufType::U16:
        case GgufType::I16:
            return 2;
        case GgufType::U32:
        case GgufType::I32:
        case GgufType::F32:
            return 4;
        case GgufType::U64:
        case GgufType::I64:
        case GgufType::F64:
        case GgufType::STRING:
            return 8;
        case GgufType::ARRAY:
            break;
    }
    return 0;
}

std::string type_desc(const GgufValue& v) {
    if (v.type == GgufType::ARRAY) return fmt::format("array of {}", gguf_type_name(v.elem_type));
    return gguf_type_name(v.type);
}

// Names and keys come from the file: make them safe to put in a one-line message.
std::string printable(std::string_view s) {
    constexpr size_t kMax = 96;
    std::string out;
    for (size_t i = 0; i < s.size() && i < kMax; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
            out += fmt::format("\\x{:02x}", c);
        } else {
            out += char(c);
        }
    }
    if (s.size() > kMax) out += fmt::format("...({} bytes)", s.size());
    return out;
}

// Bounds-checked little-endian cursor over the mapped file.
class Cursor {
  public:
    Cursor(const std::string& path, const uint8_t* base, size_t size)
        : path_(path), base_(base), size_(size) {}

    size_t pos() const { return pos_; }
    size_t remaining() const { return size_ - pos_; }
    // Describes what is being parsed ("header", "key 'x'", "tensor 'y'") for error messages.
    void set_context(std::string ctx) { ctx_ = std::move(ctx); }
    const std::string& context() const { return ctx_; }

    void need(size_t n, const char* what) const {
        if (n > remaining()) {
            fail(
                "{}: {}: truncated file: {} at offset {} needs {} bytes but only {} remain "
                "(file size {})",
                path_, ctx_, what, pos_, n, remaining(), size_);
        }
    }

    template <class T>
    T read(const char* what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, base_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    std::string read_string(const char* what) {
        const size_t at = pos_;
        const uint64_t len = read<uint64_t>(what);
        if (len > remaining()) {
            fail("{}: {}: {} at offset {} has length {} but only {} bytes remain (file size {})",
                 path_, ctx_, what, at, len, remaining(), size_);
        }
        std::string s(reinterpret_cast<const char*>(base_ + pos_), size_t(len));
        pos_ += size_t(len);
        return s;
    }

  private:
    const std::string& path_;
    const uint8_t* base_;
    size_t size_;
    size_t pos_ = 0;
    std::string ctx_ = "header";
};

int64_t read_int_elem(Cursor& c, GgufType t, const char* what) {
    switch (t) {
        case GgufType::U8:
            return c.read<uint8_t>(what);
        case GgufType::I8:
            return c.read<int8_t>(what);
        case GgufType::U16:
            return c.read<uint16_t>(what);
        case GgufType::I16:
            return c.read<int16_t>(what);
        case GgufType::U32:
            return c.read<uint32_t>(what);
        case GgufType::I32:
            return c.read<int32_t>(what);
        // A u64 above INT64_MAX is kept bit for bit (negative here); get_int() rejects it.
        case GgufType::U64:
            return int64_t(c.read<uint64_t>(what));
        case GgufType::I64:
            return c.read<int64_t>(what);
        default:
            break;
    }
    KVS_ASSERT(false && "read_int_elem on a non-integer type");
    return 0;
}

bool read_bool(Cursor& c, const std::string& path, const char* what) {
    const size_t at = c.pos();
    const uint8_t b = c.read<uint8_t>(what);
    if (b > 1) {
        fail("{}: {}: bool {} at offset {} is {} (expected 0 or 1)", path, c.context(), what, at,
             b);
    }
    return b != 0;
}

GgufValue read_value(Cursor& c, const std::string& path, uint32_t type_id, size_t type_at) {
    if (!is_known_value_type(type_id)) {
        fail("{}: {}: unknown value type {} at offset {} (expected 0..12)", path, c.context(),
             type_id, type_at);
    }
    GgufValue v;
    v.type = GgufType(type_id);
    if (is_integer(v.type)) {
        v.i = read_int_elem(c, v.type, "value");
    } else if (v.type == GgufType::BOOL) {
        v.i = read_bool(c, path, "value");
    } else if (v.type == GgufType::F32) {
        v.f = c.read<float>("value");
    } else if (v.type == GgufType::F64) {
        v.f = c.read<double>("value");
    } else if (v.type == GgufType::STRING) {
        v.s = c.read_string("string value");
    } else {  // ARRAY
        const size_t elem_at = c.pos();
        const uint32_t elem = c.read<uint32_t>("array element type");
        if (elem == uint32_t(GgufType::ARRAY)) {
            fail("{}: {}: array of arrays at offset {} is not supported", path, c.context(),
                 elem_at);
        }
        if (!is_known_value_type(elem)) {
            fail("{}: {}: unknown array element type {} at offset {} (expected 0..8 or 10..12)",
                 path, c.context(), elem, elem_at);
        }
        v.elem_type = GgufType(elem);
        const size_t count_at = c.pos();
        const uint64_t count = c.read<uint64_t>("array length");
        const size_t esize = value_size(v.elem_type);
        if (count > c.remaining() / esize) {
            fail(
                "{}: {}: array of {} {} elements at offset {} needs at least {} x {} bytes but "
                "only {} bytes remain",
                path, c.context(), count, gguf_type_name(v.elem_type), count_at, count, esize,
                c.remaining());
        }
        const auto n = size_t(count);
        if (is_integer(v.elem_type)) {
            v.ints.resize(n);
            for (size_t k = 0; k < n; ++k)
                v.ints[k] = read_int_elem(c, v.elem_type, "array element");
        } else if (v.elem_type == GgufType::BOOL) {
            v.ints.resize(n);
            for (size_t k = 0; k < n; ++k) v.ints[k] = read_bool(c, path, "array element");
        } else if (v.elem_type == GgufType::F32) {
            v.floats.resize(n);
            for (size_t k = 0; k < n; ++k) v.floats[k] = c.read<float>("array element");
        } else if (v.elem_type == GgufType::F64) {
            v.floats.resize(n);
            for (size_t k = 0; k < n; ++k) v.floats[k] = c.read<double>("array element");
        } else {  // STRING
            v.strs.resize(n);
            for (size_t k = 0; k < n; ++k) v.strs[k] = c.read_string("array string");
        }
    }
    return v;
}

// Rounds x up to a multiple of `align` (a power of two); false on overflow.
bool align_up(size_t x, size_t align, size_t& out) {
    size_t sum;
    if (__builtin_add_overflow(x, align - 1, &sum)) return false;
    out = sum & ~(align - 1);
    return true;
}

std::string shape_str(const std::vector<int64_t>& ne) {
    std::string s;
    for (size_t d = 0; d < ne.size(); ++d) s += fmt::format("{}{}", d ? " x " : "", ne[d]);
    return s;
}

}  // namespace

GgufFile GgufFile::open(const std::string& path) {
    GgufFile f;
    f.path_ = path;
    f.map_ = std::make_unique<Mapping>();

    // --- map the file -------------------------------------------------------------------------
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail("cannot open model file '{}': {}", path, std::generic_category().message(errno));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        fail("cannot open model file '{}': {}", path, std::generic_category().message(err));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        fail("cannot open model file '{}': not a regular file", path);
    }
    const auto file_size = size_t(st.st_size);
    if (file_size == 0) {
        ::close(fd);
        fail("{}: not a GGUF file (bad magic): the file is empty", path);
    }
    void* addr = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_err = errno;
    ::close(fd);  // the mapping keeps the file alive
    if (addr == MAP_FAILED) {
        fail("cannot map model file '{}' ({} bytes): {}", path, file_size,
             std::generic_category().message(map_err));
    }
    f.map_->data = static_cast<const uint8_t*>(addr);
    f.map_->size = file_size;
    const uint8_t* base = f.map_->data;

    // --- header -------------------------------------------------------------------------------
    if (file_size < 4 || std::memcmp(base, "GGUF", 4) != 0) {
        if (file_size < 4) {
            fail("{}: not a GGUF file (bad magic): the file is only {} bytes", path, file_size);
        }
        fail(
            "{}: not a GGUF file (bad magic): starts with {:02x} {:02x} {:02x} {:02x}, expected "
            "'GGUF' (47 47 55 46)",
            path, base[0], base[1], base[2], base[3]);
    }
    Cursor c(path, base, file_size);
    c.read<uint32_t>("magic");
    f.version_ = c.read<uint32_t>("version");
    if (f.version_ != 2 && f.version_ != 3) {
        if (f.version_ == 1) {
            fail(
                "{}: unsupported GGUF version 1 (an obsolete format; expected version 2 or 3, "
                "re-convert the model)",
                path);
        }
        if ((f.version_ & 0xffffu) == 0 && (f.version_ >> 24) >= 1 && (f.version_ >> 24) <= 3) {
            fail(
                "{}: unsupported GGUF version {} (a big-endian file; expected little-endian "
                "version 2 or 3)",
                path, f.version_ >> 24);
        }
        fail("{}: unsupported GGUF version {} (expected 2 or 3)", path, f.version_);
    }
    const uint64_t n_tensors = c.read<uint64_t>("n_tensors");
    const uint64_t n_kv = c.read<uint64_t>("n_kv");
    if (n_kv > c.remaining() / kMinKvBytes) {
        fail(
            "{}: header: n_kv = {} key/value pairs cannot fit in the {} bytes after the header "
            "(each needs at least {} bytes)",
            path, n_kv, c.remaining(), kMinKvBytes);
    }
    if (n_tensors > c.remaining() / kMinTensorInfoBytes ||
        n_kv * kMinKvBytes + n_tensors * kMinTensorInfoBytes > c.remaining()) {
        fail(
            "{}: header: n_tensors = {} tensor infos (and {} key/value pairs) cannot fit in the "
            "{} bytes after the header (each tensor info needs at least {} bytes)",
            path, n_tensors, n_kv, c.remaining(), kMinTensorInfoBytes);
    }

    // --- metadata -----------------------------------------------------------------------------
    std::unordered_map<std::string, size_t> key_offsets;
    f.kv_.reserve(size_t(n_kv));
    for (uint64_t i = 0; i < n_kv; ++i) {
        const size_t at = c.pos();
        c.set_context(fmt::format("key/value #{}", i));
        std::string key = c.read_string("key");
        if (key.empty()) fail("{}: key/value #{}: empty key at offset {}", path, i, at);
        c.set_context(fmt::format("key '{}'", printable(key)));
        if (auto [it, inserted] = key_offsets.emplace(key, at); !inserted) {
            fail("{}: key '{}' at offset {} is duplicated (first defined at offset {})", path,
                 printable(key), at, it->second);
        }
        const size_t type_at = c.pos();
        const uint32_t type_id = c.read<uint32_t>("value type");
        GgufValue v = read_value(c, path, type_id, type_at);
        f.kv_.emplace_back(std::move(key), std::move(v));
    }

    if (const GgufValue* a = f.find("general.alignment")) {
        if (!is_integer(a->type)) {
            fail("{}: key 'general.alignment' has type {} (expected u32)", path, type_desc(*a));
        }
        if (a->i <= 0 || !std::has_single_bit(uint64_t(a->i))) {
            const std::string shown = a->type == GgufType::U64 ? fmt::format("{}", uint64_t(a->i))
                                                               : fmt::format("{}", a->i);
            fail("{}: key 'general.alignment' is {} (expected a non-zero power of two)", path,
                 shown);
        }
        f.alignment_ = size_t(a->i);
    } else {
        f.alignment_ = kDefaultAlignment;
    }

    // --- tensor infos -------------------------------------------------------------------------
    std::unordered_map<std::string, size_t> name_offsets;
    std::vector<size_t> info_offsets;
    f.tensors_.reserve(size_t(n_tensors));
    info_offsets.reserve(size_t(n_tensors));
    for (uint64_t i = 0; i < n_tensors; ++i) {
        const size_t at = c.pos();
        c.set_context(fmt::format("tensor #{}", i));
        GgufTensor t{};
        t.name = c.read_string("name");
        const std::string name = printable(t.name);
        c.set_context(fmt::format("tensor '{}'", name));
        if (auto [it, inserted] = name_offsets.emplace(t.name, at); !inserted) {
            fail("{}: tensor '{}' at offset {} is duplicated (first defined at offset {})", path,
                 name, at, it->second);
        }
        const size_t dims_at = c.pos();
        const uint32_t n_dims = c.read<uint32_t>("n_dims");
        if (n_dims == 0 || n_dims > kMaxDims) {
            fail("{}: tensor '{}': n_dims = {} at offset {} (expected 1..{})", path, name, n_dims,
                 dims_at, kMaxDims);
        }
        t.n_elements = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const size_t ne_at = c.pos();
            const uint64_t ne = c.read<uint64_t>("dimension");
            if (ne == 0 || ne > uint64_t(INT64_MAX)) {
                fail("{}: tensor '{}': ne[{}] = {} at offset {} (expected 1..2^63-1)", path, name,
                     d, ne, ne_at);
            }
            t.ne.push_back(int64_t(ne));
            if (__builtin_mul_overflow(t.n_elements, int64_t(ne), &t.n_elements)) {
                fail("{}: tensor '{}': element count of shape [{}...] overflows int64", path, name,
                     shape_str(t.ne));
            }
        }
        const size_t type_at = c.pos();
        const uint32_t type_id = c.read<uint32_t>("type");
        const GgmlTypeInfo* info = ggml_type_info(type_id);
        if (!info) {
            fail("{}: tensor '{}': unknown ggml type id {} at offset {}", path, name, type_id,
                 type_at);
        }
        t.type = GgmlType(type_id);
        if (t.ne[0] % info->block_size != 0) {
            fail("{}: tensor '{}': ne[0] = {} is not a multiple of the block size {} of type {}",
                 path, name, t.ne[0], info->block_size, info->name);
        }
        const auto n_rows = uint64_t(t.n_elements / t.ne[0]);
        const auto blocks_per_row = uint64_t(t.ne[0] / info->block_size);
        uint64_t nbytes = 0;
        if (__builtin_mul_overflow(blocks_per_row, uint64_t(info->type_size), &nbytes) ||
            __builtin_mul_overflow(nbytes, n_rows, &nbytes)) {
            fail("{}: tensor '{}': size in bytes of shape [{}] of type {} overflows", path, name,
                 shape_str(t.ne), info->name);
        }
        t.nbytes = size_t(nbytes);
        const size_t offset_at = c.pos();
        t.offset = c.read<uint64_t>("data offset");
        if (t.offset % f.alignment_ != 0) {
            fail(
                "{}: tensor '{}': data offset {} at offset {} is not a multiple of the alignment "
                "{}",
                path, name, t.offset, offset_at, f.alignment_);
        }
        f.tensors_.push_back(std::move(t));
        info_offsets.push_back(at);
    }

    // --- tensor data --------------------------------------------------------------------------
    size_t data_start = 0;
    if (!align_up(c.pos(), f.alignment_, data_start)) {
        fail("{}: data section start (offset {} aligned to {}) overflows", path, c.pos(),
             f.alignment_);
    }
    for (GgufTensor& t : f.tensors_) {
        size_t begin = 0, end = 0;
        if (__builtin_add_overflow(data_start, t.offset, &begin)) {
            fail(
                "{}: tensor '{}': data [offset {} + {}, {} bytes] runs past the end of the file "
                "(size {})",
                path, printable(t.name), data_start, t.offset, t.nbytes, file_size);
        }
        if (__builtin_add_overflow(begin, t.nbytes, &end) || end > file_size) {
            fail(
                "{}: tensor '{}': data [offset {}, {} bytes] runs past the end of the file "
                "(size {})",
                path, printable(t.name), begin, t.nbytes, file_size);
        }
        t.data = base + begin;
    }
    return f;
}

const GgufValue* GgufFile::find(std::string_view key) const {
    for (const auto& [k, v] : kv_) {
        if (k == key) return &v;
    }
    return nullptr;
}

namespace {

[[noreturn]] void wrong_type(const std::string& path, std::string_view key, const GgufValue& v,
                             const char* expected) {
    fail("{}: key '{}' has type {} (expected {})", path, key, type_desc(v), expected);
}

const GgufValue& require(const GgufFile& f, std::string_view key) {
    const GgufValue* v = f.find(key);
    if (!v) fail("{}: missing key '{}'", f.path(), key);
    return *v;
}

std::string as_string(const GgufFile& f, std::string_view key, const GgufValue& v) {
    if (v.type != GgufType::STRING) wrong_type(f.path(), key, v, "string");
    return v.s;
}

int64_t as_int(const GgufFile& f, std::string_view key, const GgufValue& v) {
    if (!is_integer(v.type) && v.type != GgufType::BOOL) {
        wrong_type(f.path(), key, v, "an integer");
    }
    if (v.type == GgufType::U64 && v.i < 0) {
        fail("{}: key '{}' = {} does not fit in int64", f.path(), key, uint64_t(v.i));
    }
    return v.i;
}

double as_float(const GgufFile& f, std::string_view key, const GgufValue& v) {
    if (v.type == GgufType::F32 || v.type == GgufType::F64) return v.f;
    if (v.type == GgufType::U64) return double(uint64_t(v.i));
    if (is_integer(v.type)) return double(v.i);
    wrong_type(f.path(), key, v, "a float or an integer");
}

}  // namespace

std::string GgufFile::get_string(std::string_view key) const {
    return as_string(*this, key, require(*this, key));
}

int64_t GgufFile::get_int(std::string_view key) const {
    return as_int(*this, key, require(*this, key));
}

double GgufFile::get_float(std::string_view key) const {
    return as_float(*this, key, require(*this, key));
}

std::optional<std::string> GgufFile::get_string_opt(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    return as_string(*this, key, *v);
}

std::optional<int64_t> GgufFile::get_int_opt(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    return as_int(*this, key, *v);
}

std::optional<double> GgufFile::get_float_opt(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    return as_float(*this, key, *v);
}

const std::vector<std::string>& GgufFile::get_string_array(std::string_view key) const {
    const GgufValue& v = require(*this, key);
    if (v.type != GgufType::ARRAY || v.elem_type != GgufType::STRING) {
        wrong_type(path_, key, v, "array of string");
    }
    return v.strs;
}

const GgufTensor* GgufFile::tensor(std::string_view name) const {
    for (const GgufTensor& t : tensors_) {
        if (t.name == name) return &t;
    }
    return nullptr;
}

}  // namespace kvs
