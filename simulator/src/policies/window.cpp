// window (StreamingLLM, Xiao et al. 2023): the first `sinks` tokens (attention sinks) plus the
// most recent ones. Give either budget= (recent = budget - sinks) or recent= (budget = sinks +
// recent).
#include <fmt/format.h>

#include "common.h"
#include "engine/error.h"

namespace kvs::sim {

namespace {

class WindowLayer final : public LayerPolicy {
  public:
    WindowLayer(Budget b, int sinks, int recent, int bits)
        : budget_(b), sinks_(sinks), recent_(recent), bits_(bits) {}
    int64_t budget_tokens(int64_t t, int) const override {
        return budget_.set ? budget_.tokens(t + 1) : int64_t(sinks_) + recent_;
    }
    bool observes() const override { return false; }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const int64_t keep = budget_tokens(t, 0);
        for (auto& u : units) {
            std::vector<float> key(size_t(u.size()), 0.0f);
            // Sinks are protected; the rest are evicted oldest first (equal keys, older first).
            for (int i = 0; i < u.size(); ++i)
                if (u.pos(i) < sinks_) key[size_t(i)] = detail::kProtected;
            detail::evict_to(u, keep, key);
            detail::store_at(u, bits_);
        }
    }

  private:
    Budget budget_;
    int sinks_, recent_, bits_;
};

class Window final : public Policy {
  public:
    explicit Window(const Params& p)
        : budget_(p.budget()),
          sinks_(p.integer("sinks")),
          recent_(p.integer("recent")),
          bits_(p.integer("bits")) {
        if (budget_.set == (recent_ > 0))
            fail(
                "policy 'window' needs exactly one of budget= or recent= (e.g. "
                "window:sinks=4,budget=256)");
        if (budget_.set && !budget_.fraction && budget_.value <= sinks_)
            fail("policy 'window': budget {} must be larger than sinks={}", budget_.text, sinks_);
    }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext&) const override {
        return std::make_unique<WindowLayer>(budget_, sinks_, recent_, bits_);
    }

  private:
    Budget budget_;
    int sinks_, recent_, bits_;
};

}  // namespace

PolicyEntry policy_window() {
    PolicyEntry e;
    e.info.name = "window";
    e.info.summary = "StreamingLLM: the first `sinks` tokens plus a window of the most recent ones";
    e.info.details =
        "Keeps the attention sinks and the newest tokens; needs no attention scores. Give budget= "
        "(recent = budget - sinks) or recent= (budget = sinks + recent). Same in both modes "
        "(in prefill mode the prompt is cut to the window at position P).";
    e.info.params = {
        param_budget(), param_int("sinks", "4", 0, 1e9, "attention-sink tokens kept"),
        param_int("recent", "0", 0, 1e9, "recent tokens kept (instead of budget; 0 = from budget)"),
        param_bits(), param_group()};
    e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<Window>(p); };
    return e;
}

}  // namespace kvs::sim
