// TraceWriter: a ForwardObserver that streams what the forward pass publishes into a trace file
// (format: capture/trace_schema.h). Per layer and forward call it converts q/k/v/o to the storage
// dtype into a staging buffer of about one HDF5 chunk; whole chunks are appended to chunked,
// extendible datasets as they fill, so memory stays bounded whatever the trace length.
//
//   TraceWriter w("trace.h5", meta);        // creates trace.h5.partial
//   model.forward(..., &w);                 // on_layer(): q, k, v, o, lse of every layer
//   w.append_tokens(rows);                  // then the same tokens' ids, logprob, top-k, ...
//   ...
//   w.set_task(task);
//   w.finish(/*complete=*/true);            // flush, close, rename to trace.h5
//
// If the writer is destroyed without finish() (an exception), it closes and deletes the
// .partial file. A killed process leaves only "<path>.partial", never a file at `path`.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "capture/trace_schema.h"
#include "engine/config.h"
#include "engine/model.h"

namespace kvs::capture {

// "none" -> 0, "gzip" -> 1, "gzip:L" -> L (1..9). Throws kvs::Error otherwise.
int parse_compression(const std::string& s);
std::string compression_name(int gzip_level);  // "none", "gzip:L"
// "0,5,10-12" -> {0, 5, 10, 11, 12} (sorted, unique); "" or "all" -> every layer.
std::vector<int> parse_layer_list(const std::string& s, int n_layer);

struct TraceMeta {
    ModelConfig model;
    std::string model_path;
    std::string writer_version;  // empty: this kvscope's version
    std::string command_line;
    std::string config_json = "{}";
    StorageDtype dtype = StorageDtype::F16;
    int gzip_level = 1;       // 0 = no compression
    std::vector<int> layers;  // layers to capture, ascending; empty = all
    int text_width = 0;       // bytes of tokens/text entries: at least the longest token; 0 = 64
    int chunk_tokens = 0;     // chunk length along T of q/k/v/o (a power of two); 0 = sized to
                              // ~512 KiB per q chunk
    std::string logits = "topk";  // the `logits` attribute: "topk", "lse" or "none" (capture.h)
    // The RoPE frequencies the model rotated q and k with (Model::rope_inv_freq); empty: the
    // config's (engine/rope.h).
    std::vector<float> rope_inv_freq;
};

// Per-token rows of one forward call, in token order. Pointers are valid during the call.
struct TokenRows {
    int n = 0;
    const int32_t* ids = nullptr;        // [n]
    const int32_t* pos = nullptr;        // [n]
    const std::string* text = nullptr;   // [n]; nullptr: empty strings
    const double* logprob = nullptr;     // [n] log p(next token); NaN when there is none
    const float* logits_lse = nullptr;   // [n]
    const int32_t* topk_ids = nullptr;   // [n, kTopK]
    const float* topk_logits = nullptr;  // [n, kTopK]
};

// The task/ group (trace_schema.h).
struct TaskRecord {
    std::string kind = "text";  // "text", "prompt", "passkey", "needle"
    std::string answer, needle, needle_key, generated;
    double depth = 0;
    int64_t seed = 0;
    bool correct = false;
    std::vector<int32_t> answer_positions;
    int32_t needle_begin = 0, needle_end = 0;  // token range of the needle sentence
    bool has_answer() const { return kind == "passkey" || kind == "needle"; }
};

class TraceWriter final : public ForwardObserver {
  public:
    // Creates "<path>.partial" (replacing one left by a killed run). Throws kvs::Error.
    TraceWriter(std::string path, TraceMeta meta);
    ~TraceWriter() override;
    TraceWriter(const TraceWriter&) = delete;
    TraceWriter& operator=(const TraceWriter&) = delete;

    void on_layer(const LayerTap& tap) override;
    // After each forward call: one row per token the call processed (checked against on_layer).
    void append_tokens(const TokenRows& rows);
    void set_prompt_len(int64_t n);
    void set_task(const TaskRecord& task);
    // Writes what is staged and the final attributes (n_tokens, complete, task), closes the file
    // and renames it to `path`. complete = false marks an interrupted capture.
    void finish(bool complete);

    int64_t n_tokens() const;        // rows appended so far
    uint64_t file_bytes() const;     // size of the file on disk now
    int chunk_tokens() const;        // chunk length along T of q/k/v/o
    double seconds_writing() const;  // time spent in on_layer / append_tokens / finish
    const std::string& path() const;
    std::string partial_path() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace kvs::capture
