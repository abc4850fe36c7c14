// dynamickv (Zhou et al. 2024, seed 004): task-aware per-layer budgets. At the planning step
// each layer's tokens are scored by the attention of the last `ws` queries (pooled like SnapKV);
// going up the layers, each keeps at most r_max * budget candidates, and every `m` layers one
// top-k over the candidates of all layers so far (k = budget * layers so far) re-divides the
// budget among them; a layer trimmed once cannot grow back. The final counts are each layer's
// share; tokens are then selected inside each layer as in snapkv.
#include <fmt/format.h>

#include <cmath>

#include "engine/error.h"
#include "snap.h"

namespace kvs::sim {

namespace {

struct DynPlan {
    std::vector<double> scale;  // per replayed layer slot: its scored budget / the average one
    int64_t step = 0;           // the planning step
};

class DynamicKv final : public Policy {
  public:
    explicit DynamicKv(const Params& p)
        : p_(detail::snap_params(p, "dynamickv")), m_(p.integer("m")), r_max_(p.real("r_max")) {}
    bool plans_from_rows() const override { return true; }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        const auto* plan = static_cast<const DynPlan*>(c.plan);
        const double share = plan ? plan->scale[size_t(c.slot)] : 1.0;
        const int64_t from = plan ? plan->step : 0;
        return std::make_unique<detail::SnapLayer>(
            p_, c,
            [share, from](int64_t C, int64_t n, int64_t w,
                          const std::vector<std::vector<float>>& cand) {
                const double s = n >= from ? share : 1.0;
                return std::vector<int64_t>(
                    cand.size(), int64_t(std::floor(s * double(std::max<int64_t>(0, C - w)))));
            });
    }
    std::shared_ptr<const void> plan(const PlanContext& c) const override {
        KVS_ASSERT(c.read);
        auto out = std::make_shared<DynPlan>();
        const size_t L = c.layers.size();
        out->scale.assign(L, 1.0);
        const int64_t t0 = detail::plan_step(c, p_.budget);
        if (t0 < 0) return out;  // never over budget: uniform
        out->step = t0;
        const int64_t per = detail::plan_capacity(c, p_.budget, t0);
        const int ws = int(std::min<int64_t>({int64_t(p_.window), t0, per}));
        // Per layer: the candidates are the pooled window scores of all its KV heads.
        std::vector<std::vector<float>> cand(L);
        const int64_t bs = std::max<int64_t>(0, per - ws) * c.n_kv;  // layer budget beyond window
        const int64_t cap = int64_t(std::floor(r_max_ * double(bs)));
        std::vector<int64_t> budget(L, 0);
        for (size_t s = 0; s < L; ++s) {
            std::vector<float> layer_scores;
            for (int g = 0; g < c.n_kv; ++g) {
                const std::vector<float> pooled =
                    detail::plan_scores(c, p_, c.layers[s], g, t0, ws);
                layer_scores.insert(layer_scores.end(), pooled.begin(), pooled.end());
            }
            std::sort(layer_scores.begin(), layer_scores.end(), std::greater<float>());
            if (int64_t(layer_scores.size()) > cap) layer_scores.resize(size_t(cap));
            cand[s] = std::move(layer_scores);
            budget[s] = int64_t(cand[s].size());
            // Every m layers (and at the last): re-divide budget * layers-so-far among them.
            if ((s + 1) % size_t(m_) == 0 || s + 1 == L) {
                struct C {
                    float v;
                    size_t layer;
                };
                std::vector<C> all;
                for (size_t j = 0; j <= s; ++j)
                    for (float v : cand[j]) all.push_back({v, j});
                const int64_t k = std::min<int64_t>(int64_t(all.size()), bs * int64_t(s + 1));
                std::stable_sort(all.begin(), all.end(), [](const C& a, const C& b) {
                    return a.v != b.v ? a.v > b.v : a.layer < b.layer;
                });
                std::vector<int64_t> cnt(s + 1, 0);
                for (int64_t r = 0; r < k; ++r) ++cnt[all[size_t(r)].layer];
                for (size_t j = 0; j <= s; ++j) {
                    cand[j].resize(size_t(std::min<int64_t>(int64_t(cand[j].size()), cnt[j])));
                    budget[j] = int64_t(cand[j].size());
                }
            }
        }
        // The scored budget of layer s over the average one (the window comes on top).
        for (size_t s = 0; s < L; ++s)
            out->scale[s] = bs > 0 ? double(budget[s]) / double(bs) : 1.0;
        return out;
    }

  private:
    detail::SnapParams p_;
    int m_;
    double r_max_;
};

}  // namespace

PolicyEntry policy_dynamickv() {
    PolicyEntry e;
    e.info.name = "dynamickv";
    e.info.summary = "DynamicKV: task-aware per-layer budgets from the last `ws` queries";
    e.info.details =
        "Plan (once, before the replay): at the planning step (P in prefill mode; in stream "
        "mode the first step where the cache exceeds the budget) every layer scores its tokens "
        "with the attention of the last `ws` queries (full attention, nothing evicted yet), "
        "pooled over `kernel` positions, averaged over the query heads of each KV head. Going up "
        "the layers each keeps at most r_max * (budget - ws) * n_kv candidates; every `m` layers "
        "one top-k over the candidates of all layers so far (k = (budget - ws) * n_kv * layers so "
        "far) re-divides the budget, trimming layers that lost; a trimmed layer cannot grow back. "
        "A layer's final count over the average is its share of the scored budget (budget - ws; "
        "every layer keeps the full window); tokens are then selected per KV head as in snapkv "
        "(pooling over the candidates only, kernel 5 avg as DynamicKV's init_dynamickv_V11, "
        "methods/dynamic_v11.py:141-150). Paper mode: prefill (planning step P). Stream mode: at "
        "the first step over budget every layer has exactly its budget of candidates, which "
        "makes any allocation uniform, so the shares are planned at twice that step (from the "
        "trace's full attention there) and apply from then on; before it dynamickv is snapkv.";
    e.info.params = detail::snap_param_defs();
    // DynamicKV names its observation window ws.
    e.info.params.erase(e.info.params.begin() + 1);
    e.info.params.insert(e.info.params.begin() + 1, param_int("ws", "32", 1, 1e6,
                                                              "window: last queries scored, newest "
                                                              "tokens always kept"));
    e.info.params.push_back(param_int("m", "4", 1, 1e6, "re-divide budgets every m layers"));
    e.info.params.push_back(
        param_real("r_max", "2", 1, 1e6, "a layer keeps at most r_max x the average budget"));
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<DynamicKv>(p); };
    return e;
}

}  // namespace kvs::sim
