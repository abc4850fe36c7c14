// pyramidkv (Cai et al. 2024): SnapKV scoring with per-layer budgets that shrink linearly with
// depth, keeping the same total. Only the scored part B - w is scaled; every layer keeps the full
// window. The rule is KVCache-Factory's (pyramidkv/pyramidkv_utils.py:360-375, GQA path
// :449-465), with q_len = the tokens before the selection:
//   m = B - w;  min = floor(m / beta);  max = 2m - min
//   if max >= q_len - w:  max = q_len - w;  min = 2m - max        (the bottom layer's clamp)
//   steps = (max - min) // (L - 1);  layer l keeps max - l * steps scored tokens + the window
//   q_len < B: nothing is evicted;  q_len < 2m: every layer keeps m (plain SnapKV).
#include "snap.h"

namespace kvs::sim {

namespace {

// Scored tokens of layer `layer` of `n_layer` (PyramidKV's rule above; C = SnapKV capacity).
int64_t pyramid_scored(int64_t C, int64_t w, double beta, int layer, int n_layer, int64_t q_len) {
    const int64_t m = C - w;
    if (q_len < C) return q_len;  // not compressed (pyramidkv_utils.py:373)
    if (q_len < 2 * m) return m;  // uniform SnapKV (pyramidkv_utils.py:375)
    int64_t mn = int64_t(std::floor(double(m) / beta));
    int64_t mx = 2 * m - mn;
    if (mx >= q_len - w) {
        mx = q_len - w;
        mn = 2 * m - mx;
    }
    const int64_t steps = n_layer > 1 ? (mx - mn) / int64_t(n_layer - 1) : 0;  // mx >= mn here
    return mx - int64_t(layer) * steps;
}

class PyramidKv final : public Policy {
  public:
    explicit PyramidKv(const Params& p)
        : p_(detail::snap_params(p, "pyramidkv")), beta_(p.real("beta")) {}
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        const double beta = beta_;
        const int layer = c.layer, L = c.n_layer;
        return std::make_unique<detail::SnapLayer>(
            p_, c,
            [beta, layer, L](int64_t C, int64_t n, int64_t w,
                             const std::vector<std::vector<float>>& cand) {
                return std::vector<int64_t>(
                    cand.size(), std::max<int64_t>(0, pyramid_scored(C, w, beta, layer, L, n)));
            });
    }

  private:
    detail::SnapParams p_;
    double beta_;
};

}  // namespace

PolicyEntry policy_pyramidkv() {
    PolicyEntry e;
    e.info.name = "pyramidkv";
    e.info.summary = "PyramidKV: SnapKV scoring, scored budgets shrinking linearly with depth";
    e.info.details =
        "Paper mode: prefill. Layer l of the model's L layers keeps the window plus max - l * "
        "steps scored tokens, m = budget - window, min = floor(m / beta), max = 2m - min, steps "
        "= (max - min) // (L - 1) (integer, as KVCache-Factory's pyramidkv_utils.py:360-369; so "
        "the top layer keeps a little more than min); when max >= q_len - window the bottom "
        "layer keeps every candidate (max = q_len - window, min = 2m - max); a prompt shorter "
        "than 2m is compressed uniformly as snapkv (:375). Only the scored part is scaled: every "
        "layer keeps the full window. Selection, pooling, modes as snapkv (defaults kernel 5, "
        "avg, KVCache-Factory's init_pyramidkv :1238-1250). Replaying a subset of layers keeps "
        "each layer's share of the whole model.";
    e.info.params = detail::snap_param_defs("5", "avg");
    e.info.params.push_back(param_real("beta", "20", 1, 1e6,
                                       "the top layer's scored budget is (budget - window)/beta"));
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<PyramidKv>(p); };
    return e;
}

}  // namespace kvs::sim
