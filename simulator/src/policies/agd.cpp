// agd: attention-guided dynamic compression (seed 000). Each token's score is a decaying
// average of the attention it receives, A_i <- gamma * A_i + (1 - gamma) * a_i, with a_i the
// attention of the current query (combined over the group's query heads: N = that group).
// After every k decoding steps the cache is updated (seed 000, "Cache Update"): the lowest-A
// tokens are evicted down to the budget, and each held token gets
// b_i = round(b_min + (b_max - b_min) * (A_i - A_min) / (A_max - A_min)) bits, with A_min, A_max
// the min/max over the tokens in the cache (the seed's normalisation), snapped to the packed
// format's widths {2, 4, 8, 16}.
//
// kvscope's convention (as h2o, tova): the update runs after the query of step t attended, i.e.
// in update(t + 1), where token t + 1 has not been attended yet: it is kept, at full precision,
// and left out of the min/max; the budget counts it (B = the seed's budget + 1). Between updates
// the cache grows by one token per step (budget_tokens = B + steps since the update).
// Ties: the lower A is evicted first, then the older token.
#include <fmt/format.h>

#include "common.h"
#include "engine/error.h"
#include "kernels/quant_pack.h"

namespace kvs::sim {

namespace {

struct AgdParams {
    Budget budget;
    double gamma = 0.9;
    int k = 16, b_min = 2, b_max = 16, recent = 0;
    GqaReduce gqa = GqaReduce::mean;
};

class AgdLayer final : public LayerPolicy {
  public:
    explicit AgdLayer(const AgdParams& p) : p_(p) {}
    int64_t budget_tokens(int64_t t, int) const override {
        if (!p_.budget.set || last_ < 0) return -1;
        return keep_ + (t - last_);
    }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const bool due = last_ < 0 || t - last_ >= p_.k;
        if (!due) return;
        last_ = t;
        if (p_.budget.set) keep_ = p_.budget.tokens(t + 1);
        for (auto& u : units) {
            // The newest token (unattended) and the optional `recent` ones are kept at full
            // precision and out of the normalisation.
            const int prot =
                1 + (p_.budget.set ? detail::recent_cap(p_.recent, keep_ - 1) : p_.recent);
            if (p_.budget.set) detail::evict_to(u, keep_, detail::protect(u, u.scores(), 0, prot));
            const int n = u.size();
            const int old = n - prot;
            if (old <= 0) continue;
            float lo = u.scores()[0], hi = lo;
            for (int i = 0; i < old; ++i) {
                lo = std::min(lo, u.scores()[size_t(i)]);
                hi = std::max(hi, u.scores()[size_t(i)]);
            }
            for (int i = 0; i < old; ++i) {
                const double f =
                    hi > lo ? (double(u.scores()[size_t(i)]) - double(lo)) / (double(hi) - lo)
                            : 1.0;
                const int b = int(std::lround(p_.b_min + (p_.b_max - p_.b_min) * f));
                // A real cache cannot recover precision it threw away: bits only go down.
                const int snapped = kvs::kernels::snap_bits(b);
                if (snapped < u.bits(i)) u.set_bits(i, snapped);
            }
        }
    }
    void observe(int64_t, int, const float* probs, int n_q, UnitStore& u) override {
        row_.resize(size_t(u.size()));
        reduce_gqa(probs, n_q, u.size(), p_.gqa, row_.data());
        auto& s = u.scores();
        const float g = float(p_.gamma);
        for (int i = 0; i < u.size(); ++i)
            s[size_t(i)] = g * s[size_t(i)] + (1 - g) * row_[size_t(i)];
    }

  private:
    AgdParams p_;
    int64_t last_ = -1, keep_ = -1;
    std::vector<float> row_;
};

class Agd final : public Policy {
  public:
    explicit Agd(const Params& p) {
        p_.budget = p.budget();
        p_.gamma = p.real("gamma");
        p_.k = p.integer("k");
        p_.b_min = p.integer("b_min");
        p_.b_max = p.integer("b_max");
        p_.recent = p.integer("recent");
        p_.gqa = p.gqa();
        if (p_.b_min > p_.b_max)
            fail("policy 'agd': b_min={} is larger than b_max={}", p_.b_min, p_.b_max);
    }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext&) const override {
        return std::make_unique<AgdLayer>(p_);
    }

  private:
    AgdParams p_;
};

}  // namespace

PolicyEntry policy_agd() {
    PolicyEntry e;
    e.info.name = "agd";
    e.info.summary = "seed 000: decaying attention average, evict to a budget, bits by score";
    e.info.details =
        "Paper mode: stream. Score A_i <- gamma*A_i + (1-gamma)*a_i per step (a_i: the current "
        "query's attention, combined over the group's heads with gqa=; a new token starts at 0). "
        "After every k steps (the seed's cache update; the first at the first update step): with "
        "budget=, the lowest-A tokens are evicted down to the budget; then every held token gets "
        "round(b_min + (b_max-b_min) * (A_i - A_min) / (A_max - A_min)) bits, min/max over the "
        "tokens in the cache (the seed's normalisation; all equal: b_max), snapped to 2/4/8/16 "
        "(3 -> 4, 5 -> 4, 6..11 -> 8, 12+ -> 16), per-token groups of `group`; precision only "
        "goes down (no offloaded copy). The token of the current step (not attended yet) is kept "
        "at full precision and out of the min/max, so the budget counts it; between updates the "
        "cache grows by one token a step (the reported budget is budget + steps since the "
        "update). recent=N also keeps the N newest before it (old kvscope behaviour: recent=31, "
        "k=1). Not reproduced: the seed's compression-aware fine-tuning (needs training). Prefill "
        "mode: the prompt's queries build A before the first update at P.";
    e.info.params = {param_budget("optional: tokens held per (layer, KV head) after an update, a "
                                  "count or a fraction"),
                     param_real("gamma", "0.9", 0, 1, "decay of the attention average"),
                     param_int("k", "16", 1, 1e9, "evict and set the bits every k steps"),
                     param_int("b_min", "2", 2, 16, "bits of the least attended token"),
                     param_int("b_max", "16", 2, 16, "bits of the most attended token"),
                     param_int("recent", "0", 0, 1e9,
                               "newest tokens besides the current one kept fp16, never evicted "
                               "(at most half the budget)"),
                     param_gqa(),
                     param_group()};
    e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<Agd>(p); };
    return e;
}

}  // namespace kvs::sim
