#include "capture/h5util.h"

#include <fmt/format.h>

#include <algorithm>

#include "engine/error.h"

namespace kvs::capture::h5 {

void init() {
    // The error-printing switch is per thread in a thread-safe HDF5 build: set it in each.
    thread_local bool done = false;
    if (done) return;
    // No HDF5 clean-up at exit: HDF5 1.10 crashes (SIGSEGV in H5F__close_cb) terminating the
    // library when a file failed to close because the disk was full, turning a one-line error
    // into a crash. kvscope closes every object it opens itself (h5::Id), so nothing is lost.
    // Only effective before the library initializes (the first HDF5 call); harmless after.
    static const bool no_atexit = [] {
        H5dont_atexit();
        return true;
    }();
    (void)no_atexit;
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
}

std::string last_error() {
    std::string out;
    auto cb = [](unsigned n, const H5E_error2_t* e, void* data) -> herr_t {
        auto* s = static_cast<std::string*>(data);
        if (n == 0 && e->desc) *s = e->desc;  // walking upward: entry 0 is the innermost
        return 0;
    };
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, cb, &out);
    // One line: HDF5's write-failure message embeds ctime()'s newline.
    for (char& c : out)
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    return out;
}

void Id::reset() {
    if (id_ < 0) return;
    switch (H5Iget_type(id_)) {
        case H5I_FILE:
            H5Fclose(id_);
            break;
        case H5I_GROUP:
            H5Gclose(id_);
            break;
        case H5I_DATASET:
            H5Dclose(id_);
            break;
        case H5I_DATASPACE:
            H5Sclose(id_);
            break;
        case H5I_DATATYPE:
            H5Tclose(id_);
            break;
        case H5I_ATTR:
            H5Aclose(id_);
            break;
        case H5I_GENPROP_LST:
            H5Pclose(id_);
            break;
        default:
            break;
    }
    id_ = -1;
}

Id f16_type() {
    // As h5py builds its numpy.float16 type: sign at bit 15, exponent bits 10-14 (bias 15),
    // mantissa bits 0-9.
    Id t(H5Tcopy(H5T_IEEE_F32LE));
    H5Tset_fields(t.get(), 15, 10, 5, 0, 10);
    H5Tset_size(t.get(), 2);
    H5Tset_ebias(t.get(), 15);
    return t;
}

bool is_f16(hid_t type) {
    if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 2) return false;
    size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
    if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
    return spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 &&
           H5Tget_ebias(type) == 15 && H5Tget_order(type) == H5T_ORDER_LE;
}

Id bool_type() {
    Id t(H5Tenum_create(H5T_NATIVE_INT8));
    const int8_t f = 0, tr = 1;
    H5Tenum_insert(t.get(), "FALSE", &f);
    H5Tenum_insert(t.get(), "TRUE", &tr);
    return t;
}

Id fixed_str_type(size_t n) {
    Id t(H5Tcopy(H5T_C_S1));
    H5Tset_size(t.get(), std::max<size_t>(n, 1));
    H5Tset_strpad(t.get(), H5T_STR_NULLPAD);
    H5Tset_cset(t.get(), H5T_CSET_UTF8);
    return t;
}

namespace {

[[noreturn]] void write_fail(const std::string& file, const std::string& name) {
    const std::string e = last_error();
    fail("writing trace '{}': cannot write attribute '{}'{}{}", file, name, e.empty() ? "" : ": ",
         e);
}

void put_attr(hid_t loc, const std::string& name, hid_t ftype, hid_t mtype, hid_t space,
              const void* data, const std::string& file) {
    if (H5Aexists(loc, name.c_str()) > 0) {
        // Rewrite in place when the type and shape match (n_tokens after every append).
        Id a(H5Aopen(loc, name.c_str(), H5P_DEFAULT));
        Id t(H5Aget_type(a.get())), s(H5Aget_space(a.get()));
        if (H5Tequal(t.get(), ftype) > 0 && H5Sextent_equal(s.get(), space) > 0) {
            if (H5Awrite(a.get(), mtype, data) < 0) write_fail(file, name);
            return;
        }
        a.reset();
        H5Adelete(loc, name.c_str());
    }
    Id a(H5Acreate2(loc, name.c_str(), ftype, space, H5P_DEFAULT, H5P_DEFAULT));
    if (!a.valid() || H5Awrite(a.get(), mtype, data) < 0) write_fail(file, name);
}

void put_scalar(hid_t loc, const std::string& name, hid_t ftype, hid_t mtype, const void* data,
                const std::string& file) {
    Id space(H5Screate(H5S_SCALAR));
    put_attr(loc, name, ftype, mtype, space.get(), data, file);
}

}  // namespace

void write_attr(hid_t loc, const std::string& name, const std::string& v, const std::string& file) {
    Id t = fixed_str_type(v.size());
    const std::string padded = v.empty() ? std::string(1, '\0') : v;
    put_scalar(loc, name, t.get(), t.get(), padded.data(), file);
}

void write_attr(hid_t loc, const std::string& name, const char* v, const std::string& file) {
    write_attr(loc, name, std::string(v), file);
}

void write_attr(hid_t loc, const std::string& name, int64_t v, const std::string& file) {
    put_scalar(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, file);
}

void write_attr(hid_t loc, const std::string& name, double v, const std::string& file) {
    put_scalar(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, file);
}

void write_attr_bool(hid_t loc, const std::string& name, bool v, const std::string& file) {
    Id t = bool_type();
    const int8_t b = v ? 1 : 0;
    put_scalar(loc, name, t.get(), t.get(), &b, file);
}

void write_attr(hid_t loc, const std::string& name, const std::vector<int32_t>& v,
                const std::string& file) {
    const hsize_t n = v.size();
    Id space(H5Screate_simple(1, &n, nullptr));
    put_attr(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT32, space.get(), v.data(), file);
}

void write_attr(hid_t loc, const std::string& name, const std::vector<double>& v,
                const std::string& file) {
    const hsize_t n = v.size();
    Id space(H5Screate_simple(1, &n, nullptr));
    put_attr(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, space.get(), v.data(), file);
}

// --- reading ---------------------------------------------------------------------------------

bool has_attr(hid_t loc, const std::string& name) {
    return H5Aexists(loc, name.c_str()) > 0;
}

std::vector<uint64_t> shape_of(hid_t obj) {
    Id space(H5Iget_type(obj) == H5I_ATTR ? H5Aget_space(obj) : H5Dget_space(obj));
    if (!space.valid()) return {};
    const int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank <= 0) return {};
    std::vector<hsize_t> dims(size_t(rank), 0);
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    return {dims.begin(), dims.end()};
}

std::string shape_str(const std::vector<uint64_t>& s) {
    return fmt::format("[{}]", fmt::join(s, ", "));
}

bool link_exists(hid_t loc, const std::string& path) {
    size_t at = 0;
    while (true) {
        const size_t slash = path.find('/', at);
        const std::string prefix = path.substr(0, slash);
        if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
        if (slash == std::string::npos) return true;
        at = slash + 1;
    }
}

namespace {

// Opens attribute `name`, checks it holds one value (scalar or [1]) of class `want`.
Id open_scalar_attr(hid_t loc, const std::string& name, const std::string& where,
                    std::initializer_list<H5T_class_t> want, const char* what) {
    if (!has_attr(loc, name)) fail("{}: missing attribute '{}'", where, name);
    Id a(H5Aopen(loc, name.c_str(), H5P_DEFAULT));
    if (!a.valid()) fail("{}: cannot open attribute '{}': {}", where, name, last_error());
    Id t(H5Aget_type(a.get()));
    const H5T_class_t c = H5Tget_class(t.get());
    bool ok = false;
    for (H5T_class_t w : want) ok = ok || c == w;
    Id space(H5Aget_space(a.get()));
    const hssize_t n = H5Sget_simple_extent_npoints(space.get());
    if (!ok || n != 1) fail("{}: attribute '{}' is not {}", where, name, what);
    return a;
}

}  // namespace

std::string read_attr_str(hid_t loc, const std::string& name, const std::string& where) {
    Id a = open_scalar_attr(loc, name, where, {H5T_STRING}, "a string");
    Id ft(H5Aget_type(a.get()));
    Id mt(H5Tcopy(H5T_C_S1));
    H5Tset_cset(mt.get(), H5Tget_cset(ft.get()));
    if (H5Tis_variable_str(ft.get()) > 0) {
        H5Tset_size(mt.get(), H5T_VARIABLE);
        char* p = nullptr;
        if (H5Aread(a.get(), mt.get(), &p) < 0)
            fail("{}: cannot read attribute '{}': {}", where, name, last_error());
        std::string s = p ? p : "";
        H5free_memory(p);
        return s;
    }
    const size_t n = H5Tget_size(ft.get());
    if (n == 0 || n > (size_t(1) << 30)) fail("{}: attribute '{}' has a bad size", where, name);
    H5Tset_size(mt.get(), n + 1);  // room for the terminator HDF5 adds
    std::string s(n + 1, '\0');
    if (H5Aread(a.get(), mt.get(), s.data()) < 0)
        fail("{}: cannot read attribute '{}': {}", where, name, last_error());
    s.resize(std::min(n, s.find('\0')));
    while (!s.empty() && s.back() == ' ' && H5Tget_strpad(ft.get()) == H5T_STR_SPACEPAD)
        s.pop_back();
    return s;
}

int64_t read_attr_int(hid_t loc, const std::string& name, const std::string& where) {
    Id a = open_scalar_attr(loc, name, where, {H5T_INTEGER}, "an integer");
    int64_t v = 0;
    if (H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0)
        fail("{}: cannot read attribute '{}': {}", where, name, last_error());
    return v;
}

double read_attr_float(hid_t loc, const std::string& name, const std::string& where) {
    Id a = open_scalar_attr(loc, name, where, {H5T_FLOAT, H5T_INTEGER}, "a number");
    double v = 0;
    if (H5Aread(a.get(), H5T_NATIVE_DOUBLE, &v) < 0)
        fail("{}: cannot read attribute '{}': {}", where, name, last_error());
    return v;
}

bool read_attr_bool(hid_t loc, const std::string& name, const std::string& where) {
    Id a = open_scalar_attr(loc, name, where, {H5T_ENUM, H5T_INTEGER}, "a bool");
    Id ft(H5Aget_type(a.get()));
    if (H5Tget_class(ft.get()) == H5T_ENUM) {
        // h5py's bool (or any 1..8-byte enum): read the raw value with the file's own type.
        const size_t n = H5Tget_size(ft.get());
        if (n < 1 || n > 8) fail("{}: attribute '{}' is not a bool", where, name);
        Id nt(H5Tget_native_type(ft.get(), H5T_DIR_ASCEND));
        uint8_t raw[8] = {};
        if (H5Aread(a.get(), nt.get(), raw) < 0)
            fail("{}: cannot read attribute '{}': {}", where, name, last_error());
        for (size_t i = 0; i < n; ++i)
            if (raw[i] != 0) return true;
        return false;
    }
    int64_t v = 0;
    if (H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0)
        fail("{}: cannot read attribute '{}': {}", where, name, last_error());
    return v != 0;
}

std::vector<int64_t> read_attr_ints(hid_t loc, const std::string& name, const std::string& where) {
    if (!has_attr(loc, name)) fail("{}: missing attribute '{}'", where, name);
    Id a(H5Aopen(loc, name.c_str(), H5P_DEFAULT));
    Id t(H5Aget_type(a.get()));
    Id space(H5Aget_space(a.get()));
    const int rank = H5Sget_simple_extent_ndims(space.get());
    if (H5Tget_class(t.get()) != H5T_INTEGER || rank > 1)
        fail("{}: attribute '{}' is not a list of integers", where, name);
    const hssize_t n = H5Sget_simple_extent_npoints(space.get());
    if (n < 0 || n > (hssize_t(1) << 24)) fail("{}: attribute '{}' is too long", where, name);
    std::vector<int64_t> v(size_t(n), 0);
    if (n > 0 && H5Aread(a.get(), H5T_NATIVE_INT64, v.data()) < 0)
        fail("{}: cannot read attribute '{}': {}", where, name, last_error());
    return v;
}

std::vector<double> read_attr_floats(hid_t loc, const std::string& name, const std::string& where) {
    if (!has_attr(loc, name)) fail("{}: missing attribute '{}'", where, name);
    Id a(H5Aopen(loc, name.c_str(), H5P_DEFAULT));
    Id t(H5Aget_type(a.get()));
    Id space(H5Aget_space(a.get()));
    const int rank = H5Sget_simple_extent_ndims(space.get());
    if (H5Tget_class(t.get()) != H5T_FLOAT || H5Tget_size(t.get()) > 8 || rank > 1)
        fail("{}: attribute '{}' is not a list of floats", where, name);
    const hssize_t n = H5Sget_simple_extent_npoints(space.get());
    if (n < 0 || n > (hssize_t(1) << 24)) fail("{}: attribute '{}' is too long", where, name);
    std::vector<double> v(size_t(n), 0.0);
    if (n > 0 && H5Aread(a.get(), H5T_NATIVE_DOUBLE, v.data()) < 0)
        fail("{}: cannot read attribute '{}': {}", where, name, last_error());
    return v;
}

}  // namespace kvs::capture::h5
