// The SnapKV selection shared by snapkv, pyramidkv and dynamickv (adakv reuses the scorer): the
// attention of the last `window` queries, pooled along positions with `kernel`, ranks the held
// tokens; the newest `window` tokens are always kept. A selection is (re)made when the cache is
// over budget and the last one is `every` steps old or more (in prefill mode the first is at P);
// between selections, tokens appended since the last one are kept and the lowest-scored older
// ones make room, so the budget holds at every step.
#pragma once
#include "common.h"

namespace kvs::sim::detail {

struct SnapParams {
    Budget budget;
    int window = 32, kernel = 7, every = 16, bits = 16;
    bool max_pool = true;
    GqaReduce gqa = GqaReduce::mean;
};

inline SnapParams snap_params(const Params& p) {
    SnapParams s;
    s.budget = p.budget();
    s.window = p.values.count("window") ? p.integer("window") : p.integer("ws");
    s.kernel = p.integer("kernel");
    s.every = p.integer("every");
    s.bits = p.integer("bits");
    s.max_pool = p.str("pool") == "max";
    s.gqa = p.gqa();
    return s;
}

inline std::vector<ParamDef> snap_param_defs() {
    return {param_budget(),
            param_int("window", "32", 1, 1e6,
                      "observation window: last queries scored, and "
                      "newest tokens always kept (at most half the budget)"),
            param_int("kernel", "7", 1, 1e6, "pooling width along positions"),
            param_choice("pool", "max", {"max", "avg"}, "pooling kind"),
            param_int("every", "16", 1, 1e9,
                      "re-select at most every this many steps when over budget"),
            param_gqa(),
            param_bits(),
            param_group()};
}

// Per-unit state of the SnapKV scorer.
class SnapUnit {
  public:
    SnapUnit(int64_t n_tokens, const SnapParams& p) : p_(p), ow_(n_tokens, p.window) {}
    // Refreshes the unit's scores if a selection is due; returns the eviction keys.
    std::vector<float> keys(int64_t t, UnitStore& u, int64_t keep) {
        // Tokens appended since the last selection are kept unscored; re-select before they
        // could fill half the budget.
        const int64_t every = std::min<int64_t>(p_.every, std::max<int64_t>(1, keep / 2));
        if (last_sel_ < 0 || t - last_sel_ >= every) {
            u.scores() = ow_.pooled(u, p_.kernel, p_.max_pool);
            last_sel_ = t;
        }
        std::vector<float> key = u.scores();
        const int n = u.size();
        for (int i = 0; i < n; ++i)
            if (i >= n - recent_cap(p_.window, keep) || u.pos(i) >= last_sel_)
                key[size_t(i)] = kProtected;
        return key;
    }
    void observe(const float* probs, int n_q, const UnitStore& u) {
        row_.resize(size_t(u.size()));
        reduce_gqa(probs, n_q, u.size(), p_.gqa, row_.data());
        ow_.add(u, row_.data());
    }

  private:
    SnapParams p_;
    ObservationWindow ow_;
    int64_t last_sel_ = -1;
    std::vector<float> row_;
};

// A layer where every unit gets scale * budget tokens (snapkv: 1; pyramidkv / dynamickv: the
// layer's share).
class SnapLayer final : public LayerPolicy {
  public:
    SnapLayer(const SnapParams& p, int64_t n_tokens, int n_kv, double scale)
        : p_(p), scale_(scale) {
        for (int g = 0; g < n_kv; ++g) units_.emplace_back(n_tokens, p);
    }
    int64_t budget_tokens(int64_t t, int) const override {
        return std::max<int64_t>(1, int64_t(std::floor(scale_ * double(p_.budget.tokens(t + 1)))));
    }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const int64_t keep = budget_tokens(t, 0);
        for (size_t g = 0; g < units.size(); ++g) {
            UnitStore& u = units[g];
            if (u.size() > keep) evict_to(u, keep, units_[g].keys(t, u, keep));
            store_at(u, p_.bits);
        }
    }
    void observe(int64_t, int g, const float* probs, int n_q, UnitStore& u) override {
        units_[size_t(g)].observe(probs, n_q, u);
    }
    int64_t first_observed_step(int64_t first_update) const override {
        return std::max<int64_t>(0, first_update - p_.window);
    }

  private:
    SnapParams p_;
    double scale_;
    std::vector<SnapUnit> units_;
};

}  // namespace kvs::sim::detail
