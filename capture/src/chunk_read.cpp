// read_f16_chunks (capture/chunk_read.h).
#include "capture/chunk_read.h"

#include <libdeflate.h>

#include <cstring>
#include <memory>

#include "capture/h5util.h"
#include "capture/half.h"
#include "engine/error.h"

namespace kvs::capture {

using h5::Id;

namespace {

struct RawChunk {
    std::vector<hsize_t> off;  // the chunk's first element, per dimension
    uint32_t mask = 0;         // filters not applied to it (bit i: pipeline filter i)
    std::vector<uint8_t> bytes;
};

std::string offset_str(const std::vector<hsize_t>& off) {
    return h5::shape_str({off.begin(), off.end()});
}

}  // namespace

bool read_f16_chunks(hid_t d, const std::string& what, const std::vector<hsize_t>& start,
                     const std::vector<hsize_t>& count, float* out) {
    const int rank = int(start.size());
    if (rank < 1 || rank > 8 || count.size() != start.size()) return false;
    size_t total = 1;
    for (hsize_t c : count) total *= size_t(c);
    if (total == 0) return true;
    Id dcpl(H5Dget_create_plist(d));
    if (!dcpl.valid() || H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return false;
    std::vector<hsize_t> cdim(static_cast<size_t>(rank), 0);
    if (H5Pget_chunk(dcpl.get(), rank, cdim.data()) != rank) return false;
    Id ft(H5Dget_type(d));
    if (!h5::is_f16(ft.get())) return false;
    Id space(H5Dget_space(d));
    if (H5Sget_simple_extent_ndims(space.get()) != rank) return false;
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    size_t n_elem = 1;  // elements per chunk
    for (int i = 0; i < rank; ++i) {
        if (cdim[size_t(i)] == 0 || start[size_t(i)] + count[size_t(i)] > dims[size_t(i)])
            return false;
        n_elem *= size_t(cdim[size_t(i)]);
    }
    if (n_elem > (size_t(1) << 28)) return false;
    // The pipeline: shuffle then deflate, either one, or none.
    int shuffle_at = -1, deflate_at = -1;
    const int nf = H5Pget_nfilters(dcpl.get());
    if (nf < 0) return false;
    for (int i = 0; i < nf; ++i) {
        unsigned flags = 0, cd[8], config = 0;
        size_t n_cd = 8;
        char name[64];
        const H5Z_filter_t id =
            H5Pget_filter2(dcpl.get(), unsigned(i), &flags, &n_cd, cd, sizeof name, name, &config);
        if (id == H5Z_FILTER_SHUFFLE && shuffle_at < 0 && deflate_at < 0)
            shuffle_at = i;
        else if (id == H5Z_FILTER_DEFLATE && deflate_at < 0)
            deflate_at = i;
        else
            return false;
    }
    const size_t raw = n_elem * 2;
    // Deflate never grows data by more than ~0.03 % plus a few bytes per block: anything larger
    // than this is not a chunk this path wrote or can decode.
    const size_t max_stored = raw + raw / 64 + 1024;

    // The chunks the selection touches, read as stored (serially: HDF5 is not thread-safe).
    std::vector<RawChunk> chunks;
    std::vector<hsize_t> c0(static_cast<size_t>(rank)), c1(static_cast<size_t>(rank)),
        ci(static_cast<size_t>(rank));
    for (int i = 0; i < rank; ++i) {
        c0[size_t(i)] = start[size_t(i)] / cdim[size_t(i)];
        c1[size_t(i)] = (start[size_t(i)] + count[size_t(i)] - 1) / cdim[size_t(i)];
    }
    ci = c0;
    for (bool more = true; more;) {
        RawChunk c;
        c.off.resize(static_cast<size_t>(rank));
        for (int i = 0; i < rank; ++i) c.off[size_t(i)] = ci[size_t(i)] * cdim[size_t(i)];
        hsize_t stored = 0;
        H5E_BEGIN_TRY {
            if (H5Dget_chunk_storage_size(d, c.off.data(), &stored) < 0) stored = 0;
        }
        H5E_END_TRY;
        if (stored == 0) return false;  // never written: H5Dread gives its fill value
        if (stored > max_stored)
            fail("{}: chunk at {} is corrupt ({} bytes stored for {} bytes of data)", what,
                 offset_str(c.off), stored, raw);
        c.bytes.resize(size_t(stored));
        if (H5Dread_chunk(d, H5P_DEFAULT, c.off.data(), &c.mask, c.bytes.data()) < 0)
            fail("{}: cannot read the chunk at {}: {}", what, offset_str(c.off), h5::last_error());
        chunks.push_back(std::move(c));
        more = false;
        for (int i = rank - 1; i >= 0; --i) {
            if (++ci[size_t(i)] <= c1[size_t(i)]) {
                more = true;
                break;
            }
            ci[size_t(i)] = c0[size_t(i)];
        }
    }

    // Decoded in parallel: inflate, unshuffle, the selected part converted into out.
    std::string err;
    const int n_chunks = int(chunks.size());
#pragma omp parallel if (n_chunks > 1)
    {
        std::unique_ptr<libdeflate_decompressor, void (*)(libdeflate_decompressor*)> dec(
            libdeflate_alloc_decompressor(), libdeflate_free_decompressor);
        std::vector<uint8_t> plain(raw);
        std::vector<uint16_t> elem(n_elem);
        std::vector<hsize_t> lo(static_cast<size_t>(rank)), hi(static_cast<size_t>(rank)),
            ix(static_cast<size_t>(rank));
#pragma omp for schedule(dynamic, 1)
        for (int k = 0; k < n_chunks; ++k) {
            const RawChunk& c = chunks[size_t(k)];
            const uint8_t* p = c.bytes.data();
            std::string bad;
            if (deflate_at >= 0 && !(c.mask & (1u << deflate_at))) {
                size_t got = 0;
                const libdeflate_result r =
                    dec ? libdeflate_zlib_decompress(dec.get(), p, c.bytes.size(), plain.data(),
                                                     raw, &got)
                        : LIBDEFLATE_BAD_DATA;
                if (r != LIBDEFLATE_SUCCESS || got != raw)
                    bad = r == LIBDEFLATE_SUCCESS ? "it inflates to " + std::to_string(got) +
                                                        " bytes, not " + std::to_string(raw)
                                                  : "not a valid deflate stream";
                p = plain.data();
            } else if (c.bytes.size() != raw) {
                bad = std::to_string(c.bytes.size()) + " bytes stored uncompressed, not " +
                      std::to_string(raw);
            }
            if (!bad.empty()) {
#pragma omp critical(kvs_chunk_read_err)
                if (err.empty())
                    err = what + ": chunk at " + offset_str(c.off) + " is corrupt: " + bad;
                continue;
            }
            if (shuffle_at >= 0 && !(c.mask & (1u << shuffle_at))) {
                // Byte planes: the low bytes of every element, then the high bytes.
                for (size_t i = 0; i < n_elem; ++i)
                    elem[i] = uint16_t(p[i] | (uint16_t(p[n_elem + i]) << 8));
            } else {
                for (size_t i = 0; i < n_elem; ++i)
                    elem[i] = uint16_t(p[2 * i] | (p[2 * i + 1] << 8));
            }
            // The part of the selection inside this chunk, a run of the last dimension at a
            // time.
            for (int i = 0; i < rank; ++i) {
                lo[size_t(i)] = std::max(c.off[size_t(i)], start[size_t(i)]);
                hi[size_t(i)] = std::min(c.off[size_t(i)] + cdim[size_t(i)],
                                         start[size_t(i)] + count[size_t(i)]);
            }
            ix = lo;
            const size_t run = size_t(hi[size_t(rank - 1)] - lo[size_t(rank - 1)]);
            for (bool more = true; more;) {
                size_t src = 0, dst = 0;
                for (int i = 0; i < rank; ++i) {
                    src = src * size_t(cdim[size_t(i)]) + size_t(ix[size_t(i)] - c.off[size_t(i)]);
                    dst = dst * size_t(count[size_t(i)]) + size_t(ix[size_t(i)] - start[size_t(i)]);
                }
                f16_to_f32(elem.data() + src, out + dst, run);
                more = false;
                for (int i = rank - 2; i >= 0; --i) {
                    if (++ix[size_t(i)] < hi[size_t(i)]) {
                        more = true;
                        break;
                    }
                    ix[size_t(i)] = lo[size_t(i)];
                }
            }
        }
    }
    if (!err.empty()) fail("{}", err);
    return true;
}

}  // namespace kvs::capture
