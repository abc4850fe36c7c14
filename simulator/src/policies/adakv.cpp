// adakv (Feng et al. 2024): SnapKV scoring, with the layer's budget (n_kv * budget) allocated
// across its KV heads by one top-k over the scores of all of them, each head guaranteed a floor.
#include "snap.h"

namespace kvs::sim {

namespace {

class AdaLayer final : public LayerPolicy {
  public:
    AdaLayer(const detail::SnapParams& p, double floor_frac, int64_t n_tokens, int n_kv)
        : p_(p), floor_(floor_frac), b_(size_t(n_kv), -1) {
        for (int g = 0; g < n_kv; ++g) units_.emplace_back(n_tokens, p);
    }
    int64_t budget_tokens(int64_t, int g) const override { return b_[size_t(g)]; }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const int64_t per = p_.budget.tokens(t + 1);
        const int64_t total = per * int64_t(units.size());
        int64_t held = 0;
        for (auto& u : units) held += u.size();
        if (held <= total) {
            // Not over budget: no head is limited below the layer's total.
            for (auto& b : b_) b = total;
            for (auto& u : units) detail::store_at(u, p_.bits);
            return;
        }
        // Eviction keys of every head; the guaranteed floor of each head first, then one
        // top-k over the rest.
        struct Cand {
            float key;
            int g, i;
        };
        std::vector<std::vector<float>> keys(units.size());
        std::vector<Cand> rest;
        std::vector<int64_t> kept(units.size(), 0);
        const int64_t fl = int64_t(std::floor(floor_ * double(per)));
        std::vector<std::vector<uint8_t>> keep(units.size());
        for (size_t g = 0; g < units.size(); ++g) {
            UnitStore& u = units[g];
            keys[g] = units_[g].keys(t, u, per);
            const int n = u.size();
            keep[g].assign(size_t(n), 0);
            std::vector<int> order(static_cast<size_t>(n));
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
                const float ka = keys[g][size_t(a)], kb = keys[g][size_t(b)];
                return ka != kb ? ka > kb : a > b;  // highest first; ties: newer first
            });
            for (int r = 0; r < n; ++r) {
                const int i = order[size_t(r)];
                if (r < fl) {
                    keep[g][size_t(i)] = 1;
                    ++kept[g];
                } else {
                    rest.push_back({keys[g][size_t(i)], int(g), i});
                }
            }
        }
        int64_t left = total;
        for (int64_t k : kept) left -= k;
        std::stable_sort(rest.begin(), rest.end(), [](const Cand& a, const Cand& b) {
            if (a.key != b.key) return a.key > b.key;
            if (a.g != b.g) return a.g < b.g;
            return a.i > b.i;
        });
        for (size_t r = 0; r < rest.size() && int64_t(r) < left; ++r) {
            keep[size_t(rest[r].g)][size_t(rest[r].i)] = 1;
            ++kept[size_t(rest[r].g)];
        }
        for (size_t g = 0; g < units.size(); ++g) {
            std::vector<uint8_t> drop(keep[g].size());
            for (size_t i = 0; i < drop.size(); ++i) drop[i] = !keep[g][i];
            units[g].evict_mask(drop);
            b_[g] = kept[g];
            detail::store_at(units[g], p_.bits);
        }
    }
    int64_t first_observed_step(int64_t first_update) const override {
        return std::max<int64_t>(0, first_update - p_.window);
    }
    void observe(int64_t, int g, const float* probs, int n_q, UnitStore& u) override {
        units_[size_t(g)].observe(probs, n_q, u);
    }

  private:
    detail::SnapParams p_;
    double floor_;
    std::vector<int64_t> b_;
    std::vector<detail::SnapUnit> units_;
};

class AdaKv final : public Policy {
  public:
    explicit AdaKv(const Params& p) : p_(detail::snap_params(p)), floor_(p.real("floor")) {}
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        return std::make_unique<AdaLayer>(p_, floor_, c.n_tokens, c.n_kv);
    }

  private:
    detail::SnapParams p_;
    double floor_;
};

}  // namespace

PolicyEntry policy_adakv() {
    PolicyEntry e;
    e.info.name = "adakv";
    e.info.summary = "Ada-KV: SnapKV scoring, the layer's budget allocated across its KV heads";
    e.info.details =
        "The layer holds n_kv * budget tokens in all; each KV head first keeps its top "
        "floor * budget tokens (Ada-KV's safeguard), then one top-k over the remaining scores of "
        "all heads fills the rest, so heads with concentrated attention give budget to heads with "
        "spread attention. Per-head budgets are re-allocated at every step from the scores of the "
        "last selection (newest `window` tokens always kept). Modes as snapkv. The reported "
        "budget_tokens of a head is its allocation.";
    e.info.params = detail::snap_param_defs();
    e.info.params.push_back(
        param_real("floor", "0.2", 0, 1, "share of the budget every head is guaranteed"));
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<AdaKv>(p); };
    return e;
}

}  // namespace kvs::sim
