// The reader rejects what is not a valid trace with one line naming the file and the field, and
// never crashes: a missing or non-HDF5 file, an HDF5 file that is not a trace, a newer
// schema_version, a missing attribute or dataset, a shape that contradicts the attributes, a
// truncated file, corrupted bytes.
#include <hdf5.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "capture/trace_reader.h"
#include "engine/error.h"
#include "gguf_writer.h"
#include "synthetic_trace.h"

using namespace kvs;
using namespace kvs::capture;

// HDF5 1.10 leaks a few small buffers on some error paths when it opens a damaged file (the
// corruption test below); LeakSanitizer (the asan preset) is told to ignore allocations made
// inside libhdf5. This costs no coverage: HDF5 frees what kvscope forgets to close at exit.
extern "C" const char* __lsan_default_suppressions() {
    return "leak:libhdf5\n";
}

namespace {

// The message of the kvs::Error that opening (and reading everything from) `path` throws.
std::string open_error(const std::string& path) {
    try {
        const TraceReader r(path);
        for (int l : r.info().layers)
            for (Field f : {Field::Q, Field::K, Field::V, Field::O})
                (void)r.read_heads(f, l, 0, r.info().n_tokens);
        (void)r.token_text();
        (void)r.topk_logits();
    } catch (const kvs::Error& e) {
        return e.what();
    }
    return "";
}

std::vector<char> slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

void spit(const std::string& path, const std::vector<char>& b) {
    std::filesystem::remove(path);
    std::ofstream(path, std::ios::binary).write(b.data(), std::streamsize(b.size()));
}

// Copies the good trace to `name` and edits it with the raw HDF5 API.
template <class F>
std::string edited(const std::string& good, const std::string& name, F edit) {
    const std::string p = test::temp_path(name);
    std::filesystem::copy_file(good, p, std::filesystem::copy_options::overwrite_existing);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    const hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(f >= 0);
    edit(f);
    H5Fclose(f);
    return p;
}

void set_int_attr(hid_t loc, const char* name, int64_t v) {
    H5Adelete(loc, name);
    const hid_t s = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate2(loc, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Sclose(s);
}

void set_str_attr(hid_t loc, const char* name, const char* v) {
    H5Adelete(loc, name);
    const hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    const hid_t s = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate2(loc, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &v);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

}  // namespace

TEST_CASE("trace reader: bad files are one clear line, never a crash", "[cpu]") {
    const std::string good = test::temp_path("good.h5");
    test::write_synthetic_trace(good, 100);
    REQUIRE(open_error(good).empty());
    {
        // A schema-1 file (written before the `logits` attribute) still reads, as "topk".
        const std::string v1 = edited(good, "v1.h5", [](hid_t f) {
            set_int_attr(f, "schema_version", 1);
            H5Adelete(f, "logits");
        });
        const TraceReader r(v1);
        CHECK(r.info().schema_version == 1);
        CHECK(r.info().logits == "topk");
        CHECK(TraceReader(good).info().logits == "topk");
    }
    {
        // rope_inv_freq (an optional attribute): written as the model's frequencies, read back;
        // a trace without it (written before it) reads theta^(-2i/d) from rope_theta with the
        // scaling (here llama3, factor 8, original context 8192: wavelengths above 8192 / 1 are
        // divided by 8, below 8192 / 4 kept, in between blended).
        const TraceInfo gi = TraceReader(good).info();
        REQUIRE(gi.rope_inv_freq.size() == size_t(gi.head_dim / 2));
        const std::string old =
            edited(good, "nofreq.h5", [](hid_t f) { H5Adelete(f, "rope_inv_freq"); });
        const TraceInfo oi = TraceReader(old).info();
        REQUIRE(oi.rope_inv_freq.size() == gi.rope_inv_freq.size());
        for (size_t i = 0; i < oi.rope_inv_freq.size(); ++i) {
            REQUIRE(gi.rope_scaling.type == "llama3");
            const double f = 1.0 / std::pow(gi.rope_theta, 2.0 * double(i) / gi.head_dim);
            const double wl = 2 * M_PI / f, lo = 8192.0 / 1.0, hi = 8192.0 / 4.0;
            const double sm = (8192.0 / wl - 1.0) / (4.0 - 1.0);
            const double want = wl < hi ? f : wl > lo ? f / 8 : (1 - sm) * f / 8 + sm * f;
            CHECK(oi.rope_inv_freq[i] == Approx(want).epsilon(1e-6));
            CHECK(gi.rope_inv_freq[i] == oi.rope_inv_freq[i]);
        }
        // Other frequencies than theta's (what a GGUF file's rope_freqs makes) are read as stored.
        const std::string other = edited(good, "freq.h5", [&](hid_t f) {
            H5Adelete(f, "rope_inv_freq");
            std::vector<double> v(gi.rope_inv_freq.size());
            for (size_t i = 0; i < v.size(); ++i) v[i] = 0.5 / double(i + 1);
            const hsize_t n = v.size();
            const hid_t sp = H5Screate_simple(1, &n, nullptr);
            const hid_t a =
                H5Acreate2(f, "rope_inv_freq", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
            H5Awrite(a, H5T_NATIVE_DOUBLE, v.data());
            H5Aclose(a);
            H5Sclose(sp);
        });
        const TraceInfo xi = TraceReader(other).info();
        for (size_t i = 0; i < xi.rope_inv_freq.size(); ++i)
            CHECK(xi.rope_inv_freq[i] == float(0.5 / double(i + 1)));
    }

    struct Bad {
        std::string name, path, expect;
    };
    std::vector<Bad> bad;
    bad.push_back({"missing file", test::temp_path("nope.h5"), "no such file"});
    {
        const std::string p = test::temp_path("junk.h5");
        spit(p, std::vector<char>(5000, 'x'));
        bad.push_back({"not HDF5", p, "not an HDF5 file"});
    }
    {
        const std::string p = test::temp_path("plain.h5");
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
        const hid_t f = H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        H5Gclose(H5Gcreate2(f, "data", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        H5Fclose(f);
        bad.push_back({"HDF5, not a trace", p, "not a kvscope trace (no 'format'"});
    }
    bad.push_back({"other format",
                   edited(good, "other.h5", [](hid_t f) { set_str_attr(f, "format", "netcdf"); }),
                   "format is 'netcdf'"});
    bad.push_back({"newer schema",
                   edited(good, "newer.h5", [](hid_t f) { set_int_attr(f, "schema_version", 3); }),
                   "schema_version 3 is newer than this kvscope reads (2)"});
    bad.push_back({"unknown logits",
                   edited(good, "logits.h5", [](hid_t f) { set_str_attr(f, "logits", "all"); }),
                   "logits 'all' is not one of topk, lse, none"});
    bad.push_back({"rope_inv_freq of the wrong length",
                   edited(good, "badfreq.h5",
                          [](hid_t f) {
                              H5Adelete(f, "rope_inv_freq");
                              const double v[3] = {1, 0.5, 0.25};
                              const hsize_t n = 3;
                              const hid_t sp = H5Screate_simple(1, &n, nullptr);
                              const hid_t a = H5Acreate2(f, "rope_inv_freq", H5T_IEEE_F64LE, sp,
                                                         H5P_DEFAULT, H5P_DEFAULT);
                              H5Awrite(a, H5T_NATIVE_DOUBLE, v);
                              H5Aclose(a);
                              H5Sclose(sp);
                          }),
                   "attribute 'rope_inv_freq' holds 3 frequencies"});
    bad.push_back(
        {"rope_inv_freq not floats",
         edited(good, "strfreq.h5", [](hid_t f) { set_str_attr(f, "rope_inv_freq", "fast"); }),
         "attribute 'rope_inv_freq' is not a list of floats"});
    bad.push_back({"missing attribute",
                   edited(good, "noattr.h5", [](hid_t f) { H5Adelete(f, "n_head_kv"); }),
                   "missing attribute 'n_head_kv'"});
    bad.push_back({"attribute of the wrong type",
                   edited(good, "strattr.h5", [](hid_t f) { set_str_attr(f, "n_head", "four"); }),
                   "attribute 'n_head' is not an integer"});
    bad.push_back(
        {"missing dataset",
         edited(good, "nods.h5", [](hid_t f) { H5Ldelete(f, "layers/02/v", H5P_DEFAULT); }),
         "missing dataset 'layers/02/v'"});
    bad.push_back({"shape contradicts n_tokens",
                   edited(good, "ntok.h5", [](hid_t f) { set_int_attr(f, "n_tokens", 101); }),
                   "dataset 'tokens/ids' has shape [100], expected [101] (n_tokens)"});
    bad.push_back({"shape contradicts n_head_kv",
                   edited(good, "nkv.h5", [](hid_t f) { set_int_attr(f, "n_head_kv", 4); }),
                   "'layers/00/k' has shape [2, 100, 8], expected [4, 100, 8]"});
    bad.push_back({"layer list out of range",
                   edited(good, "layers.h5", [](hid_t f) { set_int_attr(f, "n_layer", 2); }),
                   "attribute 'layers'"});
    bad.push_back({"missing task group",
                   edited(good, "notask.h5", [](hid_t f) { H5Ldelete(f, "task", H5P_DEFAULT); }),
                   "missing group 'task'"});
    const std::vector<char> bytes = slurp(good);
    for (size_t cut : {size_t(100), bytes.size() / 2, bytes.size() - 100}) {
        const std::string p = test::temp_path("trunc" + std::to_string(cut) + ".h5");
        spit(p, std::vector<char>(bytes.begin(), bytes.begin() + long(cut)));
        bad.push_back({"truncated at " + std::to_string(cut), p, "good"});
    }
    for (const Bad& b : bad) {
        INFO(b.name);
        const std::string e = open_error(b.path);
        CHECK(e.find('\n') == std::string::npos);
        CHECK_FALSE(e.empty());
        if (b.expect != "good") CHECK_THAT(e, Catch::Contains(b.expect));
        CHECK_THAT(e, Catch::Contains(b.path));
    }
}

TEST_CASE("trace reader: corrupted bytes give a clear error or data, never a crash", "[cpu]") {
    // Metadata carries checksums (HDF5 1.10 format) and no variable-length strings are used (the
    // global heap has none), so damaged metadata is an error; damaged compressed chunks fail
    // their zlib checksum; damaged uncompressed data reads as other numbers.
    for (int gzip : {1, 0}) {
        const std::string good = test::temp_path("good_c" + std::to_string(gzip) + ".h5");
        test::write_synthetic_trace(good, 300, gzip);
        const std::vector<char> bytes = slurp(good);
        std::mt19937 rng(5);
        int errors = 0;
        const int n_trials = 300;
        for (int i = 0; i < n_trials; ++i) {
            std::vector<char> b = bytes;
            // 16 random bytes somewhere after the superblock's signature.
            const size_t at = 16 + rng() % (b.size() - 32);
            for (size_t j = 0; j < 16; ++j) b[at + j] = char(rng());
            const std::string p = test::temp_path("corrupt.h5");
            spit(p, b);
            const std::string e = open_error(p);
            INFO("gzip " << gzip << ", corruption at " << at << ": " << e);
            CHECK(e.find('\n') == std::string::npos);
            errors += !e.empty();
        }
        // Most of a compressed trace is chunk data, whose damage cannot go unnoticed.
        if (gzip) CHECK(errors > n_trials / 2);
    }
}

namespace {

// Writes one raw value (NaN, +inf or -inf in the dataset's own float type) at `index` of `path`.
void poke(hid_t f, const char* path, const std::vector<hsize_t>& index, const char* what) {
    const hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    REQUIRE(d >= 0);
    const hid_t t = H5Dget_type(d);
    const size_t size = H5Tget_size(t);
    uint8_t raw[4] = {};
    const bool nan = std::string(what) == "NaN", neg = what[0] == '-';
    if (size == 2) {
        const uint16_t h = nan ? 0x7E00 : neg ? 0xFC00 : 0x7C00;
        std::memcpy(raw, &h, 2);
    } else {
        const float x = nan ? std::nanf("") : neg ? -INFINITY : INFINITY;
        std::memcpy(raw, &x, 4);
    }
    const hid_t fs = H5Dget_space(d);
    const std::vector<hsize_t> one(index.size(), 1);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, index.data(), nullptr, one.data(), nullptr);
    const hid_t ms = H5Screate_simple(int(one.size()), one.data(), nullptr);
    REQUIRE(H5Dwrite(d, t, ms, fs, H5P_DEFAULT, raw) >= 0);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Tclose(t);
    H5Dclose(d);
}

}  // namespace

TEST_CASE("trace reader: a NaN or inf in q, k, v, o or lse is a one-line error naming where",
          "[cpu]") {
    const std::string good = test::temp_path("finite.h5");
    test::write_synthetic_trace(good, 50);
    struct Case {
        const char* dset;
        std::vector<hsize_t> index;
        const char* what;
        std::string expect;
    };
    const std::vector<Case> cases = {
        {"layers/01/v",
         {1, 37, 5},
         "NaN",
         "'layers/01/v' holds NaN at head 1, token 37, element 5"},
        {"layers/00/k",
         {0, 0, 0},
         "+inf",
         "'layers/00/k' holds +inf at head 0, token 0, element 0"},
        {"layers/02/q",
         {3, 49, 7},
         "-inf",
         "'layers/02/q' holds -inf at head 3, token 49, element 7"},
        {"layers/02/o",
         {2, 10, 1},
         "NaN",
         "'layers/02/o' holds NaN at head 2, token 10, element 1"},
        {"layers/01/lse", {1, 20}, "NaN", "'layers/01/lse' holds NaN at head 1, token 20:"},
    };
    for (const Case& c : cases) {
        INFO(c.dset << " " << c.what);
        const std::string p =
            edited(good, "nonfinite.h5", [&](hid_t f) { poke(f, c.dset, c.index, c.what); });
        const TraceReader r(p);  // opening reads no values: it succeeds
        const int layer = std::stoi(std::string(c.dset).substr(7, 2));
        std::string e;
        try {
            if (std::string(c.dset).ends_with("lse")) {
                for (int h = 0; h < r.info().n_head; ++h) (void)r.read_lse(layer, h, 0, 50);
            } else {
                const char fc = c.dset[10];
                const Field f = fc == 'q'   ? Field::Q
                                : fc == 'k' ? Field::K
                                : fc == 'v' ? Field::V
                                            : Field::O;
                (void)r.read_heads(f, layer, 0, 50);
            }
        } catch (const kvs::Error& err) {
            e = err.what();
        }
        CHECK_THAT(e, Catch::Contains(c.expect));
        CHECK_THAT(e, Catch::Contains(p));
        CHECK(e.find('\n') == std::string::npos);
        // A range that does not include the bad value reads fine; one that does, through the
        // one-head reader, names the same token.
        const int64_t t = int64_t(c.index[1]);
        if (!std::string(c.dset).ends_with("lse")) {
            const char fc = c.dset[10];
            const Field f = fc == 'q'   ? Field::Q
                            : fc == 'k' ? Field::K
                            : fc == 'v' ? Field::V
                                        : Field::O;
            if (t > 0) CHECK_NOTHROW(r.read(f, layer, int(c.index[0]), 0, t));
            CHECK_THROWS_WITH(r.read(f, layer, int(c.index[0]), t, t + 1),
                              Catch::Contains("token " + std::to_string(t) + ","));
        }
    }
    // The unedited trace reads in full.
    CHECK(open_error(good).empty());
}
