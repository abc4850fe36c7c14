// razor: RazorAttention (Tang et al. 2024, "RazorAttention: Efficient KV Cache Compression
// Through Retrieval Heads"). Retrieval heads keep their whole cache; every other head keeps its
// first `sinks` tokens and the most recent ones, and folds what it drops into one compensation
// token whose key and value are the mean of the dropped tokens' and whose attention logit gets
// log(count) (the paper's equation 5: the dropped tokens' weight n_d exp(q k^)). Retrieval heads
// are the paper's echo heads (attending to earlier occurrences of the current token) and
// induction heads (attending to the token after an earlier occurrence), found from the run's
// own attention (a plan pass) and its token ids. The paper publishes no code; where it is open
// kvscope chooses (`kvscope policies razor` says what):
//
// - Scores: for every query head of every replayed layer, over the queries t < t0 (the plan
//   step) that have an earlier occurrence of their token: echo = the mean attention mass on the
//   positions j < t with ids[j] == ids[t]; induction = the mean mass on the positions j < t with
//   ids[j - 1] == ids[t]. The paper scores heads on a synthetic sequence of random tokens repeated
//   4 times, once per model; here the run's own prompt is the probe (a natural text repeats
//   enough words), so the choice can follow the task.
// - Units: kvscope's units are KV heads (GQA); a KV head's score is the max over its query heads
//   (it serves a retrieval head if any of its query heads is one). The top `induction` fraction
//   of all (layer, KV head) units by induction score and the top `echo` fraction by echo score
//   are retrieval units (the paper's 14 % + 1 %, rounded up).
// - Budget: a non-retrieval unit holds at most `budget` entries: the sinks, the compensation
//   token and the newest budget - sinks - 1 tokens (the paper's buffer L_h = max(S0, N / C),
//   fixed here so that runs compare at equal budgets); retrieval units are not limited.
// - When: the plan is made at P in prefill mode (the paper's setting: the prompt is compressed
//   once), in stream mode at the first step over budget (before it, every unit holds all); from
//   then on each non-retrieval unit folds its oldest non-sink tokens into the compensation token
//   whenever it is over budget (during decoding too).
// - The compensation token is a merged entry at the position of the first token it took; its
//   rows are the exact mean (in double) of the original fp16 rows of every token it stands for.
//   compensate=0 drops the tokens instead (the paper's ablation without it).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "common.h"
#include "engine/error.h"

namespace kvs::sim {

namespace {

struct RazorParams {
    Budget budget;
    int sinks = 4;
    double induction = 0.14, echo = 0.01;
    bool compensate = true;
};

struct RazorPlan {
    int64_t step = -1;           // the planning step (-1: never over budget, nothing happens)
    std::vector<uint8_t> keep;   // [slot * n_kv + g]: 1 = retrieval unit (keeps everything)
    std::vector<float> echo_s;   // [slot * n_kv + g]: the unit's echo score
    std::vector<float> induc_s;  // [slot * n_kv + g]: its induction score
};

// Echo and induction scores of every (replayed layer, KV head): max over its query heads of the
// mean attention mass of the queries t < t0 on earlier occurrences of ids[t] (echo) and on the
// tokens after them (induction).
void head_scores(const PlanContext& c, int64_t t0, RazorPlan& plan) {
    const std::vector<int32_t>& ids = c.tokens;
    const size_t U = c.layers.size() * size_t(c.n_kv);
    plan.echo_s.assign(U, 0.0f);
    plan.induc_s.assign(U, 0.0f);
    for (size_t s = 0; s < c.layers.size(); ++s) {
        for (int h = 0; h < c.n_head; ++h) {
            const int g = c.kv_of_q[size_t(h)];
            double echo = 0, induc = 0;
            int64_t n_echo = 0, n_induc = 0;
            detail::plan_attention_rows(c, c.layers[s], h, t0, [&](int64_t t, const float* p) {
                double e = 0, in = 0;
                bool has_e = false, has_in = false;
                for (int64_t j = 0; j < t; ++j) {
                    if (ids[size_t(j)] == ids[size_t(t)]) e += p[j], has_e = true;
                    if (j >= 1 && ids[size_t(j - 1)] == ids[size_t(t)]) in += p[j], has_in = true;
                }
                if (has_e) echo += e, ++n_echo;
                if (has_in) induc += in, ++n_induc;
            });
            const size_t u = s * size_t(c.n_kv) + size_t(g);
            plan.echo_s[u] = std::max(plan.echo_s[u], float(n_echo ? echo / n_echo : 0.0));
            plan.induc_s[u] = std::max(plan.induc_s[u], float(n_induc ? induc / n_induc : 0.0));
        }
    }
}

// The top ceil(frac * n) units by score (ties: the lower unit index) are marked in keep.
void mark_top(const std::vector<float>& score, double frac, std::vector<uint8_t>& keep) {
    const size_t n = score.size();
    const size_t k = std::min(n, size_t(std::ceil(frac * double(n) - 1e-9)));
    std::vector<size_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return score[a] > score[b]; });
    for (size_t i = 0; i < k; ++i) keep[order[i]] = 1;
}

class RazorLayer final : public LayerPolicy {
  public:
    RazorLayer(const RazorParams& p, const LayerContext& c, const RazorPlan* plan)
        : p_(p), d_(c.d), plan_(plan), slot_(c.slot), n_kv_(c.n_kv) {
        sum_k_.assign(size_t(c.n_kv), std::vector<double>(size_t(c.d), 0.0));
        sum_v_ = sum_k_;
        count_.assign(size_t(c.n_kv), 0);
        comp_pos_.assign(size_t(c.n_kv), -1);
    }
    bool observes() const override { return false; }
    int64_t budget_tokens(int64_t t, int g) const override {
        if (!active(t) || retrieval(g)) return -1;
        return p_.budget.tokens(t + 1);
    }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        if (!active(t)) return;
        const int64_t cap = p_.budget.tokens(t + 1);
        for (size_t g = 0; g < units.size(); ++g) {
            if (retrieval(int(g))) continue;
            UnitStore& u = units[g];
            if (u.size() <= cap) continue;
            // The oldest plain tokens past the sinks go, oldest first, until the unit holds cap
            // entries (the compensation token, once it exists, is one of them).
            const int has_comp = comp_pos_[g] >= 0 ? 1 : 0;
            int64_t excess = u.size() - cap + ((p_.compensate && !has_comp) ? 1 : 0);
            std::vector<uint8_t> out(size_t(u.size()), 0);
            int first = -1;
            for (int i = 0; i < u.size() && excess > 0; ++i) {
                if (u.pos(i) < p_.sinks || u.pos(i) == comp_pos_[g]) continue;
                out[size_t(i)] = 1;
                if (first < 0) first = i;
                --excess;
            }
            if (!p_.compensate) {
                u.evict_mask(out);
                continue;
            }
            // Fold them into the compensation token (founded by the oldest one, if new).
            std::vector<float> row(static_cast<size_t>(d_));
            int ci = -1;
            if (has_comp) {
                for (int i = 0; i < u.size(); ++i)
                    if (u.pos(i) == comp_pos_[g]) ci = i;
            } else {
                ci = first;
                comp_pos_[g] = u.pos(first);
            }
            KVS_ASSERT(ci >= 0);
            for (int i = 0; i < u.size(); ++i) {
                if (!out[size_t(i)]) continue;
                u.k_row(i, row.data());
                for (int c = 0; c < d_; ++c) sum_k_[g][size_t(c)] += row[size_t(c)];
                u.v_row(i, row.data());
                for (int c = 0; c < d_; ++c) sum_v_[g][size_t(c)] += row[size_t(c)];
                ++count_[g];
            }
            out[size_t(ci)] = 0;
            std::vector<float> mk(static_cast<size_t>(d_)), mv(static_cast<size_t>(d_));
            for (int c = 0; c < d_; ++c) {
                mk[size_t(c)] = float(sum_k_[g][size_t(c)] / double(count_[g]));
                mv[size_t(c)] = float(sum_v_[g][size_t(c)] / double(count_[g]));
            }
            u.merge(ci, mk.data(), mv.data(), count_[g], out);
        }
    }

  private:
    bool active(int64_t t) const { return plan_ && plan_->step >= 0 && t >= plan_->step; }
    bool retrieval(int g) const {
        return plan_ && plan_->keep[size_t(slot_) * size_t(n_kv_) + size_t(g)] != 0;
    }
    RazorParams p_;
    int d_;
    const RazorPlan* plan_;
    int slot_, n_kv_;
    std::vector<std::vector<double>> sum_k_, sum_v_;  // per KV head: the folded rows' sums
    std::vector<int> count_;
    std::vector<int32_t> comp_pos_;  // per KV head: the compensation token's position (-1: none)
};

class Razor final : public Policy {
  public:
    explicit Razor(const Params& p) {
        p_.budget = p.budget();
        p_.sinks = p.integer("sinks");
        p_.induction = p.real("induction");
        p_.echo = p.real("echo");
        p_.compensate = p.integer("compensate") != 0;
        if (!p_.budget.fraction && p_.budget.value < p_.sinks + 2)
            fail(
                "policy 'razor': budget {} must be >= sinks + 2 = {} (the sinks, the "
                "compensation token and at least one recent token)",
                p_.budget.text, p_.sinks + 2);
    }
    bool plans_from_rows() const override { return true; }
    bool plan_reads_all_queries() const override { return true; }
    // The retrieval heads, for the results file: 1 = keeps everything.
    UnitRoles unit_roles(const void* plan) const override {
        const auto* p = static_cast<const RazorPlan*>(plan);
        if (!p || p->step < 0) return {};
        UnitRoles r;
        r.names = {"compressed", "retrieval"};
        r.role.assign(p->keep.begin(), p->keep.end());
        return r;
    }
    std::shared_ptr<const void> plan(const PlanContext& c) const override {
        auto out = std::make_shared<RazorPlan>();
        // Prefill: at P; stream: the first step whose cache (t + 1 tokens) is over budget.
        const int64_t t0 = detail::first_plan_step(c, p_.budget);
        if (t0 < 2) return out;
        if (int64_t(c.tokens.size()) < t0)
            fail(
                "policy 'razor' finds retrieval heads from the token ids, which this run does "
                "not have ({} of {})",
                c.tokens.size(), t0);
        out->step = t0;
        head_scores(c, t0, *out);
        out->keep.assign(out->echo_s.size(), 0);
        mark_top(out->induc_s, p_.induction, out->keep);
        mark_top(out->echo_s, p_.echo, out->keep);
        return out;
    }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        return std::make_unique<RazorLayer>(p_, c, static_cast<const RazorPlan*>(c.plan));
    }

  private:
    RazorParams p_;
};

}  // namespace

PolicyEntry policy_razor() {
    PolicyEntry e;
    e.info.name = "razor";
    e.info.summary =
        "RazorAttention: retrieval heads keep everything, the others sinks + recent + one "
        "compensation token (merged entry)";
    e.info.details =
        "Plan (at P in prefill mode, the paper's; in stream mode at the first step over budget): "
        "every query head of every layer is scored over the queries before the plan step whose "
        "token occurred earlier: echo = mean attention mass on the earlier occurrences of the "
        "query's token, induction = mean mass on the tokens right after them (the paper's echo "
        "and induction heads; it probes with a random token sequence repeated 4 times, kvscope "
        "with the run's own prompt). A KV head scores the max of its query heads; the top "
        "`induction` fraction of all (layer, KV head) units by induction score and the top "
        "`echo` fraction by echo score are retrieval units and keep their whole cache. Every "
        "other unit keeps the first `sinks` tokens, the compensation token and the newest "
        "budget - sinks - 1 tokens; whatever it drops is folded into the compensation token (a "
        "merged entry: the mean key and value of the dropped tokens, fp16, and their count, "
        "log(count) added to its logit: the paper's equation 5), from the plan step on, during "
        "decoding too. budget= fixes the paper's buffer L_h = max(S0, N/C) so that runs "
        "compare at equal budgets. compensate=0 drops instead (the paper's ablation). The "
        "paper publishes no code.";
    e.info.params = {
        param_budget("entries of a non-retrieval (layer, KV head): sinks + compensation token + "
                     "recent; a count (>= sinks + 2) or a fraction"),
        param_int("sinks", "4", 0, 1e6, "first tokens every unit keeps"),
        param_real("induction", "0.14", 0, 1,
                   "fraction of (layer, KV head) units kept whole for their induction score"),
        param_real("echo", "0.01", 0, 1, "fraction of units kept whole for their echo score"),
        param_int("compensate", "1", 0, 1,
                  "1: fold dropped tokens into the compensation token; 0: drop them"),
    };
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<Razor>(p); };
    return e;
}

}  // namespace kvs::sim
