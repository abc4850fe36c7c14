// The live driver: a KvCache (engine/kv_cache.h) whose (layer, KV head) stores are UnitStores run
// by a policy, so that the engine's forward pass (generate, perplexity, capture, eval) runs on a
// really compressed cache. The policy object is the same one replay drives (simulator/policy.h);
// it cannot tell the drivers apart.
//
// The order of events per layer is replay's: for each token t, append t to every unit; if
// t >= first_update the layer policy updates (evict / re-store); then the queries of t attend
// and the policy observes their probabilities over the entries it holds.
//   stream mode:  first_update = 0. Tokens go one at a time (max_chunk() = 1), the prompt too,
//                 so every step is exactly replay's step.
//   prefill mode: first_update = P. The prompt [0, P) goes in chunks (full attention; each
//                 query of a chunk is shown only the entries at or before it, so a policy
//                 observes exactly what replay shows it); from P on, one token at a time: the
//                 first update (the prompt's compression) happens as token P is appended.
// Attention goes through kernels/attend.h, whose rows do not depend on the call they are in:
// a live run and a replay of its own trace compute the same bits and take the same decisions.
//
// With `record`, the cache records what the policy did, in the results format's terms
// (simulator/results_schema.h): evicted_at, merged_into / merged_at, bit_events, and per
// evaluated step (t >= P in prefill mode, every t in stream mode) held, bytes and offload bytes
// of every (layer, KV head).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/kv_cache.h"
#include "simulator/policy.h"
#include "simulator/replay.h"
#include "simulator/unit_store.h"

namespace kvs::sim {

struct LiveOptions {
    Mode mode = Mode::stream;
    int64_t prefill_len = 0;  // P (prefill mode): tokens before it are the prompt
    int64_t capacity = 0;     // positions [0, capacity) may be appended (the context length)
    Precision precision = Precision::f16;
    bool record = false;
    std::vector<int32_t> tokens;  // the token ids known up front (the prompt), for plans
    RopeInfo rope;                // the model's RoPE (Model::rope_inv_freq), for plans
};

// What a live run did (record = true). Shapes as in results_schema.h with L = every layer.
struct LiveRecord {
    int64_t first_step = 0;              // P in prefill mode, 0 in stream mode
    int64_t n_steps = 0;                 // evaluated steps recorded so far
    std::vector<int32_t> held;           // [S, L, Hkv]
    std::vector<int32_t> budget_tokens;  // [S, L, Hkv]
    std::vector<int64_t> bytes;          // [S, L, Hkv]
    std::vector<int64_t> offload_bytes;  // [S, L, Hkv]
    std::vector<int32_t> evicted_at;     // [L, Hkv, capacity]
    std::vector<int32_t> merged_into;    // [L, Hkv, capacity] representative position, or -1
    std::vector<int32_t> merged_at;      // [L, Hkv, capacity] step of the fold, or -1
    std::vector<int32_t> bit_events;     // [E, 4]: unit, token, step, bits (step, unit order)
};

class LiveCache final : public KvCache {
  public:
    // Throws kvs::Error when the spec cannot run live (one line naming the cause).
    LiveCache(const KvShape& shape, const PolicySpec& spec, const LiveOptions& opt);
    ~LiveCache() override;

    const KvShape& shape() const override { return shape_; }
    void append(int il, int n_tok, const int32_t* pos, const float* k, const float* v) override;
    void attend(int il, int n_tok, const int32_t* pos, const float* q, float* out,
                float* lse) const override;
    int n_held(int il, int h_kv) const override;
    std::vector<int32_t> positions(int il, int h_kv) const override;
    void evict(int il, int h_kv, const std::vector<int32_t>& positions) override;
    size_t bytes() const override;
    void clear() override;
    int max_chunk(int64_t first_pos) const override;

    int64_t offload_bytes() const;
    int64_t restores() const;
    const LiveRecord& record() const { return rec_; }
    const PolicySpec& spec() const { return spec_; }
    // The roles the policy's plan gave the units (empty before a deferred plan is made).
    UnitRoles unit_roles() const { return policy_->unit_roles(plan_keepalive_.get()); }
    const LiveOptions& options() const { return opt_; }

  private:
    struct Layer;
    void reset();
    PlanContext plan_context() const;
    // A policy that plans from rows (dynamickv): plan from the prompt's queries (saved as they
    // were attended) and keys, then re-create the layers with the plan and show them the same
    // queries' attention they had seen (replay's order). At the first compressed step.
    void make_deferred_plan();
    void record_step(int il, int64_t t) const;
    // observe() of layer il, KV head g, for the query at position t: its query heads' rows of
    // probabilities (row h at probs + h * stride, over the held entries) cut to the entries at
    // or before t, which is what the store's view shows the policy.
    void show(int il, int64_t t, int g, const float* probs, size_t stride) const;
    KvShape shape_;
    PolicySpec spec_;
    LiveOptions opt_;
    std::unique_ptr<Policy> policy_;
    int group_ = 32;
    int64_t first_update_ = 0, first_eval_ = 0;
    mutable std::vector<std::unique_ptr<Layer>> layers_;
    std::shared_ptr<const void> plan_keepalive_;
    bool deferred_plan_ = false, planned_ = false;
    int64_t save_from_ = 0;  // queries at positions [save_from_, P) are saved for the plan
    mutable LiveRecord rec_;
};

// A live run's record as a results-format run over its first n_tokens positions (every layer;
// recall / output error / cosine are NaN: live, there is no full attention to compare with).
// The caller fills the trace fields and the summary.
RunResult live_run_result(const LiveCache& c, int64_t n_tokens);

}  // namespace kvs::sim
