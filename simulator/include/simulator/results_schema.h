// The kvscope results format, schema version 3: what `kvscope replay` / `sweep` / `merge` write
// and the viewer reads. docs/results-format.md holds the same text with examples; when the two
// disagree, this header wins. Written with the same HDF5 conventions as a trace
// (capture/trace_schema.h): fixed-length UTF-8 strings, h5py-compatible float16 and bool,
// row-major shapes written [outer, ..., inner], gzip + shuffle on the large datasets.
//
// Notation for one run: S = evaluated steps, L = captured layers replayed, Hkv = KV heads,
// T = tokens of the trace (replayed part), C = checkpoints, d = head_dim. A "unit" is one
// (layer, KV head): policies decide per unit; metrics are reported per unit (the mean over the
// query heads that read that KV head).
//
// Root attributes
//   format           str    "kvscope-results"
//   schema_version   int    3 (readers reject a newer one; version 1 and 2 files still read:
//                           what version 2 added reads as 0 there, what version 3 added as -1)
//   kvscope_version  str
//   created          str    UTC, ISO 8601
//   command_line     str
//   n_runs           int
//
// Group runs/NNNN/  (one per run = one policy spec at one budget on one trace in one mode;
//                    NNNN = 0000, 0001, ... in the order the runs were listed)
//   attributes
//     policy          str    registry name ("h2o")
//     spec            str    canonical spec with every parameter, defaults included
//                            ("h2o:budget=256,recent=32,gqa=mean,bits=16,group=32")
//     params_json     str    the same parameters as a JSON object
//     closed_loop_json str   (v2, optional) a closed-loop run of `kvscope eval`: its metrics as a
//                            JSON object (task, ppl, delta_ppl, kl_mean, kl_p95, top1_agree or
//                            accuracy, items, ttft_s; kv_bytes_mean / _peak, offload bytes,
//                            tokens_per_s). The run's datasets are then the live decisions of its
//                            last window / item; recall, out_rel_err and out_cos are NaN (live
//                            there is no full attention to compare with)
//     budget          str    the budget as given ("256", "0.2"), "" when the policy has none
//     mode            str    "stream" or "prefill"
//     prefill_len     int    P: tokens compressed once at the start in prefill mode (0 in stream)
//     trace_path      str    the trace replayed (as given on the command line)
//     trace_model     str    model_name of the trace
//     trace_task      str    task kind of the trace ("passkey", "text", ...)
//     trace_complete  bool   false when the trace was interrupted (replayed up to where it ends)
//     n_tokens        int    T
//     n_head, n_head_kv, head_dim   int
//     seconds         float64  wall time of this run (its share when runs share a trace pass)
//     summary: float64 attributes, over every evaluated (step, unit) sample:
//       recall_mean, recall_p5           attention-mass recall (p5 = the 5th percentile: the
//                                        bad tail of a quantity where high is good)
//       err_mean, err_p95                relative L2 output error
//       cos_mean, cos_p5                 cosine between compressed and full output
//       held_mean                        tokens held per unit
//       bytes_mean, bytes_peak           K+V bytes held, summed over units, per step
//       full_bytes_mean, full_bytes_at_peak   fp16 full-cache bytes (same units), per step
//       ratio_mean                       full_bytes_mean / bytes_mean
//       ratio_at_peak                    full_bytes_at_peak / bytes_peak (the first step where
//                                        the held bytes peak: 1 for an eviction policy that
//                                        fills its budget at full precision)
//       bytes_final, full_bytes_final, ratio_final   the same at the last step
//       restores                         tokens raised back to a higher precision from an
//                                        offloaded full-precision copy (seed 001)
//       offload_bytes_mean, offload_bytes_peak  (v2) bytes of offloaded full-precision copies
//                                        (a policy's restore source, seed 001), summed over
//                                        units, per step; 0 for policies that keep none
//       answer_kept                      passkey / needle traces: the share of (unit, answer
//                                        token) pairs held (at any precision) at the last step;
//                                        -1 when the trace has no answer
//   datasets
//     answer_positions int32 [A]           the task's answer tokens (empty for other traces)
//     layers        int32   [L]            model layer index of each replayed layer
//     steps         int32   [S]            token index t of each evaluated step (query t attends
//                                          the cache after token t was appended and the policy
//                                          acted): stream: 0..T-1; prefill: P..T-1
//     recall        float32 [S, L, Hkv]    sum over held tokens j of exp(s_tj - lse_t) with the
//                                          ORIGINAL keys (the full-attention probability mass the
//                                          held tokens carry); mean over the group's query heads.
//                                          A merged entry counts the mass of every original token
//                                          it stands for (with their original keys)
//     out_rel_err   float32 [S, L, Hkv]    |o_c - o| / |o|, o_c = attention over the held tokens
//                                          as stored (dequantized K and V), o = the trace's output
//     out_cos       float32 [S, L, Hkv]    cosine(o_c, o)
//     held          int32   [S, L, Hkv]    tokens held when the query attended
//     budget_tokens int32   [S, L, Hkv]    the unit's token budget at that step (-1 = no limit)
//     bytes         int64   [S, L, Hkv]    K+V bytes the cache stores for the unit: quantized
//                                          payload + scales/zero points + sparse indices/masks
//                                          (kernels/quant_pack.h, kernels/ggml_blocks.h formats)
//     offload_bytes int64   [S, L, Hkv]    (v2) bytes of the offloaded full-precision K+V copies
//                                          of the unit's lossy entries (host memory of a real
//                                          system; not part of `bytes`)
//     full_bytes    int64   [S]            fp16 K+V bytes of a full cache for one unit:
//                                          (t+1) * 2 * d * 2
//     evicted_at    int32   [L, Hkv, T]    the step at which token j left the unit's cache for
//                                          the last time; -1 if it was held at the end
//     merged_into   int32   [L, Hkv, T]    (v3) the position of the representative of the
//                                          merged entry token j was last folded into (a merged
//                                          entry keeps the position of the entry the others were
//                                          folded into); -1 if it never was. A folded token also
//                                          has evicted_at = the step of the fold (it left the
//                                          cache as an entry of its own); when the merged entry
//                                          is evicted later, evicted_at of its representative
//                                          says when. A merged entry's K and V are stored at full
//                                          precision plus its count (a uint16, 2 bytes, in
//                                          `bytes`); attention adds log(count) to its logit
//     merged_at     int32   [L, Hkv, T]    (v3) the step of that fold; -1 if never folded
//     unit_role     int8    [L, Hkv]       optional (an addition older readers ignore; the
//                                          version stays): the role a policy's plan gave each
//                                          unit, an index into the run attribute
//                                          `unit_role_names` (comma-separated): razor writes
//                                          "compressed,retrieval" (1 = a retrieval head that
//                                          keeps every token). Absent for policies without roles
//     bit_events    int32   [E, 4]         every change of a held token's storage width, in step
//                                          order: rows (unit, token, step, bits), unit = layer
//                                          slot * Hkv + KV head. Token j's width at step t is the
//                                          `bits` of its last event with step <= t (16 = fp16
//                                          when it has none) while it is held; with evicted_at
//                                          this gives exact per-step bit maps. (Optional: files
//                                          written before it existed lack it.)
//     ckpt_steps    int32   [C]            the steps recorded in full below (evenly spaced over
//                                          the evaluated steps, the last step always included)
//     ckpt_bits     uint8   [C, L, Hkv, T] bits token j was held at when the query of that step
//                                          attended: 16, 8, 4, 2 (or another stored width); 0 =
//                                          not held (evicted, or j > step)
//     ckpt_score    float16 [C, L, Hkv, T] the policy's importance score of token j as the policy
//                                          saw it at that step (NaN where it keeps none, or j is
//                                          not held)
#pragma once

namespace kvs::sim {

inline constexpr const char* kResultsFormat = "kvscope-results";
inline constexpr int kResultsSchemaVersion = 3;

}  // namespace kvs::sim
