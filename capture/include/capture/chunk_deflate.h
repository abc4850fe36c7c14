// The writer's fast chunk encoder for float tensors (gzip:1, the default).
//
// HDF5's shuffle filter splits a chunk into byte planes (plane j = byte j of every element);
// deflate then compresses them. For activations the low planes (mantissa bits) are noise and the
// top plane (sign, exponent, top mantissa bits) has ~5 bits of entropy, so LZ77 matching buys
// nothing: this encoder writes the low planes as deflate stored blocks and the top plane as one
// dynamic-Huffman block of literals, inside a zlib stream; runs of zero bytes (the padding of a
// last, partial chunk) become copies at distance 1. The result is exactly what HDF5's
// shuffle + deflate filters decode, so any HDF5 reader (h5py included) reads it; the writer stores
// it with H5Dwrite_chunk. Measured on SmolLM2 f16 q/k/v/o: 0.866 of raw (zlib level 1 after the
// same shuffle: 0.872), at 0.6-0.8 GB/s per core (zlib level 1: ~50 MB/s; zlib's Huffman-only
// strategy: ~250 MB/s).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvs::capture {

// Encodes n_elem elements of elt bytes (1..8) from src into out (resized to the stream's size).
// `planes` is scratch; both keep their capacity across calls.
void deflate_chunk(const uint8_t* src, size_t n_elem, size_t elt, std::vector<uint8_t>& planes,
                   std::vector<uint8_t>& out);

// The inverse, through zlib (inflate + unshuffle), for tests: false if `in` is not a valid zlib
// stream of n_elem * elt bytes.
bool inflate_chunk(const uint8_t* in, size_t n_in, size_t n_elem, size_t elt,
                   std::vector<uint8_t>& out);

}  // namespace kvs::capture
