// Each policy's default is its published algorithm (issue 10): hand-built cases whose answers
// follow from the papers' / official code's rules, worked out by hand in the comments.
#include <catch2/catch.hpp>
#include <map>
#include <set>

#include "../../simulator/src/policies/snap.h"
#include "attn_trace.h"
#include "engine/error.h"
#include "replay_one.h"
#include "simulator/policy.h"
#include "simulator/replay.h"

using namespace kvs;
using namespace kvs::sim;

namespace {

std::string trace_of(const test::AttnTraceOptions& o, const std::string& name) {
    return test::cached_attn_trace(o, name, "kvs_pub_test_");
}

RunResult run(const std::string& path, const std::string& spec, Mode mode) {
    return test::replay_one(path, spec, mode, 4);
}

}  // namespace

TEST_CASE("snapkv pooling is torch's avg_pool1d / max_pool1d with padding kernel/2", "[cpu]") {
    // avg_pool1d(kernel 5, padding 2, count_include_pad): zero padding, divided by 5.
    const std::vector<double> s = {1, 0, 0, 0, 0, 0, 4};
    const auto a = detail::snap_pool(s, 5, false);
    CHECK(a[0] == Approx(1.0 / 5));
    CHECK(a[2] == Approx(1.0 / 5));
    CHECK(a[3] == Approx(0.0));
    CHECK(a[4] == Approx(4.0 / 5));
    CHECK(a[6] == Approx(4.0 / 5));  // not 4/3: the padding counts
    const auto m = detail::snap_pool(s, 3, true);
    CHECK(m[0] == 1);
    CHECK(m[1] == 1);
    CHECK(m[2] == 0);
    CHECK(m[5] == 4);
    // kernel 1 is the identity.
    CHECK(detail::snap_pool(s, 1, false)[6] == Approx(4.0));
}

TEST_CASE("snapkv prefill keeps budget - window scored tokens, the window, then grows", "[cpu]") {
    test::AttnTraceOptions o;
    o.prompt_len = 120;
    const std::string path = trace_of(o, "p120.h5");
    const RunResult r = run(path, "snapkv:budget=40,window=8", Mode::prefill);
    REQUIRE(r.steps.front() == 120);
    const size_t U = r.n_units();
    for (size_t u = 0; u < U; ++u) {
        // At P: 32 scored + the window (112..119) + token 120.
        const auto h = test::held_set(r, u, 120);
        CHECK(h.size() == 41);
        for (int j = 112; j <= 120; ++j) CHECK(h.count(j) == 1);
        // Decoding adds tokens without eviction: nothing is evicted after P.
        for (size_t j = 0; j < size_t(r.n_tokens); ++j)
            CHECK(r.evicted_at[u * size_t(r.n_tokens) + j] <= 120);
        CHECK(r.held[(r.n_steps() - 1) * U + u] == 41 + (r.n_tokens - 1 - 120));
    }
}

TEST_CASE("pyramidkv: the top layer keeps (B - w)/beta scored tokens plus the window", "[cpu]") {
    // Two layers, P = 120, B = 40, w = 8, beta = 4: m = 32, min = 8, max = 56; 120 - 8 >= 56 (no
    // clamp), 120 >= 2m (pyramid): steps = 48; layer 0 keeps 56 + 8, layer 1 keeps 8 + 8 (plus
    // token P in both).
    test::AttnTraceOptions o;
    o.prompt_len = 120;
    const std::string path = trace_of(o, "p120.h5");
    const RunResult r = run(path, "pyramidkv:budget=40,window=8,beta=4", Mode::prefill);
    const size_t H = size_t(r.n_kv);
    for (size_t g = 0; g < H; ++g) {
        CHECK(r.held[0 * H + g] == 56 + 8 + 1);
        CHECK(r.held[1 * H + g] == 8 + 8 + 1);
        for (int j = 112; j <= 120; ++j) CHECK(test::held_set(r, H + g, 120).count(j) == 1);
    }
    // The clamp: P = 114, B = 64, w = 8, beta = 20: m = 56, min = 2, max = 110 >= 114 - 8, so
    // max = 106 (the bottom layer keeps every candidate) and min = 112 - 106 = 6.
    o.prompt_len = 114;
    const RunResult c =
        run(trace_of(o, "p114.h5"), "pyramidkv:budget=64,window=8,beta=20", Mode::prefill);
    for (size_t g = 0; g < H; ++g) {
        CHECK(c.held[0 * H + g] == 115);
        CHECK(c.held[1 * H + g] == 6 + 8 + 1);
    }
    // A prompt shorter than 2m is compressed uniformly (SnapKV): B = 64 -> 64 + 1 in both.
    o.prompt_len = 100;
    const RunResult u =
        run(trace_of(o, "p100.h5"), "pyramidkv:budget=64,window=8,beta=20", Mode::prefill);
    for (size_t x = 0; x < u.n_units(); ++x) CHECK(u.held[x] == 65);
}

TEST_CASE("h2o: equal heavy and recent halves, and recent=0 keeps the new token", "[cpu]") {
    test::AttnTraceOptions o;
    o.hot = 10;
    const std::string path = trace_of(o, "hot.h5");
    // B = 21: H2O's cache 20 = 10 heavy + 10 recent, plus the new token.
    const RunResult r = run(path, "h2o:budget=21", Mode::stream);
    const size_t T = size_t(r.n_tokens);
    for (size_t u = 0; u < r.n_units(); ++u) {
        for (int64_t t : {int64_t(60), int64_t(100), int64_t(T - 1)}) {
            const auto h = test::held_set(r, u, t);
            CHECK(h.size() == 21);
            for (int64_t j = t - 10; j <= t; ++j) CHECK(h.count(int(j)) == 1);
            CHECK(h.count(10) == 1);  // the heavy hitter
        }
    }
    // recent=0: a token is never evicted at the step it arrives (it is scored by its own query
    // first), and the heavy hitter stays.
    const RunResult z = run(path, "h2o:budget=21,recent=0", Mode::stream);
    size_t evicted = 0;
    for (size_t u = 0; u < z.n_units(); ++u)
        for (size_t j = 0; j < T; ++j) {
            const int32_t e = z.evicted_at[u * T + j];
            CHECK(e != int32_t(j));
            evicted += e >= 0;
            if (j == 10) CHECK(e == -1);
        }
    CHECK(evicted > 0);
}

TEST_CASE("tova: one decision per layer by default, per KV head with scope=head", "[cpu]") {
    test::AttnTraceOptions o;
    o.hot = 10;
    o.hot_kv = 0;  // KV head 0's queries look at token 10, KV head 1's are diffuse
    const std::string path = trace_of(o, "hot_kv0.h5");
    const RunResult l = run(path, "tova:budget=24", Mode::stream);
    const RunResult h = run(path, "tova:budget=24,scope=head", Mode::stream);
    const size_t T = size_t(l.n_tokens), H = size_t(l.n_kv);
    bool differ = false;
    for (size_t layer = 0; layer < l.layers.size(); ++layer)
        for (size_t j = 0; j < T; ++j) {
            CHECK(l.evicted_at[(layer * H + 0) * T + j] == l.evicted_at[(layer * H + 1) * T + j]);
            differ |=
                h.evicted_at[(layer * H + 0) * T + j] != h.evicted_at[(layer * H + 1) * T + j];
        }
    CHECK(differ);
}

TEST_CASE("agd: evicts and sets bits every k steps, and quantizes with a small budget", "[cpu]") {
    test::AttnTraceOptions o;
    o.hot = 10;
    const std::string path = trace_of(o, "hot.h5");
    const RunResult r = run(path, "agd:budget=16,k=8", Mode::stream);
    // Every eviction and every width change happens at an update step (0, 8, 16, ...).
    const size_t T = size_t(r.n_tokens);
    for (int32_t e : r.evicted_at)
        if (e >= 0) CHECK(e % 8 == 0);
    size_t narrow = 0;
    for (size_t i = 0; i + 3 < r.bit_events.size(); i += 4) {
        CHECK(r.bit_events[i + 2] % 8 == 0);
        narrow += r.bit_events[i + 3] < 16;
    }
    // Budget 16 (<= the old 32 protected tokens): tokens are still quantized.
    CHECK(narrow > 0);
    // Between updates the cache grows by one token a step.
    const size_t U = r.n_units();
    for (size_t st = 0; st < r.n_steps(); ++st) {
        const int64_t t = r.steps[st];
        if (t < 16) continue;
        CHECK(r.held[st * U] == 16 + t % 8);
    }
    (void)T;
}

TEST_CASE("agacc: re-evaluation every nr steps, independent of k", "[cpu]") {
    // k = 16, nr = 24 on the committed real trace: a width only goes up (a restore) at a
    // re-evaluation, so every raise is at a multiple of 24, and some are at multiples of 24
    // that are not multiples of 48 = lcm(16, 24) (the old rule re-evaluated only there).
    const std::string path = std::string(KVS_FIXTURES) + "/ref_trace.h5";
    const RunResult r = run(path, "agacc:k=16,nr=24", Mode::stream);
    std::map<std::pair<int32_t, int32_t>, int32_t> width;
    int raises = 0, off_lcm = 0;
    for (size_t i = 0; i + 3 < r.bit_events.size(); i += 4) {
        const auto key = std::make_pair(r.bit_events[i], r.bit_events[i + 1]);
        const int32_t step = r.bit_events[i + 2], bits = r.bit_events[i + 3];
        const auto it = width.find(key);
        const int32_t prev = it == width.end() ? 16 : it->second;
        if (bits > prev) {
            INFO("raise at step " << step);
            CHECK(step % 24 == 0);
            ++raises;
            off_lcm += step % 48 != 0;
        } else {
            INFO("tier change at step " << step);
            CHECK((step % 16 == 0 || step % 24 == 0));
        }
        width[key] = bits;
    }
    CHECK(raises > 0);
    CHECK(off_lcm > 0);
    CHECK_THROWS_WITH(parse_spec("agacc:nw=0"), Catch::Contains("'nw' must be in [1"));
}

TEST_CASE("out-of-range parameters are one-line errors naming the parameter", "[cpu]") {
    auto make = [](const std::string& s) {
        const PolicySpec p = parse_spec(s);
        return p.entry->make(p.params);
    };
    CHECK_THROWS_WITH(make("snapkv:budget=64,kernel=4"),
                      Catch::Contains("'kernel' must be odd and >= 1"));
    CHECK_THROWS_WITH(parse_spec("snapkv:budget=64,kernel=0"), Catch::Contains("'kernel'"));
    CHECK_THROWS_WITH(parse_spec("adakv:budget=64,alpha=1.5"),
                      Catch::Contains("'alpha' must be in [0, 1]"));
    CHECK_THROWS_WITH(make("snapkv:budget=20"), Catch::Contains("budget 20 is below the window") &&
                                                    Catch::Contains("window + 1 = 33"));
    CHECK_THROWS_WITH(make("dynamickv:budget=16"), Catch::Contains("ws + 1 = 17"));
    CHECK_THROWS_WITH(parse_spec("dynamickv:budget=64,alloc=global"),
                      Catch::Contains("'alloc' must be one of official, capped"));
    CHECK_THROWS_WITH(make("h2o:budget=8,recent=8"),
                      Catch::Contains("budget must be >= recent + 1 = 9"));
    CHECK_THROWS_WITH(parse_spec("snapkv:budget=64,pool=mean"),
                      Catch::Contains("'pool' must be one of avg, max"));
    CHECK_THROWS_WITH(parse_spec("tova:budget=64,scope=all"),
                      Catch::Contains("'scope' must be one of layer, head"));
    CHECK_NOTHROW(make("snapkv:budget=33"));
}

TEST_CASE("dynamickv is not snapkv in stream mode: layer shares differ after the plan step",
          "[cpu]") {
    // The committed real trace (SmolLM2 layers 2 and 29). The first step over budget 48 is 48;
    // the shares are planned at 96 and differ between the two layers from then on.
    const std::string path = std::string(KVS_FIXTURES) + "/ref_trace.h5";
    const RunResult d = run(path, "dynamickv:budget=48", Mode::stream);
    const RunResult s = run(path, "snapkv:budget=48,window=16,kernel=7", Mode::stream);
    CHECK(d.evicted_at != s.evicted_at);
    const size_t U = d.n_units(), H = size_t(d.n_kv);
    bool layers_differ = false;
    for (size_t st = 0; st < d.n_steps(); ++st) {
        const int64_t t = d.steps[st];
        if (t < 96) {
            for (size_t u = 0; u < U; ++u)
                CHECK(d.budget_tokens[st * U + u] == s.budget_tokens[st * U + u]);
        } else {
            layers_differ |= d.budget_tokens[st * U] != d.budget_tokens[st * U + H];
        }
    }
    CHECK(layers_differ);
}
