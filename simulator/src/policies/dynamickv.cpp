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

// Layer slot s keeps floor(num[s] * (C - ws) / den) scored tokens per KV head from the planning
// step on (at the plan C - ws = base: official, num = its tokens per head, den = base; capped,
// num = its candidates over all heads, den = base * n_kv). den = 0: uniform (never over budget).
struct DynPlan {
    std::vector<int64_t> num;
    int64_t den = 0;
    int64_t step = 0;
};

// One top-k over the scores of layers [0, n) (ties: the lower layer first, then the order of
// the scores): how many of the k fall in each layer.
std::vector<int64_t> topk_counts(const std::vector<std::vector<float>>& scores, size_t n,
                                 int64_t k) {
    struct C {
        float v;
        size_t layer;
    };
    std::vector<C> all;
    for (size_t j = 0; j < n; ++j)
        for (float v : scores[j]) all.push_back({v, j});
    k = std::min<int64_t>(k, int64_t(all.size()));
    std::stable_sort(all.begin(), all.end(), [](const C& a, const C& b) {
        return a.v != b.v ? a.v > b.v : a.layer < b.layer;
    });
    std::vector<int64_t> cnt(n, 0);
    for (int64_t r = 0; r < k; ++r) ++cnt[all[size_t(r)].layer];
    return cnt;
}

class DynamicKv final : public Policy {
  public:
    explicit DynamicKv(const Params& p)
        : p_(detail::snap_params(p, "dynamickv")),
          m_(p.integer("m")),
          r_max_(p.real("r_max")),
          capped_(p.str("alloc") == "capped") {}
    bool plans_from_rows() const override { return true; }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        const auto* plan = static_cast<const DynPlan*>(c.plan);
        const int64_t num = plan && plan->den > 0 ? plan->num[size_t(c.slot)] : 1;
        const int64_t den = plan && plan->den > 0 ? plan->den : 1;
        const int64_t from = plan ? plan->step : 0;
        return std::make_unique<detail::SnapLayer>(
            p_, c,
            [num, den, from](int64_t C, int64_t n, int64_t w,
                             const std::vector<std::vector<float>>& cand) {
                const int64_t scored = std::max<int64_t>(0, C - w);
                // The layer's count at the plan; later (stream mode) the same share of C - w.
                const int64_t k = n < from ? scored : num * scored / den;
                return std::vector<int64_t>(cand.size(), k);
            });
    }
    std::shared_ptr<const void> plan(const PlanContext& c) const override {
        KVS_ASSERT(c.read);
        auto out = std::make_shared<DynPlan>();
        const size_t L = c.layers.size();
        const int64_t t0 = detail::plan_step(c, p_.budget);
        if (t0 < 0) return out;  // never over budget: uniform
        out->step = t0;
        const int64_t per = detail::plan_capacity(c, p_.budget, t0);
        const int ws = int(std::min<int64_t>({int64_t(p_.window), t0, per}));
        const int64_t base = std::max<int64_t>(0, per - ws), n_pos = t0 - ws;
        // Per layer: the pooled window scores of all its KV heads over positions [0, t0 - ws).
        std::vector<std::vector<float>> scores(L);
        for (size_t s = 0; s < L; ++s)
            for (int g = 0; g < c.n_kv; ++g) {
                const std::vector<float> pooled =
                    detail::plan_scores(c, p_, c.layers[s], g, t0, ws);
                scores[s].insert(scores[s].end(), pooled.begin(), pooled.end());
            }
        if (base == 0) return out;
        if (capped_) {
            out->den = base * c.n_kv;
            out->num = plan_capped(std::move(scores), out->den);
        } else {
            out->den = base;
            out->num = plan_official(scores, base, n_pos, c.n_kv);
        }
        return out;
    }

  private:
    // DynamicKV's official allocation (DreamMr/DynamicKV, methods/dynamic_v11.py:48 and 78-137,
    // called from llama_model_impl/dynamickv_v11.py:113-131 at every layer with
    // layer_idx % 4 == 3). Going up the layers, each first keeps its top budget_size =
    // min(r_max * base, t0 - ws) tokens per head. Every m layers (n layers so far): one top-k
    // of base * n_kv * n over all scores of those layers; counts_j = (layer j's part) // n;
    // fix_j = int(budget_size * counts_j / sum(counts)); the fixes are rescaled to the whole
    // model's base * L (ss = sum(fix) / (base * L); fix_j = fix_j // ss; the remainder to the
    // current layer) and each layer is cut to min(its length, fix_j, t0 - ws).
    std::vector<int64_t> plan_official(const std::vector<std::vector<float>>& scores, int64_t base,
                                       int64_t n_pos, int n_kv) const {
        const size_t L = scores.size();
        const int64_t budget_size =
            std::min<int64_t>(int64_t(std::floor(r_max_ * double(base))), n_pos);
        const int64_t need = base * int64_t(L);
        std::vector<int64_t> len(L, budget_size);
        for (size_t s = 0; s < L; ++s) {
            // Every m layers, and at the last (the official code skips the layers after the
            // last multiple of 4: with L % 4 != 0 they would keep budget_size each).
            if ((s + 1) % size_t(m_) != 0 && s + 1 != L) continue;
            const int64_t n = int64_t(s + 1);
            std::vector<int64_t> counts = topk_counts(scores, s + 1, base * n_kv * n);
            int64_t total = 0;
            for (auto& x : counts) total += (x /= n);
            if (total == 0) continue;  // the official code would divide by 0
            std::vector<int64_t> fix(s + 1);
            int64_t sum_fix = 0;
            for (size_t j = 0; j <= s; ++j) {
                fix[j] = int64_t(double(budget_size) * (double(counts[j]) / double(total)));
                sum_fix += fix[j];
            }
            if (sum_fix > 0) {
                const double ss = double(sum_fix) / double(need);
                sum_fix = 0;
                for (size_t j = 0; j <= s; ++j) {
                    fix[j] = int64_t(std::floor(double(fix[j]) / ss));
                    sum_fix += fix[j];
                }
            }
            fix[s] += need - sum_fix;
            // A fix above the layer's length: the official slice would reach into its window
            // (holding window entries twice); kvscope keeps the length.
            for (size_t j = 0; j <= s; ++j)
                len[j] = std::max<int64_t>(0, std::min({len[j], fix[j], n_pos}));
        }
        return len;
    }

    // alloc=capped (kvscope before issue 10): each layer keeps at most r_max * bs candidates
    // (bs = base * n_kv); every m layers one top-k of bs * (layers so far) over the candidates
    // of the layers so far trims each layer to its count.
    std::vector<int64_t> plan_capped(std::vector<std::vector<float>> cand, int64_t bs) const {
        const size_t L = cand.size();
        const int64_t cap = int64_t(std::floor(r_max_ * double(bs)));
        for (size_t s = 0; s < L; ++s) {
            std::sort(cand[s].begin(), cand[s].end(), std::greater<float>());
            if (int64_t(cand[s].size()) > cap) cand[s].resize(size_t(cap));
            if ((s + 1) % size_t(m_) != 0 && s + 1 != L) continue;
            const std::vector<int64_t> cnt = topk_counts(cand, s + 1, bs * int64_t(s + 1));
            for (size_t j = 0; j <= s; ++j)
                cand[j].resize(size_t(std::min<int64_t>(int64_t(cand[j].size()), cnt[j])));
        }
        std::vector<int64_t> num(L);
        for (size_t s = 0; s < L; ++s) num[s] = int64_t(cand[s].size());
        return num;
    }

    detail::SnapParams p_;
    int m_;
    double r_max_;
    bool capped_;
};

}  // namespace

PolicyEntry policy_dynamickv() {
    PolicyEntry e;
    e.info.name = "dynamickv";
    e.info.summary = "DynamicKV: task-aware per-layer budgets from the last `ws` queries";
    e.info.details =
        "Plan (once, before the replay): at the planning step (P in prefill mode; in stream "
        "mode see below) every layer scores its tokens with the attention of the last `ws` "
        "queries (full attention, nothing evicted yet), pooled over `kernel` positions, "
        "reduced over the query heads of each KV head (`gqa`; the official code scores every "
        "query head on its own). alloc=official (DynamicKV's code, methods/dynamic_v11.py:48, "
        "78-137): going up the layers each keeps min(r_max * base, P - ws) tokens per head "
        "(base = budget - ws); every `m` layers and at the last, one top-k of base * n_kv * n "
        "over all scores of the n layers so far gives each layer a count (its part // n), "
        "normalised to sum to 1 and rescaled so that the layers' tokens sum to base * (all "
        "layers); each layer is cut to that (never grown back). alloc=capped (kvscope before "
        "issue 10): each layer keeps at most r_max * base * n_kv candidates and every m layers "
        "one top-k over the candidates so far of base * n_kv * n trims them. Every layer keeps "
        "its window on top; tokens are selected per KV head as in snapkv (pooling over the "
        "candidates only). Defaults are the official LongBench script's (run/longbench/pred.py: "
        "window 16, kernel 7, avgpool, radio_max 5; m = 4 is hard-coded there). Paper mode: "
        "prefill. Stream mode: at the first step over budget every layer has exactly its budget "
        "of candidates, which makes any allocation uniform, so the shares are planned at twice "
        "that step (from the trace's full attention there) and apply from then on; before it "
        "dynamickv is snapkv.";
    e.info.params = detail::snap_param_defs("7", "avg");
    // DynamicKV names its observation window ws.
    e.info.params.erase(e.info.params.begin() + 1);
    e.info.params.insert(e.info.params.begin() + 1, param_int("ws", "16", 1, 1e6,
                                                              "window: last queries scored, newest "
                                                              "tokens always kept"));
    e.info.params.push_back(param_int("m", "4", 1, 1e6, "re-divide budgets every m layers"));
    e.info.params.push_back(param_real("r_max", "5", 1, 1e6,
                                       "a layer keeps at most r_max x the average scored budget"));
    e.info.params.push_back(param_choice(
        "alloc", "official", {"official", "capped"},
        "official: DynamicKV's code (global top-k counts rescaled to the model's budget); "
        "capped: candidates capped per layer, top-k over the candidates (kvscope's earlier rule)"));
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<DynamicKv>(p); };
    return e;
}

}  // namespace kvs::sim
