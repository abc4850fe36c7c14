// kvpress's key scorers (knorm, keydiff; simulator/src/policies/keyscore.h): hand-built keys
// whose decisions follow from the rules by hand, driven through the policy as a driver does.
#include <catch2/catch.hpp>
#include <set>

#include "simulator/policy.h"
#include "simulator/unit_store.h"

using namespace kvs;
using namespace kvs::sim;

namespace {

// One unit of fp32 rows holding `keys` (d = 4) at positions 0.., then one update at the last
// step (stream mode) or at P = the last position (prefill mode). Returns the positions held.
std::set<int> held_after(const std::string& spec, const std::vector<std::vector<float>>& keys,
                         Mode mode) {
    const PolicySpec s = parse_spec(spec);
    const auto policy = s.entry->make(s.params);
    LayerContext c;
    c.n_layer = c.n_replayed = 1;
    c.n_head = c.n_kv = 1;
    c.d = 4;
    c.n_tokens = int64_t(keys.size());
    c.mode = mode;
    c.prefill_len = mode == Mode::prefill ? int64_t(keys.size()) - 1 : 0;
    const auto layer = policy->make_layer(c);
    std::vector<UnitStore> units;
    units.emplace_back(4, 32, Precision::f32);
    const std::vector<float> v(4, 0.5f);
    for (size_t t = 0; t < keys.size(); ++t) units[0].append(int32_t(t), keys[t].data(), v.data());
    const int64_t t = int64_t(keys.size()) - 1;
    layer->update(t, units);
    REQUIRE(units[0].size() <= layer->budget_tokens(t, 0));
    std::set<int> held;
    for (int i = 0; i < units[0].size(); ++i) held.insert(units[0].pos(i));
    return held;
}

std::vector<float> along(int axis, float norm) {
    std::vector<float> k(4, 0.0f);
    k[size_t(axis)] = norm;
    return k;
}

}  // namespace

TEST_CASE("knorm keeps the smallest key norms and the newest token", "[cpu]") {
    // Norms 3, 1, 2, 5, 0.5 and the newest token (norm 4, kept: nothing has attended it yet).
    // Budget 4 keeps the newest and the three smallest: 0.5 (4), 1 (1), 2 (2).
    const std::vector<std::vector<float>> keys = {along(0, 3), along(1, 1),   along(2, 2),
                                                  along(3, 5), along(0, 0.5), along(1, 4)};
    CHECK(held_after("knorm:budget=4", keys, Mode::stream) == std::set<int>{1, 2, 4, 5});
    // Prefill mode: the prompt [0, 5) keeps its top 4 (budget counts prompt entries; token P
    // comes on top): norms 3 (0), 1, 2, 0.5; the 5 goes.
    CHECK(held_after("knorm:budget=4", keys, Mode::prefill) == std::set<int>{0, 1, 2, 4, 5});
    // Equal norms: the older token goes first.
    const std::vector<std::vector<float>> same = {along(0, 1), along(1, 1), along(2, 1),
                                                  along(3, 1)};
    CHECK(held_after("knorm:budget=2", same, Mode::stream) == std::set<int>{2, 3});
}

TEST_CASE("keydiff keeps the keys least like the mean key direction", "[cpu]") {
    // Keys e0, e0, e1, e0, e0 (norms differ: normalised first) and the newest token. The anchor
    // is the mean of the normalised keys, (4 e0 + e1) / 5: cos(e0, a) = 0.8 / |a| and
    // cos(e1, a) = 0.2 / |a|, so token 2 (e1) scores highest; among the equal e0 the older go
    // first. Budget 3: the newest, token 2, and token 4.
    const std::vector<std::vector<float>> keys = {along(0, 1),    along(0, 2), along(1, 0.3f),
                                                  along(0, 0.7f), along(0, 1), along(2, 1)};
    CHECK(held_after("keydiff:budget=3", keys, Mode::stream) == std::set<int>{2, 4, 5});
    // knorm on the same keys keeps the smallest norms instead: 0.3 (2) and 0.7 (3).
    CHECK(held_after("knorm:budget=3", keys, Mode::stream) == std::set<int>{2, 3, 5});
    // The anchor is over the scored entries only: a newest token along e1 changes nothing.
    std::vector<std::vector<float>> k2 = keys;
    k2.back() = along(1, 1);
    CHECK(held_after("keydiff:budget=3", k2, Mode::stream) == std::set<int>{2, 4, 5});
}

TEST_CASE("knorm and keydiff need a budget and take no attention", "[cpu]") {
    CHECK_THROWS_WITH(parse_spec("knorm"), Catch::Contains("budget"));
    CHECK_THROWS_WITH(parse_spec("keydiff:budget=4,window=8"), Catch::Contains("window"));
    const PolicySpec s = parse_spec("keydiff:budget=4");
    LayerContext c;
    c.n_kv = 1;
    c.d = 4;
    c.n_tokens = 8;
    CHECK_FALSE(s.entry->make(s.params)->make_layer(c)->observes());
}
