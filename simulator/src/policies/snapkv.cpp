// snapkv (Li et al. 2024): a prefill-time selection by the attention of the prompt's last
// `window` queries, pooled along positions. See snap.h for the rule and how it runs step by step.
// Defaults as SnapKV's own repository: window 32, kernel 5, avg pooling
// (FasterDecoding/SnapKV snapkv/monkeypatch/snapkv_utils.py:74-81).
#include "snap.h"

namespace kvs::sim {

namespace {

class SnapKv final : public Policy {
  public:
    explicit SnapKv(const Params& p) : p_(detail::snap_params(p, "snapkv")) {}
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        return std::make_unique<detail::SnapLayer>(p_, c, detail::uniform_alloc());
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
        "Paper mode: prefill. At position P the prompt's last `window` queries score the prompt "
        "tokens before the window (attention summed over the window queries, averaged over the "
        "query heads of each KV head with gqa=mean, then pooled over `kernel` positions: "
        "pool=avg divides by the kernel as torch's avg_pool1d(padding=kernel//2) does, "
        "pool=max is max_pool1d; pooling covers only those candidates, never the window); the "
        "top budget - window candidates and the window are kept (budget = SnapKV's "
        "max_capacity_prompt), then decoding adds its tokens without eviction, as in SnapKV. "
        "Defaults as SnapKV's repository (window 32, kernel 5, avg; snapkv_utils.py:74-81); "
        "Ada-KV's code uses kernel=7,pool=max. Stream mode (kvscope's extension): the selection "
        "is re-made every `every` steps (at most budget/2) while over budget, with budget counting "
        "the newest token; between selections the lowest-scored candidate makes room. Ties: "
        "lower score evicted first, then the older token.";
    e.info.params = detail::snap_param_defs("5", "avg");
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<SnapKv>(p); };
    return e;
}

}  // namespace kvs::sim
