// zack (policies/zack.cpp) on rows whose singular directions are known: the ranks it keeps, the
// rows attention then reads and the bytes the store counts.
#include <catch2/catch.hpp>

#include "simulator/policy.h"
#include "simulator/unit_store.h"

using namespace kvs;
using namespace kvs::sim;

namespace {

// One unit (d = 4, fp32 store), prompt 0..5 (P = 6). Keys (3, +-0.5, 0, 0) (alternating signs:
// X^T X = n diag(9, 0.25, 0, 0), so the leading direction e1 holds 9 / 9.25 = 97.3 % of the
// energy), values (0, 0, t + 1, 0) (rank 1).
struct Run {
    UnitStore u{4, 32, Precision::f32};
    std::unique_ptr<Policy> policy;
    std::unique_ptr<LayerPolicy> layer;
    explicit Run(const std::string& spec) {
        const PolicySpec s = parse_spec(spec);
        policy = s.entry->make(s.params);
        LayerContext c;
        c.n_head = 1;
        c.n_kv = 1;
        c.d = 4;
        c.n_tokens = 10;
        c.n_layer = c.n_replayed = 1;
        c.prefill_len = 6;
        c.mode = Mode::prefill;
        c.attn_scale = 0.5f;
        layer = policy->make_layer(c);
    }
    void step(int t) {
        const std::vector<float> k = {3.0f, t % 2 == 0 ? 0.5f : -0.5f, 0, 0};
        const std::vector<float> v = {0, 0, float(t + 1), 0};
        u.append(t, k.data(), v.data());
        std::vector<UnitStore> units;
        units.push_back(std::move(u));
        if (t >= 6) layer->update(t, units);
        u = std::move(units[0]);
    }
    std::vector<float> k(int i) const {
        std::vector<float> r(4);
        u.k_row(i, r.data());
        return r;
    }
    std::vector<float> v(int i) const {
        std::vector<float> r(4);
        u.v_row(i, r.data());
        return r;
    }
};

}  // namespace

TEST_CASE("zack: the energy sets each side's rank; rows are projected from P on", "[cpu]") {
    {
        // energy 0.95: e1 alone is enough for the keys (97.3 %): every key reads (3, 0, 0, 0).
        Run r("zack:energy=0.95");
        for (int t = 0; t <= 6; ++t) r.step(t);
        CHECK(r.u.rank_k() == 1);
        CHECK(r.u.rank_v() == 1);
        for (int i = 0; i <= 6; ++i) {
            CHECK(r.u.store(i) == Store::low_rank);
            CHECK(r.k(i) == std::vector<float>{3, 0, 0, 0});
            CHECK(r.v(i) == std::vector<float>{0, 0, float(i + 1), 0});
        }
        // 7 rows of 1 + 1 fp32 coefficients, plus two bases of 4 + 4 x 4 x 1 bytes.
        CHECK(r.u.bytes() == 7 * 8 + 20 + 20);
        // A decoded token is projected onto the same bases.
        r.step(7);
        CHECK(r.u.store(7) == Store::low_rank);
        CHECK(r.k(7) == std::vector<float>{3, 0, 0, 0});
        CHECK(r.u.bytes() == 8 * 8 + 20 + 20);
    }
    {
        // energy 0.99: the keys need both directions (rank 2) and read back exactly.
        Run r("zack:energy=0.99");
        for (int t = 0; t <= 6; ++t) r.step(t);
        CHECK(r.u.rank_k() == 2);
        CHECK(r.u.rank_v() == 1);
        for (int i = 0; i <= 6; ++i)
            CHECK(r.k(i) == std::vector<float>{3, i % 2 == 0 ? 0.5f : -0.5f, 0, 0});
        CHECK(r.u.bytes() == 7 * 12 + (4 + 32) + 20);
    }
    {
        // A fixed rank, above d: capped at d (4); the rows are stored, not lost.
        Run r("zack:rank=9");
        for (int t = 0; t <= 6; ++t) r.step(t);
        CHECK(r.u.rank_k() == 4);
        CHECK(r.u.rank_v() == 4);
        CHECK(r.u.bytes() == 7 * 32 + 2 * (4 + 64));
    }
}

TEST_CASE("zack: stream mode is refused in one line", "[cpu]") {
    const PolicySpec s = parse_spec("zack");
    LayerContext c;
    c.n_kv = 1;
    c.d = 4;
    CHECK_THROWS_WITH(s.entry->make(s.params)->make_layer(c), Catch::Contains("prefill mode only"));
}
