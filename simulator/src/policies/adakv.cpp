// adakv (Feng et al. 2024): SnapKV scoring, the layer's scored budget allocated across its KV
// heads. Ada-KV's rule (FFY0/AdaKV adaptive_snapkv/monkeypatch/snapkv_utils.py, GQA path):
//   base = B - w (:303), floor = int(base * alpha) (:305)
//   one top-k of n_kv * base over the pooled scores of all heads of the layer (:453);
//   c_h = how many of those are head h's; capacity_h = round(c_h (1 - alpha) + floor) (:460,
//   torch.round: half to even); head h keeps its top capacity_h scored tokens + the window.
//   A prompt with fewer candidates than base is not compressed (:439).
// Defaults as Ada-KV's code: window 32, kernel 7, max pooling, alpha 0.2, gqa mean
// (monkeypatch.py:34, experiments/LongBench/pred.py:27-29). Ties in the layer's top-k: higher
// score first, then the lower head index, then the newer token.
#include <cmath>

#include "snap.h"

namespace kvs::sim {

namespace {

std::vector<int64_t> ada_alloc(double alpha, int64_t C, int64_t w,
                               const std::vector<std::vector<float>>& cand) {
    const int64_t base = std::max<int64_t>(0, C - w);
    const size_t G = cand.size();
    std::vector<int64_t> caps(G, base);
    for (const auto& c : cand)
        if (int64_t(c.size()) < base) return caps;  // not compressed
    struct E {
        float v;
        int g, i;
    };
    std::vector<E> all;
    for (size_t g = 0; g < G; ++g)
        for (size_t i = 0; i < cand[g].size(); ++i) all.push_back({cand[g][i], int(g), int(i)});
    const int64_t k = std::min<int64_t>(int64_t(all.size()), int64_t(G) * base);
    std::partial_sort(all.begin(), all.begin() + k, all.end(), [](const E& a, const E& b) {
        if (a.v != b.v) return a.v > b.v;
        if (a.g != b.g) return a.g < b.g;
        return a.i > b.i;
    });
    std::vector<int64_t> cnt(G, 0);
    for (int64_t r = 0; r < k; ++r) ++cnt[size_t(all[size_t(r)].g)];
    const double fl = std::floor(double(base) * alpha);
    for (size_t g = 0; g < G; ++g)
        caps[g] = int64_t(std::nearbyint(double(cnt[g]) * (1.0 - alpha) + fl));
    return caps;
}

class AdaKv final : public Policy {
  public:
    explicit AdaKv(const Params& p)
        : p_(detail::snap_params(p, "adakv")), alpha_(p.real("alpha")) {}
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        const double a = alpha_;
        auto l = std::make_unique<detail::SnapLayer>(
            p_, c, [a](int64_t C, int64_t, int64_t w, const std::vector<std::vector<float>>& cand) {
                return ada_alloc(a, C, w, cand);
            });
        l->set_per_head(true);
        return l;
    }

  private:
    detail::SnapParams p_;
    double alpha_;
};

}  // namespace

PolicyEntry policy_adakv() {
    PolicyEntry e;
    e.info.name = "adakv";
    e.info.summary = "Ada-KV: SnapKV scoring, the layer's budget allocated across its KV heads";
    e.info.details =
        "Paper mode: prefill. base = budget - window scored tokens per head on average; one "
        "top-k of n_kv * base over the pooled candidate scores of all KV heads of the layer "
        "gives head h c_h of them; head h then keeps its top round((1 - alpha) c_h + "
        "floor(alpha * base)) candidates (round half to even, as torch.round) plus the whole "
        "window (Ada-KV's snapkv_utils.py:303-305, 453-460). A layer whose heads have fewer than "
        "base candidates is not compressed. Defaults as Ada-KV's code: kernel 7, max pooling, "
        "alpha 0.2. Modes as snapkv; in stream mode the per-head capacities are re-allocated at "
        "each selection. The reported budget_tokens of a head is its capacity plus the window "
        "and the newest token (prefill: plus the decoded tokens). Ties: higher score first, then "
        "the lower head, then the newer token.";
    e.info.params = detail::snap_param_defs("7", "max");
    e.info.params.push_back(param_real(
        "alpha", "0.2", 0, 1, "share of the scored budget every head is guaranteed (floor_alpha)"));
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<AdaKv>(p); };
    return e;
}

}  // namespace kvs::sim
