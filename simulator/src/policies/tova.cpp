// tova (Token Omission Via Attention, Oren et al. 2024): when over budget, evict the token the
// most recent query attended least.
#include "common.h"

namespace kvs::sim {

namespace {

class TovaLayer final : public LayerPolicy {
  public:
    TovaLayer(Budget b, GqaReduce gqa, int bits) : budget_(b), gqa_(gqa), bits_(bits) {}
    int64_t budget_tokens(int64_t t, int) const override { return budget_.tokens(t + 1); }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const int64_t keep = budget_tokens(t, 0);
        for (auto& u : units) {
            // The new token has not been attended yet: TOVA attends first, then evicts, so the
            // newest token is never the one dropped.
            detail::evict_to(u, keep, detail::protect(u, u.scores(), 0, 1));
            detail::store_at(u, bits_);
        }
    }
    void observe(int64_t, int, const float* probs, int n_q, UnitStore& u) override {
        // The score is the last query's attention only (replaced, not accumulated).
        reduce_gqa(probs, n_q, u.size(), gqa_, u.scores().data());
    }

  private:
    Budget budget_;
    GqaReduce gqa_;
    int bits_;
};

class Tova final : public Policy {
  public:
    explicit Tova(const Params& p) : budget_(p.budget()), gqa_(p.gqa()), bits_(p.integer("bits")) {}
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext&) const override {
        return std::make_unique<TovaLayer>(budget_, gqa_, bits_);
    }

  private:
    Budget budget_;
    GqaReduce gqa_;
    int bits_;
};

}  // namespace

PolicyEntry policy_tova() {
    PolicyEntry e;
    e.info.name = "tova";
    e.info.summary = "TOVA: evict the token the current query attends least";
    e.info.details =
        "Score = the attention of the most recent query (combined over the group's heads with "
        "gqa=, TOVA's paper averages heads). Each step, while over budget, the lowest-scored "
        "token is evicted; the newest token is kept (TOVA evicts after the new query attended). "
        "Prefill mode: the last prompt query's attention decides the cut at position P.";
    e.info.params = {param_budget(), param_gqa(), param_bits(), param_group()};
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<Tova>(p); };
    return e;
}

}  // namespace kvs::sim
