// A trace opened for viewing: its metadata and per-token arrays in memory, the reader kept open
// for the per-layer tensors. HDF5 in this build is not thread-safe: every HDF5 call in the
// viewer (trace and results reads, from any thread) holds hdf5_mutex().
#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "capture/trace_reader.h"

namespace kvs::view {

std::mutex& hdf5_mutex();

struct TraceData {
    capture::TraceInfo info;
    std::vector<std::string> text;   // [T] token text (may hold partial UTF-8)
    std::vector<int32_t> positions;  // [T]
    std::vector<double> logprob;     // [T]
    std::unique_ptr<capture::TraceReader> reader;

    int64_t n_tokens() const { return info.n_tokens; }
    // Index of `model_layer` in info.layers, -1 when not captured.
    int layer_index(int model_layer) const;
    // Query heads reading KV head `kv`.
    std::vector<int> q_heads_of(int kv) const;
    bool is_answer(int64_t j) const;  // token j spells the passkey / needle answer
};

std::shared_ptr<TraceData> load_trace(const std::string& path);  // throws kvs::Error

// Token text for display: control characters and invalid UTF-8 made visible ("\n" -> "\\n",
// a broken byte -> U+FFFD), at most `max_bytes` bytes of output (then "...").
std::string printable_token(const std::string& s, size_t max_bytes = 48);

}  // namespace kvs::view
