// capture/chunk_read.h: f16 hyperslabs decoded from the raw chunks equal what HDF5's own
// H5Dread gives and what the synthetic writer published, for kvscope's gzip:1 encoder, HDF5's
// deflate (gzip:6) and uncompressed chunks, on slabs that cut chunks anywhere; layouts it does
// not decode are left to H5Dread; a damaged chunk is a one-line error naming it.
#include <hdf5.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>

#include "capture/chunk_read.h"
#include "capture/half.h"
#include "engine/error.h"
#include "gguf_writer.h"
#include "synthetic_trace.h"

using namespace kvs;
using namespace kvs::capture;

namespace {

// H5Dread of the slab as f16 (the file's own type), converted to fp32.
std::vector<float> h5_read(hid_t d, const std::vector<hsize_t>& start,
                           const std::vector<hsize_t>& count) {
    size_t n = 1;
    for (hsize_t c : count) n *= size_t(c);
    std::vector<uint16_t> h(n);
    const hid_t fs = H5Dget_space(d);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
    const hid_t ms = H5Screate_simple(int(count.size()), count.data(), nullptr);
    const hid_t t = H5Dget_type(d);
    REQUIRE(H5Dread(d, t, ms, fs, H5P_DEFAULT, h.data()) >= 0);
    H5Tclose(t);
    H5Sclose(ms);
    H5Sclose(fs);
    std::vector<float> out(n);
    f16_to_f32(h.data(), out.data(), n);
    return out;
}

}  // namespace

TEST_CASE("chunk reads equal H5Dread and the published values on any slab", "[cpu]") {
    const int64_t T = 77;  // chunks of 16 tokens: the last one partial
    for (int gzip : {1, 6, 0}) {
        const std::string path = test::temp_path("chunks_g" + std::to_string(gzip) + ".h5");
        test::write_synthetic_trace(path, T, gzip);
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
        const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
        REQUIRE(f >= 0);
        const ModelConfig c = test::synthetic_config();
        int fast = 0;
        for (int layer = 0; layer < c.n_layer; ++layer) {
            for (int field = 0; field < 4; ++field) {
                const char* names[4] = {"q", "k", "v", "o"};
                char p[64];
                std::snprintf(p, sizeof p, "layers/%02d/%s", layer, names[field]);
                const hid_t d = H5Dopen2(f, p, H5P_DEFAULT);
                REQUIRE(d >= 0);
                const hsize_t rows = (field == 1 || field == 2) ? c.n_head_kv : c.n_head;
                const hsize_t hd = hsize_t(c.head_dim);
                const std::vector<std::vector<hsize_t>> slabs[] = {
                    {{0, 0, 0}, {rows, hsize_t(T), hd}},  // everything
                    {{1, 5, 0}, {rows - 1, 35, hd}},      // cuts chunks in two dimensions
                    {{0, 16, 2}, {1, 16, 5}},             // one chunk, part of the channels
                    {{rows - 1, 76, 0}, {1, 1, hd}},      // the last token
                };
                for (const auto& s : slabs) {
                    INFO(p << " gzip " << gzip << " slab at t " << s[0][1] << " x " << s[1][1]);
                    const std::vector<float> want = h5_read(d, s[0], s[1]);
                    std::vector<float> got(want.size(), -99.0f);
                    const bool used = read_f16_chunks(d, p, s[0], s[1], got.data());
                    fast += used;
                    if (!used) continue;
                    CHECK(std::memcmp(got.data(), want.data(), got.size() * 4) == 0);
                    // And the values the writer was given (rounded to f16).
                    size_t i = 0;
                    for (hsize_t h = 0; h < s[1][0]; ++h)
                        for (hsize_t t = 0; t < s[1][1]; ++t)
                            for (hsize_t x = 0; x < s[1][2]; ++x, ++i) {
                                const float v = test::value(layer, field, int(s[0][0] + h),
                                                            int64_t(s[0][1] + t), int(s[0][2] + x));
                                REQUIRE(got[i] == kvs::fp16_to_fp32(kvs::fp32_to_fp16(v)));
                            }
                }
                H5Dclose(d);
            }
        }
        H5Fclose(f);
        // Every compressed read took the fast path (uncompressed traces may be contiguous).
        if (gzip) CHECK(fast == c.n_layer * 4 * 4);
    }
}

TEST_CASE("chunk reads: other layouts are left to H5Dread, a damaged chunk is an error", "[cpu]") {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    const std::string path = test::temp_path("chunks_other.h5");
    const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(f >= 0);
    const hsize_t dims[2] = {4, 64}, chunk[2] = {2, 32};
    const hid_t sp = H5Screate_simple(2, dims, nullptr);
    const hid_t f16 = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(f16, 15, 10, 5, 0, 10);
    H5Tset_size(f16, 2);
    H5Tset_ebias(f16, 15);
    std::vector<float> x(256);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.25f * float(i % 17) - 1.0f;
    auto make = [&](const char* name, bool fletcher, bool chunked) {
        const hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
        if (chunked) {
            H5Pset_chunk(pl, 2, chunk);
            H5Pset_shuffle(pl);
            if (fletcher) H5Pset_fletcher32(pl);
            H5Pset_deflate(pl, 1);
        }
        const hid_t d = H5Dcreate2(f, name, f16, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
        REQUIRE(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x.data()) >= 0);
        H5Pclose(pl);
        return d;
    };
    const std::vector<hsize_t> start = {0, 0}, count = {4, 64};
    std::vector<float> out(256, -99.0f);
    const hid_t with_checksum = make("fletcher", true, true);
    CHECK_FALSE(read_f16_chunks(with_checksum, "fletcher", start, count, out.data()));
    const hid_t contiguous = make("contiguous", false, false);
    CHECK_FALSE(read_f16_chunks(contiguous, "contiguous", start, count, out.data()));
    CHECK(out[0] == -99.0f);  // nothing written
    const hid_t good = make("good", false, true);
    REQUIRE(read_f16_chunks(good, "good", start, count, out.data()));
    for (size_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == x[i]);  // exact in f16
    // A chunk whose stream is damaged (bytes flipped inside it, size kept).
    const hsize_t off[2] = {2, 32};
    uint32_t mask = 0;
    hsize_t n = 0;
    REQUIRE(H5Dget_chunk_storage_size(good, off, &n) >= 0);
    std::vector<uint8_t> raw(n);
    REQUIRE(H5Dread_chunk(good, H5P_DEFAULT, off, &mask, raw.data()) >= 0);
    for (size_t i = 4; i < raw.size() && i < 12; ++i) raw[i] ^= 0x5a;
    REQUIRE(H5Dwrite_chunk(good, H5P_DEFAULT, mask, off, raw.size(), raw.data()) >= 0);
    try {
        (void)read_f16_chunks(good, "trace 't.h5': 'layers/00/q'", start, count, out.data());
        FAIL("no error");
    } catch (const kvs::Error& e) {
        const std::string m = e.what();
        INFO(m);
        CHECK(m.find("'layers/00/q': chunk at [2, 32] is corrupt") != std::string::npos);
        CHECK(m.find('\n') == std::string::npos);
    }
    for (hid_t d : {with_checksum, contiguous, good}) H5Dclose(d);
    H5Tclose(f16);
    H5Sclose(sp);
    H5Fclose(f);
}
