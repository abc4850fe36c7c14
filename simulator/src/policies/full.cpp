// full: no compression, the control. Every token is held at fp16; recall is 1 and the output
// error is the fp16 rounding of the stored K/V.
#include "simulator/policy.h"

namespace kvs::sim {

namespace {

class FullLayer final : public LayerPolicy {
  public:
    void update(int64_t, std::vector<UnitStore>&) override {}
    bool observes() const override { return false; }
};

class Full final : public Policy {
  public:
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext&) const override {
        return std::make_unique<FullLayer>();
    }
};

}  // namespace

PolicyEntry policy_full() {
    PolicyEntry e;
    e.info.name = "full";
    e.info.summary = "no compression: every token at fp16 (the control)";
    e.info.details = "Same in both modes.";
    e.make = [](const Params&) { return std::make_unique<Full>(); };
    return e;
}

}  // namespace kvs::sim
