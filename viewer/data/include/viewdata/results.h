// Reader of kvscope results files (format: simulator/include/simulator/results_schema.h, schema
// version 3; versions 1 and 2 read), independent of the simulator's code. read_results() loads and
// validates every run (a run's arrays are small: [S, L, Hkv] metrics, [L, Hkv, T] evictions, [C, L,
// Hkv, T] checkpoints). Errors are one kvs::Error line naming the file and the field: not HDF5, not
// a results file, a newer schema_version, a missing attribute or dataset, a shape that contradicts
// the attributes, or a value out of range (a step outside the trace).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kvs::view {

inline constexpr const char* kResultsFormat = "kvscope-results";
// Mirrors simulator/results_schema.h (this library does not link the simulator). Version 2
// added offload_bytes (the viewer reads the summary's offload_bytes_mean / _peak, not the
// per-step dataset) and closed_loop_json (a `kvscope eval` run's metrics); version 3 added
// merged_into / merged_at (merged entries: RunData::merged_into / merged_at, token_state() says
// when a token is folded, stands_for() what an entry stands for; the timeline draws folded tokens
// in their own colour). Versions 1 and 2 read (nothing merged: -1 throughout).
inline constexpr int kResultsSchemaVersion = 3;

// Token j in one unit at one step: not yet arrived (j > step), held as an entry of its own,
// folded into a merged entry still held, or gone (evicted, or folded into an entry evicted since).
enum class TokenState { Future, Held, Folded, Evicted };

struct RunInfo {
    std::string group;  // "runs/0000"
    std::string policy, spec, params_json, budget, mode;
    int64_t prefill_len = 0;
    std::string trace_path, trace_model, trace_task;
    bool trace_complete = true;
    int64_t n_tokens = 0;
    int n_head = 0, n_head_kv = 0, head_dim = 0;
    double seconds = 0;
    std::map<std::string, double> summary;  // recall_mean, err_p95, ratio_mean, ... (those present)
    // A closed-loop run (`kvscope eval -o`, v2 attribute closed_loop_json): the JSON as stored
    // (empty for replay runs), its task ("ppl", "passkey", "needle") and its numeric fields
    // (ppl, delta_ppl, kl_mean, kl_p95, top1_agree, accuracy, kv_bytes_mean, ...; a JSON null,
    // which is how a NaN is written, reads as NaN). Other string fields are ignored.
    std::string closed_loop_json, closed_loop_task;
    std::map<std::string, double> closed_loop;
    bool is_closed_loop() const { return !closed_loop_json.empty(); }
};

// One run's arrays. S steps, L layers, H = n_head_kv, T tokens, C checkpoints.
struct RunData {
    RunInfo info;
    int64_t S = 0, L = 0, H = 0, T = 0, C = 0;
    std::vector<int32_t> layers;                      // [L] model layer indices
    std::vector<int32_t> steps;                       // [S] token index of each step
    std::vector<float> recall, out_rel_err, out_cos;  // [S, L, H]
    std::vector<int32_t> held, budget_tokens;         // [S, L, H]
    std::vector<int64_t> bytes;                       // [S, L, H]
    std::vector<int64_t> full_bytes;                  // [S]
    std::vector<int32_t> evicted_at;                  // [L, H, T]
    // (v3) [L, H, T]: the position (token index) of the representative of the merged entry
    // token j was last folded into, and the step of that fold; -1 when it never was (and
    // throughout for v1 / v2 files). A folded token has evicted_at = the step it was first
    // folded (it left the cache as an entry of its own then). has_merges: some token was folded.
    std::vector<int32_t> merged_into, merged_at;
    bool has_merges = false;
    std::vector<int32_t> ckpt_steps;  // [C]
    std::vector<uint8_t> ckpt_bits;   // [C, L, H, T]
    std::vector<float> ckpt_score;    // [C, L, H, T] (from float16)
    // [E, 4] rows (unit = l * H + h, token, step, bits), in step order: every change of a held
    // token's width (16 until its first event). Optional: has_bit_events is false for files
    // written before it existed (bits then come from the checkpoints only).
    std::vector<int32_t> bit_events;
    bool has_bit_events = false;

    size_t slh(int64_t s, int64_t l, int64_t h) const { return size_t((s * L + l) * H + h); }
    size_t lht(int64_t l, int64_t h, int64_t t) const { return size_t((l * H + h) * T + t); }
    size_t clht(int64_t c, int64_t l, int64_t h, int64_t t) const {
        return size_t(((c * L + l) * H + h) * T + t);
    }
    int layer_index(int model_layer) const;  // -1 when the layer was not replayed
    int step_index(int64_t t) const;         // index s with steps[s] == t, else -1
    // Token j is in the unit's cache at step t (token index): j <= t and not evicted by then.
    bool held_at(int64_t l, int64_t h, int64_t j, int64_t t) const {
        const int32_t e = evicted_at[lht(l, h, j)];
        return j <= t && (e < 0 || t < e);
    }
    // Token j's state in unit (l, h) at step t. Folded: j left the cache by being folded (at
    // evicted_at, its first fold) and the entry standing for it is still held: until its last
    // fold (merged_at) the entry it went into first (which was itself folded into merged_into at
    // merged_at: the file records the last fold only), then the representative merged_into while
    // that is held.
    TokenState token_state(int64_t l, int64_t h, int64_t j, int64_t t) const;
    // The original tokens the entry of `rep` stands for at step t in unit (l, h), ascending, rep
    // included: rep and the tokens last folded into it at or before t (merged_into == rep,
    // merged_at <= t); empty when rep is not held at t. As Python's Run.stands_for(): a token
    // folded twice counts in its last representative from its last fold on.
    std::vector<int32_t> stands_for(int64_t l, int64_t h, int64_t rep, int64_t t) const;
    // Per token at step t in unit (l, h): how many original tokens its entry stands for (0 when
    // it is not held, 1 for a plain entry, n > 1 for a merged one). Sums to held + folded tokens.
    std::vector<int32_t> entry_sizes(int64_t l, int64_t h, int64_t t) const;
    // A short label: "h2o:budget=128" (spec, shortened) for lists and legends.
    std::string label() const;
};

struct ResultsFile {
    std::string path;
    int schema_version = 0;
    std::string kvscope_version, created, command_line;
    std::vector<RunData> runs;
};

ResultsFile read_results(const std::string& path);  // throws kvs::Error

// What a file is, from its 'format' attribute, without validating the rest.
enum class FileKind { Missing, NotHdf5, Trace, Results, OtherHdf5 };
FileKind detect_file_kind(const std::string& path);

}  // namespace kvs::view
