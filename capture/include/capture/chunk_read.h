// Fast reads of kvscope's f16 tensors: the raw chunks through HDF5, decoded here.
//
// HDF5's H5Dread decodes a shuffle + deflate chunk with zlib, one chunk at a time, on the calling
// thread; for a trace that is most of the time replay and the viewer spend reading (a whole
// 2k-token trace: ~1.1 s on one core). read_f16_chunks reads the chunks a hyperslab touches as
// stored (H5Dread_chunk, serially: the HDF5 library is not thread-safe), then inflates them with
// libdeflate (~2.5x zlib's rate), undoes the shuffle and converts to fp32 on all OpenMP threads.
// The bytes are the ones HDF5's own filters would produce from the same chunk, so the values are
// identical to H5Dread's.
#pragma once
#include <hdf5.h>

#include <string>
#include <vector>

namespace kvs::capture {

// Reads the hyperslab (start, count) of the f16 dataset `dset` into out (row-major over count,
// fp32). Returns false, writing nothing, when the dataset is not stored the way this path
// decodes (not chunked, not little-endian IEEE half, filters other than shuffle and deflate, a
// chunk never written): the caller then reads it through H5Dread. A chunk that does not decode
// (a bad deflate stream or checksum, a wrong size) throws kvs::Error naming `what` and the chunk.
bool read_f16_chunks(hid_t dset, const std::string& what, const std::vector<hsize_t>& start,
                     const std::vector<hsize_t>& count, float* out);

}  // namespace kvs::capture
