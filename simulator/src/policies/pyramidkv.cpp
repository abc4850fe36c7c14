// pyramidkv (Cai et al. 2024): SnapKV scoring with per-layer budgets that shrink linearly with
// depth, keeping the same total: layer l of n gets budget * (k0 - (k0 - k1) * l / (n - 1)) with
// k1 = 1 / beta at the top and k0 = 2 - k1 at the bottom (their mean is 1).
#include "snap.h"

namespace kvs::sim {

namespace {

class PyramidKv final : public Policy {
  public:
    explicit PyramidKv(const Params& p) : p_(detail::snap_params(p)), beta_(p.real("beta")) {}
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        const double k1 = 1.0 / beta_, k0 = 2.0 - k1;
        const double f = c.n_layer > 1 ? double(c.layer) / double(c.n_layer - 1) : 0.0;
        return std::make_unique<detail::SnapLayer>(p_, c.n_tokens, c.n_kv, k0 - (k0 - k1) * f);
    }

  private:
    detail::SnapParams p_;
    double beta_;
};

}  // namespace

PolicyEntry policy_pyramidkv() {
    PolicyEntry e;
    e.info.name = "pyramidkv";
    e.info.summary = "PyramidKV: SnapKV scoring, budgets shrinking linearly with layer depth";
    e.info.details =
        "Layer l of the model's n layers holds floor(budget * (k0 - (k0 - k1) * l / (n-1))) "
        "tokens per KV head, k1 = 1/beta (top), k0 = 2 - k1 (bottom): the mean over all layers is "
        "the budget. Selection and modes as snapkv. Replaying a subset of layers keeps each "
        "layer's share of the whole model.";
    e.info.params = detail::snap_param_defs();
    e.info.params.push_back(
        param_real("beta", "20", 1, 1e6, "top layer gets budget/beta, bottom 2*budget - that"));
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<PyramidKv>(p); };
    return e;
}

}  // namespace kvs::sim
