// tova (Token Omission Via Attention, Oren et al. 2024): when over budget, evict the token the
// most recent query attended least. TOVA's cache (schwartz-lab-NLP/TOVA src/tova_cache.py:31-51)
// averages the last query's attention over all heads of the layer (:44), keeps the top
// cache_size tokens (:45) and gathers the same indices in every KV head (:47-51), after the new
// query attended (cache_size + 1 keys at attention).
//
// kvscope's budget B counts the newest token: B = TOVA's cache_size + 1. At update(t) token t is
// kept (no query has scored it yet) and the rest are ranked by query t-1's attention: this equals
// TOVA's decisions step for step (tests/reference/tova.py). scope=layer (default): the mean over
// all query heads of the layer, one decision for every KV head. scope=head: each KV head by its
// own query heads (combined with gqa=), the old kvscope behaviour. Ties: the lower score is
// evicted first, then the older token.
#include "common.h"
#include "engine/error.h"

namespace kvs::sim {

namespace {

class TovaLayer final : public LayerPolicy {
  public:
    TovaLayer(Budget b, bool layer_scope, GqaReduce gqa, int bits, int n_head)
        : budget_(b), layer_(layer_scope), gqa_(gqa), bits_(bits), n_head_(n_head) {}
    int64_t budget_tokens(int64_t t, int) const override { return budget_.tokens(t + 1); }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const int64_t keep = budget_tokens(t, 0);
        if (!layer_ || units.empty()) {
            for (auto& u : units) {
                detail::evict_to(u, keep, detail::protect(u, u.scores(), 0, 1));
                detail::store_at(u, bits_);
            }
            return;
        }
        // Every unit holds the same positions: one score per position, the sum over every query
        // head of the layer (each unit's score is its group's sum) over n_head.
        UnitStore& u0 = units[0];
        const int n = u0.size();
        std::vector<float> mean(size_t(n), 0.0f);
        for (auto& u : units) {
            KVS_ASSERT(u.size() == n);
            for (int i = 0; i < n; ++i) mean[size_t(i)] += u.scores()[size_t(i)];
        }
        for (auto& x : mean) x /= float(n_head_);
        const std::vector<float> key = detail::protect(u0, mean, 0, 1);
        if (n > keep) {
            std::vector<int> order(static_cast<size_t>(n));
            std::iota(order.begin(), order.end(), 0);
            const int n_drop = int(n - keep);
            std::partial_sort(order.begin(), order.begin() + n_drop, order.end(),
                              [&](int a, int b) {
                                  const float ka = key[size_t(a)], kb = key[size_t(b)];
                                  return ka != kb ? ka < kb : a < b;
                              });
            std::vector<uint8_t> drop(size_t(n), 0);
            for (int i = 0; i < n_drop; ++i) drop[size_t(order[size_t(i)])] = 1;
            for (auto& u : units) u.evict_mask(drop);
        }
        for (auto& u : units) detail::store_at(u, bits_);
    }
    void observe(int64_t, int, const float* probs, int n_q, UnitStore& u) override {
        // The score is the last query's attention only (replaced, not accumulated); with
        // scope=layer the sum over the group's heads (the layer mean is taken in update()).
        reduce_gqa(probs, n_q, u.size(), layer_ ? GqaReduce::sum : gqa_, u.scores().data());
    }

  private:
    Budget budget_;
    bool layer_;
    GqaReduce gqa_;
    int bits_, n_head_;
};

class Tova final : public Policy {
  public:
    explicit Tova(const Params& p)
        : budget_(p.budget()),
          layer_(p.str("scope") == "layer"),
          gqa_(p.gqa()),
          bits_(p.integer("bits")) {}
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        return std::make_unique<TovaLayer>(budget_, layer_, gqa_, bits_, c.n_head);
    }

  private:
    Budget budget_;
    bool layer_;
    GqaReduce gqa_;
    int bits_;
};

}  // namespace

PolicyEntry policy_tova() {
    PolicyEntry e;
    e.info.name = "tova";
    e.info.summary = "TOVA: evict the token the current query attends least";
    e.info.details =
        "Paper mode: stream. Score = the attention of the most recent query. scope=layer "
        "(default, TOVA's tova_cache.py:44-51): averaged over all query heads of the layer, and "
        "the same token is dropped in every KV head; scope=head: each KV head by its own query "
        "heads combined with gqa= (gqa is ignored with scope=layer). Each step, while over "
        "budget, the lowest-scored token is evicted; the newest token is kept (TOVA evicts after "
        "the new query attended: budget = TOVA's cache_size + 1). Prefill mode: the last prompt "
        "query's attention decides the cut at position P. Ties: lower score evicted first, then "
        "the older token.";
    e.info.params = {param_budget(),
                     param_choice("scope", "layer", {"layer", "head"},
                                  "layer: one decision per layer from the mean of all its heads; "
                                  "head: per KV head"),
                     param_gqa(), param_bits(), param_group()};
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<Tova>(p); };
    return e;
}

}  // namespace kvs::sim
