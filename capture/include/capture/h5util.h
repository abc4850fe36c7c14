// Small HDF5 helpers shared by the trace writer and reader and by simulator/ results files.
//  - H5Id: an owned hid_t closed with the right H5?close.
//  - the binary16 file type (declared as h5py declares numpy.float16) and h5py's bool enum.
//  - attribute read/write of the handful of kinds a trace uses; a failure throws kvs::Error
//    whose one line names the file and the attribute, plus HDF5's innermost message.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvs::capture::h5 {

// Turns off HDF5's automatic error printing (once per process): errors become kvs::Error.
void init();
// The innermost message on HDF5's error stack ("" when empty), e.g. "truncated file: eof = ...".
std::string last_error();

class Id {
  public:
    Id() = default;
    explicit Id(hid_t id) : id_(id) {}
    Id(Id&& o) noexcept : id_(o.id_) { o.id_ = -1; }
    Id& operator=(Id&& o) noexcept {
        if (this != &o) {
            reset();
            id_ = o.id_;
            o.id_ = -1;
        }
        return *this;
    }
    Id(const Id&) = delete;
    Id& operator=(const Id&) = delete;
    ~Id() { reset(); }
    hid_t get() const { return id_; }
    bool valid() const { return id_ >= 0; }
    void reset();  // closes (errors ignored)

  private:
    hid_t id_ = -1;
};

Id f16_type();   // IEEE binary16, little-endian
Id bool_type();  // enum int8 {FALSE = 0, TRUE = 1}
// A fixed-length UTF-8 string of n bytes, null-padded. kvscope writes no variable-length strings:
// they live in HDF5's global heap, which has no checksum, and HDF5 1.10 crashes on a damaged one.
Id fixed_str_type(size_t n);
// A float type of size 2 with binary16's layout (whoever wrote it).
bool is_f16(hid_t type);

// --- writing (throw kvs::Error naming `file`) ---
void write_attr(hid_t loc, const std::string& name, const std::string& v, const std::string& file);
void write_attr(hid_t loc, const std::string& name, const char* v, const std::string& file);
void write_attr(hid_t loc, const std::string& name, int64_t v, const std::string& file);
void write_attr(hid_t loc, const std::string& name, double v, const std::string& file);
void write_attr_bool(hid_t loc, const std::string& name, bool v, const std::string& file);
void write_attr(hid_t loc, const std::string& name, const std::vector<int32_t>& v,
                const std::string& file);
void write_attr(hid_t loc, const std::string& name, const std::vector<double>& v,
                const std::string& file);

// --- reading: `where` names the object for messages ("trace 'a.h5': attribute 'n_head'") ---
bool has_attr(hid_t loc, const std::string& name);
std::string read_attr_str(hid_t loc, const std::string& name, const std::string& where);
int64_t read_attr_int(hid_t loc, const std::string& name, const std::string& where);
double read_attr_float(hid_t loc, const std::string& name, const std::string& where);
bool read_attr_bool(hid_t loc, const std::string& name, const std::string& where);
std::vector<int64_t> read_attr_ints(hid_t loc, const std::string& name, const std::string& where);
std::vector<double> read_attr_floats(hid_t loc, const std::string& name, const std::string& where);

// The shape of a dataset or attribute's dataspace.
std::vector<uint64_t> shape_of(hid_t dset_or_attr);
std::string shape_str(const std::vector<uint64_t>& s);  // "[3, 100, 64]"
bool link_exists(hid_t loc, const std::string& path);   // every component along the path

}  // namespace kvs::capture::h5
