// TraceReader: opens a trace (format: capture/trace_schema.h), validates it, and reads its
// tensors into fp32 by layer, head and token range.
//
// Opening checks, and reports as one kvs::Error line naming the file and the field:
// not an HDF5 file / truncated or unreadable; not a kvscope trace (format attribute); a newer
// schema_version than this reader knows; a missing attribute or dataset; a dataset whose type or
// shape contradicts the attributes (n_head, n_head_kv, head_dim, n_tokens, layers).
// Unknown extra attributes and datasets are ignored.
// Reading: read / read_heads / read_lse refuse a NaN or infinite value with a kvs::Error naming
// the dataset, head, token and element (opening reads no values; a corrupt trace is refused
// where it is used, so no metric is ever computed from NaN).
//
//   TraceReader r("trace.h5");
//   const TraceInfo& ti = r.info();                        // n_tokens, n_head, layers, task ...
//   std::vector<float> q = r.read(Field::Q, 3, 0, 0, ti.n_tokens);   // [T, d], layer 3, head 0
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "capture/trace_schema.h"
#include "capture/trace_writer.h"
#include "engine/config.h"

namespace kvs::capture {

struct TraceInfo {
    std::string path;
    int schema_version = 0;
    std::string kvscope_version, model_name, model_arch, model_path;
    int n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
    std::vector<int> layers;  // captured model layers, ascending
    double rope_theta = 0;
    RopeScaling rope_scaling;
    std::string rope_pairing;  // "interleaved" / "half"
    // The d/2 RoPE frequencies q and k were rotated with: the optional `rope_inv_freq`
    // attribute, or (traces written before it) computed from theta and the scaling.
    std::vector<float> rope_inv_freq;
    std::string logits;  // which logits rows it holds: "topk", "lse", "none" (schema 2)
    double attn_scale = 0;
    StorageDtype dtype = StorageDtype::F16;
    std::string compression;
    int64_t prompt_len = 0, n_tokens = 0;
    std::string created, command_line, config_json;
    bool complete = false;
    std::vector<int32_t> kv_head_of_q_head;  // [n_head]
    TaskRecord task;
    uint64_t file_bytes = 0;
};

class TraceReader {
  public:
    explicit TraceReader(const std::string& path);  // throws kvs::Error
    ~TraceReader();
    TraceReader(TraceReader&&) noexcept;
    TraceReader& operator=(TraceReader&&) noexcept;

    const TraceInfo& info() const;
    bool has_layer(int layer) const;

    // One head of a per-layer tensor for tokens [t0, t1): [t1 - t0, d] fp32. `head` is a query
    // head for q and o, a KV head for k and v.
    std::vector<float> read(Field f, int layer, int head, int64_t t0, int64_t t1) const;
    // Every head: [n_head or n_head_kv, t1 - t0, d].
    std::vector<float> read_heads(Field f, int layer, int64_t t0, int64_t t1) const;
    // lse of one query head: [t1 - t0].
    std::vector<float> read_lse(int layer, int head, int64_t t0, int64_t t1) const;

    // tokens/ (whole trace when t1 < 0).
    std::vector<int32_t> token_ids(int64_t t0 = 0, int64_t t1 = -1) const;
    std::vector<int32_t> positions(int64_t t0 = 0, int64_t t1 = -1) const;
    std::vector<std::string> token_text(int64_t t0 = 0, int64_t t1 = -1) const;
    std::vector<double> logprob(int64_t t0 = 0, int64_t t1 = -1) const;
    std::vector<float> logits_lse(int64_t t0 = 0, int64_t t1 = -1) const;
    std::vector<int32_t> topk_ids(int64_t t0 = 0, int64_t t1 = -1) const;   // [n, kTopK]
    std::vector<float> topk_logits(int64_t t0 = 0, int64_t t1 = -1) const;  // [n, kTopK]

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace kvs::capture
