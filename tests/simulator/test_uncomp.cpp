// uncomp (policies/uncomp.cpp) on hand-built rows whose matrix entropies are known: which heads
// form the high-entropy group, and how many entries each keeps.
#include <catch2/catch.hpp>

#include "simulator/policy.h"
#include "simulator/unit_store.h"

using namespace kvs;
using namespace kvs::sim;

namespace {

// 20 rows of d = 4 in +- pairs (mean 0), each a unit vector along an axis: `counts[a]` rows on
// axis a. After centring and normalising, A = Z^T Z / 20 = diag(counts) / 20.
//   flat  = {10, 10, 0, 0}: eigenvalues .5, .5, 0, 0: H = ln 2 / ln 4 = 0.5 (all), 0.25 (svdn 1)
//   tall  = {14, 2, 2, 2}:  .7, .1, .1, .1: H = (.7 ln(1/.7) + .3 ln 10) / ln 4 = 0.678 (all),
//                            .7 ln(1/.7) / ln 4 = 0.180 (svdn 1)
// So with every eigenvalue counted `tall` has the higher entropy; with only the largest, `flat`.
std::vector<float> rows(const std::vector<int>& counts) {
    std::vector<float> out;
    for (int a = 0; a < 4; ++a)
        for (int i = 0; i < counts[size_t(a)]; ++i) {
            std::vector<float> r(4, 0.0f);
            r[size_t(a)] = i % 2 == 0 ? 2.0f : -2.0f;  // any length: rows are normalised
            out.insert(out.end(), r.begin(), r.end());
        }
    return out;
}

struct Result {
    std::vector<int> held;     // entries per KV head after the selection at P
    std::vector<int8_t> high;  // the plan's groups
};

// One layer, 2 KV heads of one query head each, P = 20: KV head 0's queries are `flat`, KV head
// 1's `tall` (source=k: the keys are the other way round). The selection at P keeps, per head,
// its capacity minus the window of scored candidates, the window and token P.
Result run(const std::string& spec_text) {
    const int d = 4;
    const int64_t P = 20;
    const std::vector<float> flat = rows({10, 10, 0, 0}), tall = rows({14, 2, 2, 2});
    PlanContext pc;
    pc.layers = {0};
    pc.n_layer = 1;
    pc.n_head = 2;
    pc.n_kv = 2;
    pc.d = d;
    pc.kv_of_q = {0, 1};
    pc.n_tokens = 24;
    pc.prefill_len = P;
    pc.mode = Mode::prefill;
    pc.attn_scale = 0.5f;
    pc.read = [&](PlanField f, int, int h, int64_t t0, int64_t t1) {
        REQUIRE(t0 == 0);
        REQUIRE(t1 == P);
        const bool first = f == PlanField::q ? h == 0 : h == 1;
        return first ? flat : tall;
    };
    const PolicySpec spec = parse_spec(spec_text);
    const auto policy = spec.entry->make(spec.params);
    REQUIRE(policy->plans_from_rows());
    const auto plan = policy->plan(pc);
    const auto layer = policy->make_layer(layer_context(pc, 0, plan.get()));
    std::vector<UnitStore> units;
    for (int g = 0; g < 2; ++g) units.emplace_back(d, 32, Precision::f32);
    for (int t = 0; t <= P; ++t) {
        const std::vector<float> k = {float(t), 1, 0, 0}, v = {1, 0, 0, float(t)};
        for (auto& u : units) u.append(int32_t(t), k.data(), v.data());
    }
    layer->update(P, units);
    Result r;
    for (auto& u : units) r.held.push_back(u.size());
    r.high = policy->unit_roles(plan.get()).role;
    return r;
}

}  // namespace

TEST_CASE("uncomp: truncated matrix entropy picks the high group, official capacities", "[cpu]") {
    // Budget C = 8, window 2: C' = 12; high heads keep 12 - 2 scored + 2 + token P = 13, low
    // heads 6 - 2 + 2 + 1 = 7.
    Result r = run("uncomp:budget=8,window=2,svdn=4");
    CHECK(r.high == std::vector<int8_t>{0, 1});  // tall (0.678) above flat (0.5)
    CHECK(r.held == std::vector<int>{7, 13});
    // Only the largest eigenvalue: flat (0.25) above tall (0.180).
    r = run("uncomp:budget=8,window=2,svdn=1");
    CHECK(r.high == std::vector<int8_t>{1, 0});
    CHECK(r.held == std::vector<int>{13, 7});
    // source=k: KV head 0's keys are tall, KV head 1's flat.
    r = run("uncomp:budget=8,window=2,svdn=4,source=k");
    CHECK(r.high == std::vector<int8_t>{1, 0});
    CHECK(r.held == std::vector<int>{13, 7});
}

TEST_CASE("uncomp: alloc=equal keeps the 1 : 2 ratio at a mean of the budget", "[cpu]") {
    // Scored mean C - w = 6 over 2 heads: low 6 * 2 / 3 = 4, high 8; each + window 2 + token P.
    const Result r = run("uncomp:budget=8,window=2,svdn=4,alloc=equal");
    CHECK(r.high == std::vector<int8_t>{0, 1});
    CHECK(r.held == std::vector<int>{7, 11});
    // A prompt no longer than C' = 3 C / 2: [P / 2, P] (official); budget 14: C' = 21 >= 20.
    const Result s = run("uncomp:budget=14,window=2,svdn=4");
    CHECK(s.held == std::vector<int>{10 + 1, 20 + 1});
}
