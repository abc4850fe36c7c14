// Seed 002 (composite tokens, simulator/src/policies/composite.cpp): hand-built traces whose
// allocation follows from the rule by hand. Two layers, 2 KV heads of 2 query heads, prompt 120
// (prefill mode, P = 120), budget 24, window 8, kernel 1 (no pooling): C = 24, w = 8, so the
// average is base = 16 scored tokens per head and the two layers share 2 x 16 = 32.
//   layer 0: token 10 takes ~98 % of every query's attention (its score ~ 8 x 0.98 = 7.8); the
//            other candidates share the rest (each at most ~0.02: 8 queries x ~0.002);
//   layer 1: all-zero queries, so every query attends uniformly: each candidate scores
//            sum_{t=112..119} 1/(t+1) = 0.069, above every layer-0 candidate but token 10.
#include <catch2/catch.hpp>
#include <set>

#include "attn_trace.h"
#include "replay_one.h"
#include "simulator/policy.h"
#include "simulator/replay.h"

using namespace kvs;
using namespace kvs::sim;

namespace {

std::string trace_of(const test::AttnTraceOptions& o, const std::string& name) {
    return test::cached_attn_trace(o, name, "kvs_comp_test_");
}

test::AttnTraceOptions two_layers() {
    test::AttnTraceOptions o;
    o.prompt_len = 120;
    o.hot = 10;
    o.hot_layer = 0;
    o.flat_layer = 1;
    return o;
}

// Held per unit at step t (prefill mode: the first recorded step is P).
std::vector<int32_t> held_at(const RunResult& r, int64_t t) {
    for (size_t st = 0; st < r.n_steps(); ++st)
        if (r.steps[st] == t)
            return {r.held.begin() + long(st * r.n_units()),
                    r.held.begin() + long((st + 1) * r.n_units())};
    FAIL("step " << t << " not recorded");
    return {};
}

}  // namespace

TEST_CASE("composite: the global top-k gives the informative layer the budget, by hand", "[cpu]") {
    const std::string path = trace_of(two_layers(), "two_layers.h5");
    const int64_t P = 120;
    // No floor, at most 2 x 16 per layer: the top 32 composite tokens are layer 0's token 10
    // and 31 of layer 1's (all equal, above layer 0's others): n_0 = 1, n_1 = 31. Held at P:
    // n_l + the window (8) + token P itself.
    {
        const RunResult r = test::replay_one(
            path, "composite:budget=24,window=8,kernel=1,min_ratio=0,max_ratio=2", Mode::prefill);
        CHECK(held_at(r, P) == std::vector<int32_t>{10, 10, 40, 40});
        // Layer 0 keeps the hot token in both heads; nothing past the budget is held in total.
        const size_t T = size_t(r.n_tokens);
        CHECK(r.evicted_at[0 * T + 10] == -1);
        CHECK(r.evicted_at[1 * T + 10] == -1);
    }
    // The default floor, floor(0.2 x 16) = 3 per layer: 32 - 6 = 26 more, all layer 1's:
    // n_0 = 3, n_1 = 29.
    CHECK(held_at(test::replay_one(path, "composite:budget=24,window=8,kernel=1", Mode::prefill),
                  P) == std::vector<int32_t>{12, 12, 38, 38});
    // A cap of 1.5 x 16 = 24 on layer 1 leaves layer 0 the other 8.
    CHECK(held_at(test::replay_one(path,
                                   "composite:budget=24,window=8,kernel=1,min_ratio=0,"
                                   "max_ratio=1.5",
                                   Mode::prefill),
                  P) == std::vector<int32_t>{17, 17, 33, 33});
    // snapkv on the same trace: 16 + 9 everywhere (the total is the same: 2 x 2 x 25).
    CHECK(held_at(test::replay_one(path, "snapkv:budget=24,window=8,kernel=1", Mode::prefill), P) ==
          std::vector<int32_t>{25, 25, 25, 25});
}

TEST_CASE("composite: every head of a layer keeps the same count of its own tokens", "[cpu]") {
    // Token 10 is hot for KV head 0 of layer 0 only: composite token 0 of layer 0 is head 0's
    // token 10 and head 1's best (diffuse) token, scored (7.8 + ~0.02) / 2 = 3.9 with agg=mean
    // (7.8 with agg=max): above layer 1's 0.069, so layer 0 gets n_0 = 1 and layer 1 31, as
    // above; head 0 holds token 10, head 1 its own best, not token 10.
    test::AttnTraceOptions o = two_layers();
    o.hot_kv = 0;
    const std::string path = trace_of(o, "hot_head0.h5");
    const int64_t P = 120;
    const RunResult r =
        test::replay_one(path, "composite:budget=24,window=8,kernel=1,min_ratio=0", Mode::prefill);
    CHECK(held_at(r, P) == std::vector<int32_t>{10, 10, 40, 40});
    const std::set<int> h0 = test::held_set(r, 0, P), h1 = test::held_set(r, 1, P);
    CHECK(h0.count(10) == 1);
    CHECK(h1.count(10) == 0);
    // Each head's one scored token is its own: the sets differ in exactly that token.
    std::set<int> only0, only1;
    for (int j : h0)
        if (!h1.count(j)) only0.insert(j);
    for (int j : h1)
        if (!h0.count(j)) only1.insert(j);
    CHECK(only0 == std::set<int>{10});
    CHECK(only1.size() == 1);
    // agg=max scores composite token i >= 1 of layer 0 by head 1's own i-th score: its random
    // keys give its best tokens more than the uniform 0.069 (the mean halves them below it), so
    // layer 0 takes more of the total, which stays 2 x 2 x 25.
    const std::vector<int32_t> mx =
        held_at(test::replay_one(path, "composite:budget=24,window=8,kernel=1,min_ratio=0,agg=max",
                                 Mode::prefill),
                P);
    CHECK(mx[0] > 10);
    CHECK(mx[0] == mx[1]);
    CHECK(mx[2] == mx[3]);
    CHECK(mx[0] + mx[1] + mx[2] + mx[3] == 100);
}

TEST_CASE("composite: the same total budget as snapkv at every step, in both modes", "[cpu]") {
    // Real attention (the committed SmolLM2 trace, layers 2 and 29): the counts move between the
    // layers, the sum over all units never exceeds snapkv's.
    const std::string path = std::string(KVS_FIXTURES) + "/ref_trace.h5";
    for (const Mode mode : {Mode::prefill, Mode::stream}) {
        INFO(mode_name(mode));
        const RunResult c = test::replay_one(path, "composite:budget=48,window=16", mode);
        const RunResult s = test::replay_one(path, "snapkv:budget=48,window=16", mode);
        REQUIRE(c.steps == s.steps);
        const size_t U = c.n_units();
        bool moved = false;
        for (size_t st = 0; st < c.n_steps(); ++st) {
            int64_t tc = 0, ts = 0;
            for (size_t u = 0; u < U; ++u) {
                tc += c.held[st * U + u];
                ts += s.held[st * U + u];
                moved |= c.held[st * U + u] != s.held[st * U + u];
            }
            INFO("step " << c.steps[st]);
            CHECK(tc <= ts);
        }
        CHECK(moved);
    }
}

TEST_CASE("composite: bad parameters and stream mode live are one-line errors", "[cpu]") {
    CHECK_THROWS_WITH(parse_spec("composite:budget=64,min_ratio=1.5"),
                      Catch::Contains("'min_ratio' must be in [0, 1]"));
    CHECK_THROWS_WITH(parse_spec("composite:budget=64,max_ratio=0.5"),
                      Catch::Contains("'max_ratio'"));
    CHECK_THROWS_WITH(parse_spec("composite:budget=64,agg=sum"),
                      Catch::Contains("'agg' must be one of mean, max"));
    const PolicySpec p = parse_spec("composite:budget=20");
    CHECK_THROWS_WITH(p.entry->make(p.params), Catch::Contains("window + 1 = 33"));
}
