// The policy interface: one piece of code per compression method, driven by the replay loop (and
// later by the live engine). See simulator/README.md for how to add one.
//
// A `Policy` is a parsed spec ("h2o:budget=256,recent=32"). For each replayed layer it makes a
// `LayerPolicy`, which owns the state of that layer's units (one per KV head) and acts on them:
//
//   for t in 0 .. T-1:                      (one decode step per token)
//       every unit appends token t (fp16)
//       if t >= first_update:               (0 in stream mode, P in prefill mode)
//           layer_policy.update(t, units)   evict / re-store tokens; afterwards each unit holds at
//                                           most budget_tokens(t, g) tokens (checked)
//       the query heads of each KV head g attend over what units[g] holds
//       layer_policy.observe(t, g, probs)   the attention probabilities they gave each held
//                                           token: all a real system could see at that step
//
// In prefill mode the prompt's queries attend the full prompt (nothing is compressed before P),
// so a decode-style policy has scored the prompt with every query it has seen when it first acts
// at t = P. Policies that need a decision across layers (DynamicKV's layer budgets) get one
// `plan()` call over the trace before the layers are replayed.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "simulator/unit_store.h"

namespace kvs::capture {
class TraceReader;
}

namespace kvs::sim {

enum class Mode { stream, prefill };
inline const char* mode_name(Mode m) {
    return m == Mode::stream ? "stream" : "prefill";
}

// A token budget: a count ("256") or a fraction of the tokens so far ("0.2"). A fraction never
// asks for fewer than kMinFractionTokens tokens (or all of them while there are fewer): in stream
// mode "20 % of the first 5 tokens" would evict the attention sinks for good at step 1, and no
// system runs a cache of one token.
inline constexpr int64_t kMinFractionTokens = 16;
struct Budget {
    bool set = false;
    bool fraction = false;
    double value = 0;
    std::string text;  // as given
    // Tokens allowed when n tokens have been seen.
    int64_t tokens(int64_t n) const;
};
Budget parse_budget(const std::string& s);  // throws kvs::Error ("budget must be > 0 ...")

// How the scores of the query heads that share a KV head combine into one score per token.
enum class GqaReduce { mean, max, sum };

enum class ParamKind { integer, real, choice, budget };
struct ParamDef {
    std::string name;
    ParamKind kind = ParamKind::integer;
    std::string def;  // default as text ("" for budget = required when the policy needs one)
    std::string help;
    double min = 0, max = 0;           // inclusive range for integer / real (min > max: none)
    std::vector<std::string> choices;  // for choice
};

// Parsed, validated parameters of one spec.
class Params {
  public:
    std::map<std::string, std::string> values;  // every parameter, defaults filled in
    double real(const std::string& k) const;
    int integer(const std::string& k) const;
    const std::string& str(const std::string& k) const;
    Budget budget() const;  // the "budget" parameter (unset when absent)
    GqaReduce gqa() const;  // the "gqa" parameter (mean when absent)
};

struct LayerContext {
    int layer = 0;       // model layer index
    int slot = 0;        // index among the replayed layers
    int n_layer = 0;     // layers of the model
    int n_replayed = 0;  // layers being replayed
    int n_head = 0, n_kv = 0, d = 0;
    int64_t n_tokens = 0;
    int64_t prefill_len = 0;  // P (0 in stream mode)
    Mode mode = Mode::stream;
    float attn_scale = 0;
    const void* plan = nullptr;  // what Policy::plan returned (policy-specific), or null
};

class LayerPolicy {
  public:
    virtual ~LayerPolicy() = default;
    // Token t has just been appended to every unit. Called for t >= first_update.
    virtual void update(int64_t t, std::vector<UnitStore>& units) = 0;
    // The n_q query heads of KV head g attended over units[g] (after update):
    // probs[h * n + i] for held index i, n = units[g].size().
    virtual void observe(int64_t t, int g, const float* probs, int n_q, UnitStore& unit) {
        (void)t, (void)g, (void)probs, (void)n_q, (void)unit;
    }
    // The unit's token budget at step t (-1 = none). The replay checks it after every update.
    // False when observe() is a no-op (the replay then skips the prompt's attention in prefill
    // mode, where nothing is measured).
    virtual bool observes() const { return true; }
    // The first step whose observe() matters when nothing is evaluated before `first_update`
    // (prefill mode): SnapKV-style policies only look at the last `window` prompt queries, so
    // the replay skips the attention of the earlier ones.
    virtual int64_t first_observed_step(int64_t first_update) const {
        (void)first_update;
        return 0;
    }
    // True when the policy restores entries to a higher precision (seed 001): the system then
    // keeps an offloaded full-precision copy of every lossy entry, counted as offload bytes.
    virtual bool offloads() const { return false; }
    virtual int64_t budget_tokens(int64_t t, int g) const {
        (void)t, (void)g;
        return -1;
    }
};

// The RoPE of a run's (post-RoPE) q and k rows: the d/2 frequencies and which dimensions rotate
// together (half: (i, i + d/2); else (2i, 2i + 1)). Replay takes it from the trace, the live
// driver from the model. Policies that undo or average the rotation (expattn) read it.
struct RopeInfo {
    std::vector<float> inv_freq;
    bool half = true;
};

// Which rows PlanContext::read returns: post-RoPE queries (per query head) or keys (per KV head).
enum class PlanField { q, k };

// What plan() can look at: the run's rows and its shape.
struct PlanContext {
    const capture::TraceReader* reader = nullptr;  // replay only (null live)
    // Rows [t0, t1) of a field of model layer `layer`, head `head`: [t1 - t0, d] fp32. Replay
    // reads the trace; the live driver the queries and keys the run computed (prefill mode: the
    // prompt's, once it has been through every layer). Empty when no plan can be made.
    std::function<std::vector<float>(PlanField f, int layer, int head, int64_t t0, int64_t t1)>
        read;
    std::vector<int> layers;  // replayed model layers
    int n_layer = 0, n_head = 0, n_kv = 0, d = 0;
    std::vector<int32_t> kv_of_q;
    int64_t n_tokens = 0, prefill_len = 0;
    Mode mode = Mode::stream;
    // The run's token ids as far as known (replay: the trace's; live: LiveOptions::tokens, the
    // prompt's). Policies that look at token identity (razor's echo / induction heads) read them.
    std::vector<int32_t> tokens;
    float attn_scale = 0;
    RopeInfo rope;
};

// The context of replayed layer slot `slot` (model layer c.layers[slot]) of a run, with the run's
// plan: what both drivers (replay, live) hand Policy::make_layer.
LayerContext layer_context(const PlanContext& c, int slot, const void* plan);

// Roles a plan gave the units (razor's retrieval heads): role[slot * n_kv + g] indexes names.
// Written to results files (`unit_role`, `unit_role_names`) so that a figure or the viewer can
// tell which heads a policy treated apart.
struct UnitRoles {
    std::vector<std::string> names;
    std::vector<int8_t> role;  // [replayed layer slot, KV head]
};

class Policy {
  public:
    virtual ~Policy() = default;
    virtual std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const = 0;
    // Optional pass over the run's rows before the layers act; the result is handed to every
    // layer as LayerContext::plan. Called once per run from one thread.
    virtual std::shared_ptr<const void> plan(const PlanContext& c) const {
        (void)c;
        return nullptr;
    }
    // True when plan() reads rows (PlanContext::read). Replay plans before the layers run; the
    // live driver plans in prefill mode once the prompt has been through every layer (at the
    // first compressed step, before any decision), and refuses stream mode.
    virtual bool plans_from_rows() const { return false; }
    // True when plan() reads the queries of every prompt position (razor's head scores), not
    // only those its layers observe: the live driver then keeps them all until it plans.
    virtual bool plan_reads_all_queries() const { return false; }
    // Non-empty: why this policy (with these parameters) cannot run live, one line (the live
    // driver refuses it when it is created).
    virtual std::string live_refusal() const { return ""; }
    // The roles the plan (what plan() returned; null: none made) gave the units; empty when the
    // policy has none.
    virtual UnitRoles unit_roles(const void* plan) const {
        (void)plan;
        return {};
    }
};

struct PolicyInfo {
    std::string name;
    std::string summary;  // one line
    std::string details;  // how it runs in each mode, choices made where a paper is open
    std::vector<ParamDef> params;
    // The mode the policy's paper evaluates it in (docs/policies.md): prompt compression methods
    // "prefill", streaming ones "stream" (quant and full: either, "stream" listed).
    Mode paper_mode = Mode::stream;
    bool needs_budget = false;  // a spec without budget= is an error (a sweep adds one)
    bool takes_budget = false;  // budget= is accepted
};

using PolicyFactory = std::function<std::unique_ptr<Policy>(const Params&)>;
struct PolicyEntry {
    PolicyInfo info;
    PolicyFactory make;
};

// Every policy, in the order `kvscope policies` lists them.
const std::vector<PolicyEntry>& policy_registry();
const PolicyEntry* find_policy(const std::string& name);

// A parsed spec "name:key=value,...".
struct PolicySpec {
    const PolicyEntry* entry = nullptr;
    Params params;
    std::string canonical;  // name:k=v,... with every parameter (defaults included), sorted
    std::string given;      // as written
};
// Throws kvs::Error with one line naming the cause (unknown policy: lists the valid ones;
// unknown parameter: lists the policy's; a bad value: says the range).
// require_budget = false: a policy that needs a budget may come without one (a sweep adds it).
PolicySpec parse_spec(const std::string& text, bool require_budget = true);
// The same spec with budget= replaced.
PolicySpec with_budget(const PolicySpec& s, const std::string& budget);

// Shared parameter definitions, so policies describe them the same way.
ParamDef param_budget(const std::string& help = "");
ParamDef param_gqa();
ParamDef param_bits(const std::string& def = "16");
ParamDef param_group();
ParamDef param_int(const std::string& name, const std::string& def, double min, double max,
                   const std::string& help);
ParamDef param_real(const std::string& name, const std::string& def, double min, double max,
                    const std::string& help);
ParamDef param_choice(const std::string& name, const std::string& def,
                      std::vector<std::string> choices, const std::string& help);

// Combines the n_q rows of probs ([n_q, n]) into one score per held token.
void reduce_gqa(const float* probs, int n_q, int n, GqaReduce how, float* out);

}  // namespace kvs::sim
