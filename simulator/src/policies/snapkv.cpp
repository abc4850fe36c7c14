// snapkv (Li et al. 2024): a prefill-time selection by the attention of the prompt's last
// `window` queries, pooled along positions. See snap.h for how it runs step by step.
#include "snap.h"

namespace kvs::sim {

namespace {

class SnapKv final : public Policy {
  public:
    explicit SnapKv(const Params& p) : p_(detail::snap_params(p)) {}
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        return std::make_unique<detail::SnapLayer>(p_, c.n_tokens, c.n_kv, 1.0);
    }

  private:
    detail::SnapParams p_;
};

}  // namespace

PolicyEntry policy_snapkv() {
    PolicyEntry e;
    e.info.name = "snapkv";
    e.info.summary = "SnapKV: keep the tokens the last `window` queries attend to (pooled)";
    e.info.details =
        "Prefill-style. Prefill mode: at position P the prompt's last `window` queries score the "
        "prompt (max/avg pooled over `kernel` positions); the newest `window` tokens and the top "
        "scored others are kept. Stream mode (and decode after P): the selection is re-applied "
        "every `every` steps with the last `window` queries as the observation window; between "
        "selections (at most budget/2 steps apart) the lowest-scored older token makes room for "
        "each "
        "new one, so the budget "
        "holds at every step.";
    e.info.params = detail::snap_param_defs();
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<SnapKv>(p); };
    return e;
}

}  // namespace kvs::sim
