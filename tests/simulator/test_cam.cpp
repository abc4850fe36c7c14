// cam (CaM, policies/cam.cpp): the values of evicted tokens merged into the entries after them,
// with known answers computed by hand; its evictions are its base policy's.
#include <catch2/catch.hpp>
#include <random>

#include "policy_rig.h"
#include "simulator/policy.h"

using namespace kvs;
using namespace kvs::sim;

namespace {

std::vector<float> val(float x) {
    return {x, 0.0f, 0.0f, 0.0f};
}

}  // namespace

TEST_CASE("cam: a merged value spreads over the next entries, by hand", "[cpu]") {
    // budget 4, one sink, merge_window 2: from t = 4 on, each step evicts the oldest non-sink
    // entry e and (attention equal for every entry: a(e) = the mean, p = 1) adds v_e / 2 to the
    // two entries after it. Token t's value is t in channel 0, its key a constant.
    const std::vector<float> k = {1, 0, 0, 0};
    auto uniform = [](int64_t, int32_t) { return 0.25f; };
    test::PolicyRig r("cam:budget=4,sinks=1,merge_window=2", 4, 8);
    for (int t = 0; t <= 6; ++t) r.step(t, k, val(float(t)), uniform);
    // t = 4: evict 1 -> v2 = 2.5, v3 = 3.5; t = 5: evict 2 (2.5) -> v3 = 4.75, v4 = 5.25;
    // t = 6: evict 3 (4.75) -> v4 = 7.625, v5 = 7.375. Every merge keeps the sum of the values.
    REQUIRE(r.held() == std::vector<int32_t>{0, 4, 5, 6});
    const std::vector<float> want = {0.0f, 7.625f, 7.375f, 6.0f};
    for (int i = 0; i < 4; ++i) {
        INFO("entry " << i);
        CHECK(r.v_row(i)[0] == want[size_t(i)]);
        CHECK(r.v_row(i)[1] == 0.0f);
        CHECK(r.k_row(i) == k);  // keys are never changed
    }
    // A merged value is not a merged entry: counts stay 1, nothing recorded as folded.
    for (int i = 0; i < 4; ++i) CHECK(r.units[0].count(i) == 1);
    CHECK(r.units[0].merged_log().empty());
    CHECK_FALSE(r.units[0].any_merged());

    // The token about to be evicted (position t - 2 at step t) gets no attention: p = 0, no merge.
    auto cold = [](int64_t t, int32_t pos) { return pos == t - 2 ? 0.0f : 0.25f; };
    test::PolicyRig c("cam:budget=4,sinks=1,merge_window=2", 4, 8);
    for (int t = 0; t <= 6; ++t) c.step(t, k, val(float(t)), cold);
    REQUIRE(c.held() == std::vector<int32_t>{0, 4, 5, 6});
    for (int i = 0; i < 4; ++i) CHECK(c.v_row(i)[0] == float(c.held()[size_t(i)]));

    // Near the newest token fewer than merge_window entries follow: the whole value goes to them.
    test::PolicyRig w("cam:budget=3,sinks=1,merge_window=8", 4, 8);
    for (int t = 0; t <= 3; ++t) w.step(t, k, val(float(t)), uniform);
    // t = 3: evict 1 -> v2 = 2 + 1/2, v3 = 3 + 1/2 (two recipients, not eight).
    REQUIRE(w.held() == std::vector<int32_t>{0, 2, 3});
    CHECK(w.v_row(1)[0] == 2.5f);
    CHECK(w.v_row(2)[0] == 3.5f);
}

TEST_CASE("cam: the merge probability follows the evicted token's share of attention", "[cpu]") {
    // budget 8, no sinks, merge_window 1: from t = 8 on, step t evicts token t - 8 and its one
    // recipient is token t - 7. The latest query (step t - 1) gave the token to be evicted rho x
    // the attention of every staying entry, so it merges with probability rho. Over 600
    // evictions the share merged is rho within 5 standard errors; a merge shows as the
    // recipient's value growing (every value is 1, and only token t - 8 can merge into t - 7).
    const std::vector<float> k = {1, 0, 0, 0}, v = {1, 0, 0, 0};
    const int T = 640;
    for (double rho : {0.25, 0.5, 0.75}) {
        INFO("rho " << rho);
        auto p = [rho](int64_t s, int32_t pos) { return pos == s - 7 ? float(rho) * 0.1f : 0.1f; };
        auto count = [&](int seed, std::vector<int>* which) {
            test::PolicyRig r("cam:budget=8,sinks=0,merge_window=1,seed=" + std::to_string(seed), 4,
                              T);
            int merges = 0;
            for (int t = 0; t < T; ++t) {
                const bool evicts = r.held().size() == 8;
                const float before = evicts ? r.v_row(1)[0] : 0.0f;  // token t - 7
                r.step(t, k, v, p);
                if (!evicts) continue;
                REQUIRE(r.held().front() == t - 7);
                const bool m = r.v_row(0)[0] != before;
                merges += m;
                which->push_back(m);
            }
            return merges;
        };
        std::vector<int> a, b, c;
        const int merges = count(0, &a);
        const double n = double(a.size()), share = merges / n;
        CHECK(n > 600);
        CHECK(std::abs(share - rho) < 5 * std::sqrt(rho * (1 - rho) / n));
        count(0, &b);
        count(1, &c);
        CHECK(a == b);  // the same seed draws the same
        CHECK(a != c);  // another seed draws differently
    }
}

TEST_CASE("cam: evictions are its base policy's", "[cpu]") {
    // Random attention, the same for cam and its base: the held sets agree at every step.
    const int d = 4, T = 200;
    std::mt19937 g(5);
    std::uniform_real_distribution<float> U(0.0f, 1.0f);
    std::vector<std::vector<float>> att(T);
    for (auto& row : att) {
        row.resize(T);
        for (auto& x : row) x = U(g);
    }
    auto p = [&](int64_t t, int32_t pos) { return att[size_t(t)][size_t(pos)]; };
    for (const auto& [cam, base] :
         {std::pair<std::string, std::string>{"cam:budget=24", "window:budget=24"},
          {"cam:budget=24,base=h2o", "h2o:budget=24"},
          {"cam:budget=0.25,base=h2o", "h2o:budget=0.25"}}) {
        INFO(cam);
        test::PolicyRig a(cam, d, T), b(base, d, T);
        bool merged_some = false;
        for (int t = 0; t < T; ++t) {
            const std::vector<float> k = {U(g), U(g), U(g), U(g)}, v = {U(g), U(g), U(g), U(g)};
            a.step(t, k, v, p);
            b.step(t, k, v, p);
            REQUIRE(a.held() == b.held());
            for (int i = 0; i < int(a.held().size()); ++i) merged_some |= a.v_row(i) != b.v_row(i);
        }
        CHECK(merged_some);  // and cam did change values
    }
}

TEST_CASE("cam: bad parameters are one-line errors", "[cpu]") {
    const PolicySpec s = parse_spec("cam:budget=4");  // the spec parses; the policy refuses it
    CHECK_THROWS_WITH(s.entry->make(s.params),
                      Catch::Contains("policy 'cam': budget 4 must be larger than sinks=4"));
    CHECK_THROWS_WITH(parse_spec("cam:budget=64,merge_window=0"),
                      Catch::Contains("parameter 'merge_window' must be in [1,"));
    CHECK_THROWS_WITH(parse_spec("cam:budget=64,base=tova"), Catch::Contains("base"));
    CHECK_THROWS_WITH(parse_spec("cam"), Catch::Contains("budget"));
}
