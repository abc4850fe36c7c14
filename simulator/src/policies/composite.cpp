// composite (seed 002): attention-guided, layer-adaptive composite tokens. The abstract: token
// importance from aggregated attention; every KV head selects its own tokens; the heads'
// selections are aligned into composite tokens so that every head of a layer keeps the same
// count (a uniform [layer, n_l, head, d] cache: slot i of every head is one composite token); a
// global allocation divides one total budget into the per-layer counts n_l, more to layers with
// informative tokens.
//
// kvscope's reading (the abstract leaves these open; each is a parameter, docs/policies.md):
//   importance  SnapKV's (snap.h): the last `window` queries' attention over the tokens before the
//               window, reduced over the query heads of a KV head (gqa), pooled (kernel, pool).
//   composite   head g's candidates sorted by score: composite token i of a layer is the i-th
//               best token of every head; its score is the mean (agg=mean) or the max (agg=max)
//               over the heads of their i-th best score. A layer of n_l composite tokens keeps
//               each head's top n_l: the selection is per head, the count per layer.
//   allocation  one top-k over the composite tokens of all layers, k = layers x (budget - window):
//               since each layer's composite scores fall with i, the top-k takes a prefix of each
//               layer, and that prefix's length is n_l. Every layer first gets
//               floor(min_ratio x (budget - window)) and none more than
//               floor(max_ratio x (budget - window)) (both clamped to its candidates).
//               norm=none compares raw attention mass across layers (every query's attention
//               sums to 1 in every layer, so the mass is comparable); norm=layer divides each
//               layer's composite scores by their sum first (allocation by concentration, not by
//               mass).
//   window      the last `window` tokens are kept in every head on top of n_l, as in SnapKV.
// Ties in the top-k: the higher score, then the lower layer, then the better rank.
#include <fmt/format.h>

#include <cmath>

#include "engine/error.h"
#include "snap.h"

namespace kvs::sim {

namespace {

struct CompositePlan {
    std::vector<int64_t> n;  // per replayed layer slot: composite tokens (scored, per head)
    int64_t base = 0;        // the average: budget - window at the plan step
    int64_t step = 0;        // the plan step
};

class Composite final : public Policy {
  public:
    explicit Composite(const Params& p)
        : p_(detail::snap_params(p, "composite")),
          agg_max_(p.str("agg") == "max"),
          norm_layer_(p.str("norm") == "layer"),
          min_ratio_(p.real("min_ratio")),
          max_ratio_(p.real("max_ratio")) {}
    bool plans_from_rows() const override { return true; }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        const auto* plan = static_cast<const CompositePlan*>(c.plan);
        const int64_t n = plan ? plan->n[size_t(c.slot)] : -1;
        const int64_t base = plan ? plan->base : 0, from = plan ? plan->step : 0;
        return std::make_unique<detail::SnapLayer>(
            p_, c,
            [n, base, from](int64_t C, int64_t t, int64_t w,
                            const std::vector<std::vector<float>>& cand) {
                const int64_t b = std::max<int64_t>(0, C - w);
                // Before the plan step (stream mode), without a plan or without a scored
                // budget at the plan step: uniform. A fraction budget moves C in stream mode:
                // the planned count is scaled (exactly n where b is the planned base).
                int64_t k = b;
                if (n >= 0 && t >= from && base > 0)
                    k = int64_t(std::floor(double(n) * double(b) / double(base) + 1e-9));
                return std::vector<int64_t>(cand.size(), k);
            });
    }
    std::shared_ptr<const void> plan(const PlanContext& c) const override {
        KVS_ASSERT(c.read);
        auto out = std::make_shared<CompositePlan>();
        const size_t L = c.layers.size();
        out->n.assign(L, -1);
        const int64_t t0 = detail::plan_step(c, p_.budget);
        if (t0 < 0) return out;  // never over budget: uniform
        const int64_t C = detail::plan_capacity(c, p_.budget, t0);
        const int ws = int(std::min<int64_t>({int64_t(p_.window), t0, C}));
        const int64_t base = std::max<int64_t>(0, C - ws);
        out->base = base;
        out->step = t0;
        // Each layer's composite scores, best first.
        std::vector<std::vector<double>> comp(L);
        for (size_t s = 0; s < L; ++s) {
            std::vector<double>& cs = comp[s];
            for (int g = 0; g < c.n_kv; ++g) {
                std::vector<float> h = detail::plan_scores(c, p_, c.layers[s], g, t0, ws);
                std::sort(h.begin(), h.end(), std::greater<float>());
                if (cs.empty()) cs.assign(h.size(), 0.0);
                for (size_t i = 0; i < h.size(); ++i)
                    cs[i] = agg_max_ ? std::max(cs[i], double(h[i])) : cs[i] + double(h[i]);
            }
            if (!agg_max_)
                for (double& x : cs) x /= double(c.n_kv);
            if (norm_layer_) {
                double z = 0;
                for (double x : cs) z += x;
                if (z > 0)
                    for (double& x : cs) x /= z;
            }
        }
        // Floors first, then one top-k over the rest (each layer's list falls: prefixes).
        const int64_t lo_n = int64_t(std::floor(min_ratio_ * double(base)));
        const int64_t hi_n = int64_t(std::floor(max_ratio_ * double(base) + 1e-9));
        int64_t left = base * int64_t(L);
        struct E {
            double v;
            size_t layer;
            int64_t rank;
        };
        std::vector<E> rest;
        for (size_t s = 0; s < L; ++s) {
            const int64_t m = int64_t(comp[s].size());
            out->n[s] = std::min(m, lo_n);
            left -= out->n[s];
            for (int64_t i = out->n[s]; i < std::min(m, hi_n); ++i)
                rest.push_back({comp[s][size_t(i)], s, i});
        }
        const int64_t k = std::clamp<int64_t>(left, 0, int64_t(rest.size()));
        std::partial_sort(rest.begin(), rest.begin() + k, rest.end(), [](const E& a, const E& b) {
            if (a.v != b.v) return a.v > b.v;
            if (a.layer != b.layer) return a.layer < b.layer;
            return a.rank < b.rank;
        });
        for (int64_t r = 0; r < k; ++r) ++out->n[rest[size_t(r)].layer];
        return out;
    }

  private:
    detail::SnapParams p_;
    bool agg_max_, norm_layer_;
    double min_ratio_, max_ratio_;
};

}  // namespace

PolicyEntry policy_composite() {
    PolicyEntry e;
    e.info.name = "composite";
    e.info.summary =
        "seed 002: composite tokens (every head of a layer keeps the same count of its own "
        "tokens), per-layer counts from one global top-k";
    e.info.details =
        "Plan (once, at the plan step: P in prefill mode): every layer scores its tokens as "
        "snapkv does (the last `window` queries' attention, gqa-reduced, pooled); each KV head "
        "sorts its candidates, and composite token i of a layer is the i-th best token of every "
        "head, scored by the mean (agg=mean) or max (agg=max) of the heads' i-th scores "
        "(norm=layer: divided by the layer's total first). Every layer gets floor(min_ratio x "
        "(budget - window)) composite tokens, then one top-k over the other composite tokens of "
        "all layers (at most floor(max_ratio x (budget - window)) per layer) shares out the rest "
        "of layers x (budget - window): layer l keeps n_l, the same count in every KV head "
        "(uniform [layer, n_l, head, d] layout), each head its own top n_l, plus the window. The "
        "abstract leaves the aggregation, the normalisation across layers, the per-layer "
        "bounds and the window open: these are kvscope's choices, each a parameter. Paper "
        "mode: prefill. Stream mode: as dynamickv, the counts are planned at twice the first "
        "step over budget and apply from then on (before it composite is snapkv); live it runs "
        "in prefill mode only (the plan needs the whole prompt through every layer). Ties: the "
        "higher score, then the lower layer.";
    e.info.params = detail::snap_param_defs();
    e.info.params.push_back(param_choice("agg", "mean", {"mean", "max"},
                                         "a composite token's score from its heads' scores"));
    e.info.params.push_back(param_choice(
        "norm", "none", {"none", "layer"},
        "across layers: raw attention mass (none) or each layer's scores over their sum"));
    e.info.params.push_back(param_real("min_ratio", "0.2", 0, 1,
                                       "a layer keeps at least min_ratio x (budget - window)"));
    e.info.params.push_back(param_real("max_ratio", "2", 1, 1e6,
                                       "a layer keeps at most max_ratio x (budget - window)"));
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<Composite>(p); };
    return e;
}

}  // namespace kvs::sim
