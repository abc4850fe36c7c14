// razor (RazorAttention): a hand-built trace with one induction head (layer 1, KV head 0: each
// query attends to the tokens that followed earlier occurrences of its token); the others are
// diffuse. Known answers: that unit is found and keeps everything; every other unit holds the
// sinks, the compensation token and the newest tokens, and the compensation token stands for
// exactly the tokens it dropped, with their mean key and value.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "attn_trace.h"
#include "engine/error.h"
#include "replay_one.h"
#include "simulator/policy.h"
#include "simulator/replay.h"
#include "simulator/results_io.h"
#include "simulator/unit_store.h"

using namespace kvs;
using namespace kvs::sim;
namespace fs = std::filesystem;

namespace {

std::string induction_trace() {
    const fs::path dir = fs::temp_directory_path() / ("kvs_razor_" + std::to_string(getpid()));
    fs::create_directories(dir);
    const std::string p = (dir / "induction.h5").string();
    test::AttnTraceOptions o;
    o.T = 160;
    o.n_layer = 2, o.n_head = 4, o.n_kv = 2, o.d = 16;
    o.id_period = 16;
    o.induction_layer = 1, o.induction_kv = 0;
    o.prompt_len = 128;
    test::write_attn_trace(p, o);
    return p;
}

}  // namespace

TEST_CASE("razor: the induction head keeps everything, the others sinks + recent + compensation",
          "[cpu]") {
    const std::string path = induction_trace();
    // 4 units; induction=0.25 marks one, echo=0 none.
    const RunResult r =
        test::replay_one(path, "razor:budget=24,induction=0.25,echo=0", Mode::prefill);
    const size_t T = 160, H = 2;
    const int64_t P = 128;
    for (size_t u = 0; u < 4; ++u) {
        const std::set<int> held = test::held_set(r, u, int64_t(T) - 1);
        if (u == 1 * H + 0) {
            CHECK(held.size() == T);  // the retrieval unit
            continue;
        }
        // Sinks 0..3, the compensation token (founded by token 4, the oldest dropped) and the
        // newest 19 tokens.
        std::set<int> want = {0, 1, 2, 3, 4};
        for (int j = int(T) - 19; j < int(T); ++j) want.insert(j);
        CHECK(held == want);
        // Tokens 5 .. T - 20 were folded into the compensation token at position 4: at P the
        // prompt's, then one a step while decoding.
        for (size_t j = 5; j + 19 < T; ++j) {
            INFO("unit " << u << " token " << j);
            CHECK(r.merged_into[u * T + j] == 4);
            const int64_t want_at = int64_t(j) <= P - 20 ? P : int64_t(j) + 19;
            CHECK(r.merged_at[u * T + j] == want_at);
        }
        CHECK(r.merged_into[u * T + 4] == -1);
    }
    // Without compensation the same tokens are dropped: nothing is merged.
    const RunResult d =
        test::replay_one(path, "razor:budget=24,induction=0.25,echo=0,compensate=0", Mode::prefill);
    for (size_t u = 0; u < 4; ++u) {
        if (u == H) continue;
        for (size_t j = 0; j < T; ++j) CHECK(d.merged_into[u * T + j] == -1);
        // No compensation token to hold: the sinks and the newest 20.
        CHECK(test::held_set(d, u, int64_t(T) - 1).size() == 24);
    }
    // The compensation token recovers attention mass the drop loses (recall counts the mass of
    // the tokens an entry stands for).
    CHECK(r.summary.recall_mean > d.summary.recall_mean);
    // With induction=0 and echo=0 no unit is kept whole.
    const RunResult none =
        test::replay_one(path, "razor:budget=24,induction=0,echo=0", Mode::prefill);
    CHECK(test::held_set(none, H, int64_t(T) - 1).size() == 24);

    // The head list goes into the results file: unit (1, 0) is the one retrieval unit, through a
    // write and a read; a policy without roles writes none.
    const std::vector<int8_t> want_roles = {0, 0, 1, 0};
    CHECK(r.unit_role == want_roles);
    CHECK(r.unit_role_names == std::vector<std::string>{"compressed", "retrieval"});
    CHECK(none.unit_role == std::vector<int8_t>{0, 0, 0, 0});
    const std::string out = (fs::path(path).parent_path() / "roles.h5").string();
    const RunResult w = test::replay_one(path, "window:budget=24", Mode::prefill);
    CHECK(w.unit_role.empty());
    write_results(out, {r, w}, "test");
    const auto back = read_results(out);
    REQUIRE(back.size() == 2);
    CHECK(back[0].unit_role == want_roles);
    CHECK(back[0].unit_role_names == r.unit_role_names);
    CHECK(back[1].unit_role.empty());
}

TEST_CASE("razor: stream mode plans at the first step over budget, bad parameters", "[cpu]") {
    const std::string path = induction_trace();
    const RunResult r = test::replay_one(path, "razor:budget=24,induction=0.25,echo=0");
    const size_t T = 160;
    // Unit (0, 1) is not retrieval: from step 24 on it holds 24 entries.
    for (size_t si = 0; si < r.n_steps(); ++si) {
        const int64_t t = r.steps[si];
        const int32_t held = r.held[si * 4 + 1];
        CHECK(held == (t < 24 ? t + 1 : 24));
        CHECK(r.held[si * 4 + 2] == t + 1);  // the induction unit (1, 0)
    }
    CHECK(test::held_set(r, 1, int64_t(T) - 1).size() == 24);
    CHECK_THROWS_WITH(parse_spec("razor:budget=5").entry->make(parse_spec("razor:budget=5").params),
                      Catch::Contains("budget 5 must be >= sinks + 2 = 6"));
    CHECK_THROWS_WITH(parse_spec("razor:budget=64,induction=2"), Catch::Contains("'induction'"));
}

TEST_CASE("razor: the compensation token is the exact mean of the tokens it stands for", "[cpu]") {
    // One layer, one KV head, no retrieval unit (induction=0, echo=0), prefill mode at P = 12,
    // budget 8: at P tokens 4..8 are folded (4 founds the entry), then one a step.
    const int d = 4;
    const int64_t T = 16, P = 12;
    test::Lcg rng(5);
    std::vector<std::vector<float>> k(static_cast<size_t>(T)), v(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t)
        for (int c = 0; c < d; ++c) {
            k[size_t(t)].push_back(float(rng.uniform()));
            v[size_t(t)].push_back(float(rng.uniform()));
        }
    PlanContext pc;
    pc.layers = {0};
    pc.n_layer = 1, pc.n_head = 2, pc.n_kv = 1, pc.d = d;
    pc.kv_of_q = {0, 0};
    pc.n_tokens = T, pc.prefill_len = P;
    pc.mode = Mode::prefill;
    pc.attn_scale = 0.5f;
    for (int64_t t = 0; t < T; ++t) pc.tokens.push_back(int32_t(t % 5));
    pc.read = [&](PlanField f, int, int, int64_t t0, int64_t t1) {
        std::vector<float> out;
        for (int64_t t = t0; t < t1; ++t)
            out.insert(out.end(), k[size_t(t)].begin(), k[size_t(t)].end());
        (void)f;
        return out;
    };
    const PolicySpec spec = parse_spec("razor:budget=8,induction=0,echo=0");
    const auto policy = spec.entry->make(spec.params);
    const auto plan = policy->plan(pc);
    const auto layer = policy->make_layer(layer_context(pc, 0, plan.get()));
    std::vector<UnitStore> units;
    units.emplace_back(d, 32, Precision::f32);
    UnitStore& u = units[0];
    auto mean = [&](int64_t a, int64_t b, const std::vector<std::vector<float>>& rows) {
        std::vector<double> m(static_cast<size_t>(d), 0.0);
        for (int64_t t = a; t <= b; ++t)
            for (int c = 0; c < d; ++c)
                m[size_t(c)] += rows[size_t(t)][size_t(c)] / double(b - a + 1);
        return m;
    };
    for (int64_t t = 0; t < T; ++t) {
        u.append(int32_t(t), k[size_t(t)].data(), v[size_t(t)].data());
        if (t >= P) layer->update(t, units);
        if (t < P) continue;
        // Held: sinks 0..3, the compensation token at 4, the newest 3.
        REQUIRE(u.size() == 8);
        CHECK(u.pos(4) == 4);
        const int64_t last = t - 3;  // the newest folded token
        CHECK(u.count(4) == int(last - 4 + 1));
        std::vector<float> rk(static_cast<size_t>(d)), rv(static_cast<size_t>(d));
        u.k_row(4, rk.data());
        u.v_row(4, rv.data());
        const auto mk = mean(4, last, k), mv = mean(4, last, v);
        for (int c = 0; c < d; ++c) {
            CHECK(rk[size_t(c)] == Approx(mk[size_t(c)]).margin(1e-6));
            CHECK(rv[size_t(c)] == Approx(mv[size_t(c)]).margin(1e-6));
        }
    }
}
