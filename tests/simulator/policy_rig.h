// Test helper: one LayerPolicy driven by hand, one (layer, KV head) unit of 2 query heads, with
// the attention each step's queries give chosen by the test (the policy's known-answer tests).
#pragma once
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "simulator/policy.h"
#include "simulator/unit_store.h"

namespace kvs::test {

struct PolicyRig {
    std::unique_ptr<sim::Policy> policy;
    std::unique_ptr<sim::LayerPolicy> layer;
    std::vector<sim::UnitStore> units;
    int d;
    PolicyRig(const std::string& spec, int d_, int64_t T) : d(d_) {
        const sim::PolicySpec s = sim::parse_spec(spec);
        policy = s.entry->make(s.params);
        sim::LayerContext c;
        c.n_head = 2;
        c.n_kv = 1;
        c.d = d;
        c.n_tokens = T;
        c.n_layer = c.n_replayed = 1;
        c.attn_scale = 1.0f / std::sqrt(float(d));
        layer = policy->make_layer(c);
        units.emplace_back(d, 32, sim::Precision::f32);
    }
    // Appends token t, updates, then both query heads give held entry i attention p(t, pos(i)).
    void step(int64_t t, const std::vector<float>& k, const std::vector<float>& v,
              const std::function<float(int64_t t, int32_t pos)>& p) {
        sim::UnitStore& u = units[0];
        u.append(int32_t(t), k.data(), v.data());
        layer->update(t, units);
        const int n = u.size();
        std::vector<float> probs(size_t(2) * size_t(n));
        for (int h = 0; h < 2; ++h)
            for (int i = 0; i < n; ++i) probs[size_t(h * n + i)] = p(t, u.pos(i));
        layer->observe(t, 0, probs.data(), 2, u);
    }
    // The same with attention 1 for position `hot` and 0.01 for every other entry.
    void step(int64_t t, const std::vector<float>& k, const std::vector<float>& v, int hot) {
        step(t, k, v, [hot](int64_t, int32_t pos) { return pos == hot ? 1.0f : 0.01f; });
    }
    std::vector<int32_t> held() const {
        return {units[0].positions(), units[0].positions() + units[0].size()};
    }
    std::vector<float> v_row(int i) const {
        std::vector<float> r(static_cast<size_t>(d));
        units[0].v_row(i, r.data());
        return r;
    }
    std::vector<float> k_row(int i) const {
        std::vector<float> r(static_cast<size_t>(d));
        units[0].k_row(i, r.data());
        return r;
    }
};

}  // namespace kvs::test
