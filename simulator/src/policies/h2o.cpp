// h2o (Heavy-Hitter Oracle, Zhang et al. 2023): each token's score is the attention it has
// accumulated from every query that saw it; the cache keeps the `recent` newest tokens plus the
// heaviest hitters. The official real-drop cache (FMInference/H2O
// h2o_hf/utils_real_drop/modify_llama.py:242-326): scores accumulate over queries (:317-326);
// once the cache exceeds hh_size + recent_size it keeps the top hh_size scores among the tokens
// older than the recent window plus the newest recent_size (:269-285), and it evicts after the
// new token's query attended (so a new token is scored by its own query before it can go). The
// paper's default splits the budget into equal heavy and recent halves (heavy_ratio = recent_ratio,
// h2o_hf/run_text_generation.py:106-107).
//
// kvscope's budget B counts the newest token (it is held when its query attends): B = H2O's
// cache_size + 1. At update(t) token t has not been attended yet and is kept; of the others the
// newest `recent` are kept and the top B - 1 - recent by accumulated score. This equals H2O's
// decisions step for step (tests/reference/h2o.py). Default recent = (B - 1) / 2, rounded down.
// Ties: the lower score is evicted first, then the older token.
#include "common.h"
#include "engine/error.h"

namespace kvs::sim {

namespace {

class H2oLayer final : public LayerPolicy {
  public:
    H2oLayer(Budget b, int recent, GqaReduce gqa, int bits)
        : budget_(b), recent_(recent), gqa_(gqa), bits_(bits) {}
    int64_t budget_tokens(int64_t t, int) const override { return budget_.tokens(t + 1); }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const int64_t keep = budget_tokens(t, 0);
        const int64_t C = std::max<int64_t>(0, keep - 1);  // H2O's cache_size
        const int64_t r = recent_ < 0 ? C / 2 : std::min<int64_t>(recent_, C);
        for (auto& u : units) {
            detail::evict_to(u, keep, detail::protect(u, u.scores(), 0, int(r + 1)));
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
          bits_(p.integer("bits")) {
        if (budget_.set && !budget_.fraction && recent_ >= 0 && budget_.value < recent_ + 1)
            fail(
                "policy 'h2o': budget {} is below the recent window: budget must be >= recent + 1 "
                "= {}",
                budget_.text, recent_ + 1);
    }
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
        "Paper mode: stream. Score = sum of the attention a token received from every query that "
        "saw it (over the tokens held at that step; query heads of a KV head combined with gqa=). "
        "The budget counts the newest token, which is kept until its own query has scored it "
        "(H2O evicts after attention: B = H2O's cache_size + 1); of the rest the newest `recent` "
        "and the top B - 1 - recent by score are kept. Default recent=-1: (B - 1)/2, H2O's equal "
        "heavy and recent halves (run_text_generation.py:106-107); recent=0 keeps only heavy "
        "hitters (and the new token for its first step); the old kvscope default was recent=31 "
        "with the new token. Prefill mode: the prompt's queries score the prompt before the "
        "first eviction at P. Ties: lower score evicted first, then the older token.";
    e.info.params = {param_budget(),
                     param_int("recent", "-1", -1, 1e9,
                               "newest tokens kept besides the new one (-1: (budget - 1) / 2)"),
                     param_gqa(), param_bits(), param_group()};
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<H2o>(p); };
    return e;
}

}  // namespace kvs::sim
