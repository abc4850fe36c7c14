// agd: attention-guided dynamic compression (seed 000). Each token's score is a decaying
// average of the attention it receives, A_i <- gamma * A_i + (1 - gamma) * a_i, with a_i the
// attention of the current query (combined over the group's query heads: N = that group).
// Every `k` steps the cache is updated: tokens are evicted lowest-A first down to the budget,
// and each held token gets b_i = round(b_min + (b_max - b_min) * (A_i - A_min) / (A_max -
// A_min)) bits (min/max over the held tokens, the newest `recent` excluded), snapped to the
// packed format's widths {2, 4, 8, 16}.
#include <fmt/format.h>

#include "common.h"
#include "engine/error.h"
#include "kernels/quant_pack.h"

namespace kvs::sim {

namespace {

struct AgdParams {
    Budget budget;
    double gamma = 0.9;
    int k = 16, b_min = 2, b_max = 16, recent = 32;
    GqaReduce gqa = GqaReduce::mean;
};

class AgdLayer final : public LayerPolicy {
  public:
    explicit AgdLayer(const AgdParams& p) : p_(p) {}
    int64_t budget_tokens(int64_t t, int) const override { return p_.budget.tokens(t + 1); }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const bool due = (t % p_.k) == 0 || !started_;
        started_ = true;
        for (auto& u : units) {
            // The budget holds at every step; between updates only the eviction runs.
            if (p_.budget.set)
                detail::evict_to(
                    u, p_.budget.tokens(t + 1),
                    detail::protect(u, u.scores(), 0,
                                    detail::recent_cap(p_.recent, p_.budget.tokens(t + 1))));
            if (!due) continue;
            const int n = u.size();
            const int old = n - p_.recent;  // the newest `recent` stay fp16
            if (old <= 0) continue;
            float lo = u.scores()[0], hi = lo;
            for (int i = 0; i < old; ++i) {
                lo = std::min(lo, u.scores()[size_t(i)]);
                hi = std::max(hi, u.scores()[size_t(i)]);
            }
            for (int i = 0; i < old; ++i) {
                const double f = hi > lo ? (u.scores()[size_t(i)] - lo) / (hi - lo) : 1.0;
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
    bool started_ = false;
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
        "Score A_i <- gamma*A_i + (1-gamma)*a_i per step (a_i: the current query's attention, "
        "combined over the group's heads with gqa=; a new token starts at 0). Every k steps: each "
        "held token outside the newest `recent` gets round(b_min + (b_max-b_min) * (A_i - A_min) "
        "/ (A_max - A_min)) bits, snapped to 2/4/8/16 (3 -> 4, 5 -> 4, 6..11 -> 8, 12+ -> 16), "
        "per-token groups of `group`; precision only goes down (no offloaded copy). With "
        "budget=, the lowest-A tokens outside the newest `recent` are evicted whenever the cache "
        "is over budget (every step, so the budget always holds). Without budget only the bits "
        "change. Prefill mode: the prompt's queries build A before the first update at P.";
    e.info.params = {param_budget("optional: tokens held per (layer, KV head), a count or a "
                                  "fraction"),
                     param_real("gamma", "0.9", 0, 1, "decay of the attention average"),
                     param_int("k", "16", 1, 1e9, "update the bits every k steps"),
                     param_int("b_min", "2", 2, 16, "bits of the least attended token"),
                     param_int("b_max", "16", 2, 16, "bits of the most attended token"),
                     param_int("recent", "32", 0, 1e9,
                               "newest tokens kept fp16, never evicted (at most half the budget)"),
                     param_gqa(),
                     param_group()};
    e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<Agd>(p); };
    return e;
}

}  // namespace kvs::sim
