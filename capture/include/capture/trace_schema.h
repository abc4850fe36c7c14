// The kvscope trace format, schema version 2: the contract between capture and everything after
// it (replay, viewer, figures). docs/trace-format.md holds the same text with examples; when the
// two disagree, this header wins. Any writer (kvscope capture, or a PyTorch adapter on a GPU
// machine) that follows it produces traces kvscope reads.
//
// A trace is one HDF5 file. T = number of tokens captured (`n_tokens`), d = `head_dim`.
// Every tensor is row-major (C order), little-endian. Shapes are written [outer, ..., inner].
//
// Root attributes
//   format            str     "kvscope-trace"
//   schema_version    int     2 (1: the same without `logits`; every row then has logits).
//                             Readers reject a newer version and read every older one; additions
//                             that old readers can ignore (a new optional field) keep the
//                             version, anything else bumps it.
//   logits            str     (schema >= 2) which rows of tokens/ hold the model's logits
//                             (`kvscope capture --logits`): "topk" every row, all four fields;
//                             "lse" every row's logprob and logits_lse, topk_ids -1 and
//                             topk_logits NaN throughout; "none" only the last prompt row of each
//                             forward chunk (logprob, logits_lse) and the generated rows (all four
//                             fields), the others NaN / -1. q, k, v, o and lse are the same in
//                             all three.
//   kvscope_version   str     version of the writer ("0.1.0"; an adapter writes its own name)
//   model_name        str     human-readable model name ("SmolLM2 135M Instruct")
//   model_arch        str     architecture ("llama", "qwen2")
//   model_path        str     the file or folder the model was loaded from
//   n_layer, n_head, n_head_kv, head_dim   int   the model's shapes (n_layer: all layers of the
//                             model, captured or not)
//   layers            int32[L] the model layers captured, ascending (all by default)
//   rope_theta        float64 RoPE base
//   rope_scaling_type str     "none", "linear" or "llama3"
//   rope_scaling_factor, rope_scaling_low_freq_factor, rope_scaling_high_freq_factor  float64
//   rope_scaling_original_context  int
//   rope_pairing      str     which dimensions of the stored q/k RoPE rotated together:
//                             "interleaved" = (2i, 2i+1), "half" = (i, i + d/2). Attention scores
//                             do not depend on it; re-applying RoPE at other positions does.
//   rope_inv_freq     float64[head_dim/2]  optional (an addition old readers ignore: schema 2
//                             still): the frequencies q and k were rotated with (angle = position
//                             x rope_inv_freq[i]), a GGUF Llama 3 file's rope_freqs divisors
//                             included. Absent: theta^(-2i/d) with the scaling (engine/rope.h).
//   attn_scale        float64 the score scale, 1/sqrt(head_dim): score = attn_scale * q.k
//   dtype             str     storage of q, k, v, o: "f16" (IEEE binary16) or "f32"
//   compression       str     "none" or "gzip:L" (deflate level L, with the shuffle filter)
//   prompt_len        int     tokens [0, prompt_len) are the prompt; the rest were generated
//   n_tokens          int     T
//   created           str     UTC time the capture started, ISO 8601 ("2025-01-31T12:00:00Z")
//   command_line      str     the command that made the trace
//   complete          bool    true only when the capture finished; false after an interruption
//                             (Ctrl-C / SIGTERM): then the file holds the first T tokens, all
//                             fields consistent with each other.
//                             Stored as h5py stores a bool: enum int8 {FALSE = 0, TRUE = 1}.
//   config_json       str     the full capture configuration as JSON (flags, sampling, seed,
//                             task, the model's config)
//
// Root datasets
//   kv_head_of_q_head int32 [n_head]   query head h reads KV head kv_head_of_q_head[h] (GQA;
//                                       h / (n_head / n_head_kv) for this engine)
//
// Group tokens/  (one row per captured token)
//   ids          int32   [T]       token ids
//   positions    int32   [T]       absolute positions (0, 1, ... for a normal run). Attention is
//                                  causal by position: query t sees keys j with pos[j] <= pos[t].
//   text         str     [T]       the bytes of each token as it appears in decoded text
//                                  (fixed-length UTF-8, null-padded to the longest token of the
//                                  vocabulary). A byte-level BPE token can be a partial UTF-8
//                                  sequence: h5py's ds[i] gives bytes, ds.asstr(errors="replace")
//                                  gives str.
//   logprob      float64 [T]       natural log p(ids[t+1] | ids[0..t]) under the model; NaN at
//                                  t = T-1. For generated tokens: the log-probability of the token
//                                  that was sampled. exp(-mean(logprob[:-1])) is the perplexity.
//   logits_lse   float32 [T]       log-sum-exp of the logits at t (the softmax normalizer)
//   topk_ids     int32   [T, 16]   the 16 largest logits at t, descending
//   topk_logits  float32 [T, 16]   their raw logits; log p = topk_logits - logits_lse
//
// Group layers/NN/  (one group per captured layer; NN = the model layer index, zero-padded to
//                    max(2, digits(n_layer - 1)) so the names sort: layers/00 ... layers/29)
//   q    dtype   [n_head, T, d]      query, post-RoPE ("attn.q" hook)
//   k    dtype   [n_head_kv, T, d]   key, post-RoPE ("attn.k")
//   v    dtype   [n_head_kv, T, d]   value ("attn.v")
//   o    dtype   [n_head, T, d]      attention output per query head, before the output
//                                    projection ("attn.out"):
//                                    o[h,t] = sum_j softmax_j(s[h,t,j]) v[kv(h), j]
//   lse  float32 [n_head, T]         natural log-sum-exp of the scaled scores of each query row
//                                    ("attn.lse"): lse[h,t] = log sum_{j: pos[j] <= pos[t]}
//                                    exp(s[h,t,j]), with s[h,t,j] = attn_scale * q[h,t].k[kv(h),j]
//   So the attention probability of key j for query t is exp(s[h,t,j] - lse[h,t]).
//
// Group task/  (always present)
//   attributes:
//     kind          str      "text" (--text-file), "prompt" (--prompt), "passkey", "needle"
//   passkey and needle only:
//     answer        str      the expected answer ("48213")
//     depth         float64  requested depth in [0, 1]: where the needle sentence sits in the
//                            filler / haystack, as a fraction of its tokens
//     seed          int      the seed that chose the answer (and sampling)
//     needle        str      the sentence hidden in the text
//     needle_key    str      needle only: the key the question asks about
//     generated     str      the generated text (decoded tokens [prompt_len, T))
//     correct       bool     the answer appears in the generated text (same bool type as
//                            `complete`)
//   datasets (passkey and needle only):
//     answer_positions  int32 [n]  token indices of the prompt tokens that spell the answer
//     needle_range      int32 [2]  first and one-past-last token index of the needle sentence
//
// Storage
//   - Strings (attributes and tokens/text) are fixed-length UTF-8: h5py gives bytes. Nothing
//     variable-length is written: HDF5 keeps such data in its global heap, which has no checksum
//     (HDF5 1.10 crashes on a damaged one). Readers accept variable-length strings too.
//   - The file uses the HDF5 1.10 format (libver v110): every piece of metadata is checksummed,
//     so a damaged file is an error, not a crash. Readable by HDF5 >= 1.10.
//   - f16 is the IEEE binary16 layout (sign 1, exponent 5 with bias 15, mantissa 10), declared as
//     an HDF5 float type of size 2 exactly as h5py declares numpy.float16, so h5py reads it as
//     float16.
//   - Datasets that grow with T are chunked along T and extendible (maxshape None along T);
//     chunks hold a power-of-two number of tokens sized to ~64 KiB - 1 MiB. With compression,
//     the shuffle filter and deflate are applied to every chunked dataset (gzip:1 encodes the
//     q/k/v/o chunks itself: capture/chunk_deflate.h; any HDF5 reader decodes them).
//   - Every dataset carries dimension labels (HDF5 dimension scales API, h5py ds.dims[i].label):
//     "head", "kv_head", "token", "dim", "rank".
//
// Files are written to "<out>.partial" and renamed to <out> when closed, so a file at the
// requested path is always a closed, readable HDF5 file; only a killed process leaves a .partial.
#pragma once
#include <array>
#include <cstdint>

namespace kvs::capture {

inline constexpr const char* kFormatName = "kvscope-trace";
inline constexpr int kSchemaVersion = 2;
inline constexpr int kTopK = 16;

// The per-layer tensors, in the order the forward pass publishes them.
enum class Field { Q, K, V, O };
inline constexpr std::array<const char*, 4> kFieldNames = {"q", "k", "v", "o"};
inline const char* field_name(Field f) {
    return kFieldNames[size_t(f)];
}
// q and o have one row per query head; k and v one per KV head.
inline bool field_is_kv(Field f) {
    return f == Field::K || f == Field::V;
}

enum class StorageDtype { F16, F32 };
inline const char* dtype_name(StorageDtype d) {
    return d == StorageDtype::F16 ? "f16" : "f32";
}

}  // namespace kvs::capture
