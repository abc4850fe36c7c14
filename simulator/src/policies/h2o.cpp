// h2o (Heavy-Hitter Oracle, Zhang et al. 2023): each token's score is the attention it has
// accumulated from every query that saw it; the cache keeps the `recent` newest tokens plus the
// heaviest hitters, evicting the lightest one whenever it is over budget.
#include "common.h"

namespace kvs::sim {

namespace {

class H2oLayer final : public LayerPolicy {
  public:
    H2oLayer(Budget b, int recent, GqaReduce gqa, int bits)
        : budget_(b), recent_(recent), gqa_(gqa), bits_(bits) {}
    int64_t budget_tokens(int64_t t, int) const override { return budget_.tokens(t + 1); }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const int64_t keep = budget_tokens(t, 0);
        for (auto& u : units) {
            detail::evict_to(u, keep,
                             detail::protect(u, u.scores(), 0, detail::recent_cap(recent_, keep)));
            detail::store_at(u, bits_);
        }
    }
    void observe(int64_t, int, const float* probs, int n_q, UnitStore& u) override {
        row_.resize(size_t(u.size()));
        reduce_gqa(probs, n_q, u.size(), gqa_, row_.data());
        auto& s = u.scores();
        for (int i = 0; i < u.size(); ++i) s[size_t(i)] += row_[size_t(i)];
    }

  private:
    Budget budget_;
    int recent_;
    GqaReduce gqa_;
    int bits_;
    std::vector<float> row_;
};

class H2o final : public Policy {
  public:
    explicit H2o(const Params& p)
        : budget_(p.budget()),
          recent_(p.integer("recent")),
          gqa_(p.gqa()),
          bits_(p.integer("bits")) {}
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext&) const override {
        return std::make_unique<H2oLayer>(budget_, recent_, gqa_, bits_);
    }

  private:
    Budget budget_;
    int recent_;
    GqaReduce gqa_;
    int bits_;
};

}  // namespace

PolicyEntry policy_h2o() {
    PolicyEntry e;
    e.info.name = "h2o";
    e.info.summary = "H2O: heavy hitters by accumulated attention plus a recent window";
    e.info.details =
        "Score = sum of the attention a token received from every query that saw it (over the "
        "tokens held at that step). Whenever the cache is over budget, the lowest-scored token "
        "outside the `recent` newest is evicted. Prefill mode: the prompt's queries score the "
        "prompt (full causal attention) before the first eviction at position P.";
    e.info.params = {
        param_budget(),
        param_int("recent", "32", 0, 1e9, "newest tokens never evicted (at most half the budget)"),
        param_gqa(), param_bits(), param_group()};
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<H2o>(p); };
    return e;
}

}  // namespace kvs::sim
