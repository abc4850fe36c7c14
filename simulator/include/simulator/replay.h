// Replay: runs policies over a trace, every replayed layer, KV head and step, and measures what
// each compressed cache does against the trace's full attention (open loop: each layer's error
// is measured as if the layers before it were exact). Results format: results_schema.h.
//
//   auto runs = replay_trace("t.h5", {parse_spec("h2o:budget=256")}, ReplayOptions{});
//
// The trace is read once per call, layer by layer (a reader thread loads the next layers while
// the current ones are replayed); every (run, layer) pair is independent and runs on one thread,
// so results do not depend on the thread count.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "simulator/policy.h"

namespace kvs::sim {

struct ReplayOptions {
    Mode mode = Mode::stream;
    int64_t prefill_len = -1;  // -1: the trace's prompt, or 3/4 of a text trace
    int threads = 0;           // 0: all cores
    int checkpoints = 32;      // steps recorded in full for the viewer (0: none)
    std::vector<int> layers;   // model layers to replay (empty: every captured one)
    bool quiet = false;        // no progress bar
    // Steps of one KV head attended in one call while the held entries do not change and no
    // policy observes the scores (at most 64); 1: one call per step. The results are the same
    // bits either way (kernels/attend.h's exactness contract; tests/simulator/test_replay.cpp).
    int step_block = 64;
    const std::atomic<bool>* cancel = nullptr;  // set: stop early (replay_trace throws kvs::Error)
    // Called (serialized, from a worker thread) as (run, layer) pairs finish: (done, total).
    std::function<void(int64_t, int64_t)> on_progress;
};

struct Summary {
    double recall_mean = 0, recall_p5 = 0, err_mean = 0, err_p95 = 0, cos_mean = 0, cos_p5 = 0;
    double held_mean = 0, bytes_mean = 0, bytes_peak = 0, full_bytes_mean = 0,
           full_bytes_at_peak = 0, ratio_mean = 0, ratio_at_peak = 0;
    double bytes_final = 0, full_bytes_final = 0, ratio_final = 0;  // at the last step
    int64_t restores = 0;  // tokens brought back to higher precision from an offloaded copy
    double offload_bytes_mean = 0, offload_bytes_peak = 0;  // summed over units, per step
    // Passkey / needle traces: the share of (unit, answer token) pairs still held (at any
    // precision) at the last step; -1 when the trace has no answer.
    double answer_kept = -1;
};

// The floating-point summary fields by name, in the order the results file, the JSON
// report and the reader list them (restores, an integer, is handled beside them).
struct SummaryField {
    const char* name;
    double Summary::*member;
    int since = 1;  // results schema version that added it (older files read it as 0)
};
inline constexpr SummaryField kSummaryFields[] = {
    {"recall_mean", &Summary::recall_mean},
    {"recall_p5", &Summary::recall_p5},
    {"err_mean", &Summary::err_mean},
    {"err_p95", &Summary::err_p95},
    {"cos_mean", &Summary::cos_mean},
    {"cos_p5", &Summary::cos_p5},
    {"held_mean", &Summary::held_mean},
    {"bytes_mean", &Summary::bytes_mean},
    {"bytes_peak", &Summary::bytes_peak},
    {"full_bytes_mean", &Summary::full_bytes_mean},
    {"full_bytes_at_peak", &Summary::full_bytes_at_peak},
    {"ratio_mean", &Summary::ratio_mean},
    {"ratio_at_peak", &Summary::ratio_at_peak},
    {"bytes_final", &Summary::bytes_final},
    {"full_bytes_final", &Summary::full_bytes_final},
    {"ratio_final", &Summary::ratio_final},
    {"answer_kept", &Summary::answer_kept},
    {"offload_bytes_mean", &Summary::offload_bytes_mean, 2},
    {"offload_bytes_peak", &Summary::offload_bytes_peak, 2}};

struct RunResult {
    std::string policy, spec, params_json, budget;
    // A closed-loop run (kvscope eval): its metrics as a JSON object ("" for a replay run).
    std::string closed_loop_json;
    Mode mode = Mode::stream;
    int64_t prefill_len = 0;
    std::string trace_path, trace_model, trace_task;
    std::vector<int32_t> answer_positions;  // the task's answer tokens (passkey / needle)
    bool trace_complete = true;
    int64_t n_tokens = 0;
    int n_head = 0, n_kv = 0, d = 0;
    std::vector<int32_t> layers;               // [L]
    std::vector<int32_t> steps;                // [S]
    std::vector<float> recall, err, cos;       // [S, L, Hkv]
    std::vector<int32_t> held, budget_tokens;  // [S, L, Hkv]
    std::vector<int64_t> bytes;                // [S, L, Hkv]
    std::vector<int64_t> offload_bytes;        // [S, L, Hkv] offloaded full-precision copies
    std::vector<int64_t> full_bytes;           // [S]
    std::vector<int32_t> evicted_at;           // [L, Hkv, T]
    // (v3) the representative position of the merged entry token j was last folded into, and
    // the step; -1 when it never was (results_schema.h)
    std::vector<int32_t> merged_into, merged_at;  // [L, Hkv, T]
    std::vector<int32_t> bit_events;              // [E, 4]: unit, token, step, bits (step order)
    // (optional) the roles the policy's plan gave the units (Policy::unit_roles): names, and
    // role[l * Hkv + g] indexing them; empty when the policy has none
    std::vector<std::string> unit_role_names;
    std::vector<int8_t> unit_role;     // [L, Hkv]
    std::vector<int32_t> ckpt_steps;   // [C]
    std::vector<uint8_t> ckpt_bits;    // [C, L, Hkv, T]
    std::vector<uint16_t> ckpt_score;  // [C, L, Hkv, T] binary16
    double seconds = 0;
    Summary summary;

    size_t n_steps() const { return steps.size(); }
    size_t n_units() const { return layers.size() * size_t(n_kv); }
};

// Runs every spec over the trace. Throws kvs::Error on a bad trace / option (one line).
// An incomplete trace is replayed up to where it ends (a warning goes to stderr unless quiet).
std::vector<RunResult> replay_trace(const std::string& trace_path,
                                    const std::vector<PolicySpec>& specs, const ReplayOptions& opt);

// The summary statistics of a run's per-step arrays (also used by merge).
Summary summarize(const RunResult& r);
// The spec's parameters as a JSON object (RunResult::params_json).
std::string params_json(const PolicySpec& s);

}  // namespace kvs::sim
