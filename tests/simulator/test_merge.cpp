// Merged entries (unit_store.h merge(), the log(count) bias), the kmeans policy (seed 003) with
// known answers, replay metrics and results files with merges.
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include "attn_trace.h"
#include "capture/h5util.h"
#include "engine/error.h"
#include "kernels/attend.h"
#include "policy_rig.h"
#include "replay_one.h"
#include "simulator/policy.h"
#include "simulator/replay.h"
#include "simulator/results_io.h"
#include "simulator/unit_store.h"

using namespace kvs;
using namespace kvs::sim;
namespace fs = std::filesystem;

namespace {

std::string tmp(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / ("kvs_merge_test_" + std::to_string(getpid()));
    fs::create_directories(dir);
    return (dir / name).string();
}

std::vector<float> rand_row(test::Lcg& rng, int d) {
    std::vector<float> r(static_cast<size_t>(d));
    for (auto& x : r) x = float(rng.uniform());
    return r;
}

struct Attn {
    std::vector<float> out, lse, probs;
};

Attn attend(const UnitStore& u, const std::vector<float>& q, int nq, int32_t qpos) {
    const int d = u.d(), n = u.size();
    Attn a;
    a.out.resize(size_t(nq) * size_t(d));
    a.lse.resize(size_t(nq));
    a.probs.resize(size_t(nq) * size_t(n));
    std::vector<int32_t> qp(static_cast<size_t>(nq), qpos);
    REQUIRE(kernels::attend_packed_cpu(q.data(), qp.data(), nq, u.packed_k(), u.packed_v(),
                                       u.positions(), u.bias(), n, d, 1.0f / std::sqrt(float(d)),
                                       a.out.data(), a.lse.data(),
                                       a.probs.data()) == kernels::Status::ok);
    return a;
}

}  // namespace

TEST_CASE("unit store: n tokens with equal keys merged into one entry get their attention",
          "[cpu]") {
    const int d = 8, T = 10, nq = 3;
    test::Lcg rng(7);
    const std::vector<float> A = rand_row(rng, d);
    const std::vector<int> same = {2, 4, 5, 7};  // tokens whose key is A
    std::vector<std::vector<float>> k, v;
    for (int t = 0; t < T; ++t) {
        k.push_back(std::find(same.begin(), same.end(), t) != same.end() ? A : rand_row(rng, d));
        v.push_back(rand_row(rng, d));
    }
    std::vector<float> q(size_t(nq) * d);
    for (auto& x : q) x = float(2.0 * rng.uniform());
    // fp32 rows: the only difference left is the order of the sums.
    UnitStore sep(d, 32, Precision::f32), mer(d, 32, Precision::f32);
    for (int t = 0; t < T; ++t) {
        sep.append(t, k[size_t(t)].data(), v[size_t(t)].data());
        mer.append(t, k[size_t(t)].data(), v[size_t(t)].data());
    }
    CHECK(mer.bias() == nullptr);
    const int64_t row = 2 * d * 4;  // fp32 K + V of one entry
    CHECK(mer.bytes() == T * row);
    // Entry 2 becomes the merged entry: key A, value the mean of the four values, count 4.
    std::vector<float> vm(static_cast<size_t>(d), 0.0f);
    for (int t : same)
        for (int c = 0; c < d; ++c) vm[size_t(c)] += v[size_t(t)][size_t(c)] / 4.0f;
    std::vector<uint8_t> fold(size_t(T), 0);
    fold[4] = fold[5] = fold[7] = 1;
    mer.merge(2, A.data(), vm.data(), 4, fold);

    REQUIRE(mer.size() == T - 3);
    CHECK(mer.count(2) == 4);
    CHECK(mer.count(0) == 1);
    CHECK(mer.folded(2) == std::vector<int32_t>{4, 5, 7});
    CHECK(mer.folded(3).empty());
    REQUIRE(mer.bias() != nullptr);
    CHECK(mer.bias()[2] == Approx(std::log(4.0)));
    CHECK(mer.bias()[0] == 0.0f);
    CHECK(mer.any_merged());
    // The folded tokens left as entries; each is recorded as folded into position 2.
    CHECK(mer.evicted_log() == std::vector<int32_t>{4, 5, 7});
    const std::vector<std::pair<int32_t, int32_t>> ml = {{4, 2}, {5, 2}, {7, 2}};
    CHECK(mer.merged_log() == ml);
    // Bytes: 7 entries' rows plus the merged entry's count (a uint16).
    CHECK(mer.bytes() == (T - 3) * row + UnitStore::kCountBytes);

    const Attn a = attend(sep, q, nq, T - 1), b = attend(mer, q, nq, T - 1);
    for (int i = 0; i < nq; ++i) {
        INFO("query row " << i);
        CHECK(b.lse[size_t(i)] == Approx(a.lse[size_t(i)]).epsilon(1e-6));
        for (int c = 0; c < d; ++c)
            CHECK(b.out[size_t(i) * d + size_t(c)] ==
                  Approx(a.out[size_t(i) * d + size_t(c)]).margin(1e-6));
        // The merged entry's probability is the four tokens' sum; the others are unchanged.
        double p4 = 0;
        for (int t : same) p4 += a.probs[size_t(i) * T + size_t(t)];
        CHECK(b.probs[size_t(i) * (T - 3) + 2] == Approx(p4).margin(1e-6));
        CHECK(b.probs[size_t(i) * (T - 3) + 0] == Approx(a.probs[size_t(i) * T]).margin(1e-7));
    }
    // Without the bias the merged entry would get a quarter of that: the bias is what matters.
    {
        std::vector<float> lse(static_cast<size_t>(nq)), p(size_t(nq) * size_t(T - 3));
        std::vector<int32_t> qp(static_cast<size_t>(nq), T - 1);
        REQUIRE(kernels::attend_packed_cpu(q.data(), qp.data(), nq, mer.packed_k(), mer.packed_v(),
                                           mer.positions(), nullptr, T - 3, d,
                                           1.0f / std::sqrt(float(d)), nullptr, lse.data(),
                                           p.data()) == kernels::Status::ok);
        CHECK(std::fabs(p[2] - b.probs[2]) > 1e-3);
    }
    // Evicting the merged entry leaves no merged entry: no bias again.
    mer.evict_index(2);
    CHECK(mer.bias() == nullptr);
    CHECK(mer.bytes() == (T - 4) * row);
    CHECK_THROWS_WITH(mer.merge(0, A.data(), vm.data(), 70000, std::vector<uint8_t>(6, 0)),
                      Catch::Contains("1 to 65535 tokens"));
}

// kmeans layers are driven by hand (test::PolicyRig): every query gives token `hot` attention 1
// and every other held entry 0.01.

TEST_CASE("kmeans: two tight clusters of identical keys give two centroids, counts and means",
          "[cpu]") {
    const int d = 4;
    test::Lcg rng(11);
    const std::vector<float> A = {1, 0, 0, 0}, B = {0, 1, 0, 0};
    // Tokens 0..16: A at 0, 2, 4, 6 and 9..15; B at 1, 3, 5, 8; token 7 (the hot one) and 16
    // (the newest at the second pruning) random.
    std::vector<std::vector<float>> k, v;
    for (int t = 0; t <= 16; ++t) {
        const bool a = (t <= 6 && t % 2 == 0) || (t >= 9 && t <= 15);
        const bool b = (t <= 5 && t % 2 == 1) || t == 8;
        k.push_back(a ? A : b ? B : rand_row(rng, d));
        v.push_back(rand_row(rng, d));
    }
    auto mean_of = [&](const std::vector<int>& ts) {
        std::vector<double> m(static_cast<size_t>(d), 0.0);
        for (int t : ts)
            for (int c = 0; c < d; ++c) m[size_t(c)] += double(v[size_t(t)][size_t(c)]) / ts.size();
        return m;
    };
    test::PolicyRig r("kmeans:max_cache_size=2,num_clusters=2,pruning_interval=8,lookback_window=8",
                      d, 32);
    for (int t = 0; t <= 8; ++t) r.step(t, k[size_t(t)], v[size_t(t)], 7);
    // First pruning at t = 0 (nothing to do), the second at t = 8: tokens 0..7 are candidates,
    // the hot token 7 is kept with the newest (8); 0..6 are pruned: 0 founds centroid A, 1
    // centroid B, the rest join the centroid of their key.
    UnitStore& u = r.units[0];
    CHECK(r.held() == std::vector<int32_t>{0, 1, 7, 8});
    CHECK(r.layer->budget_tokens(8, 0) == 4);  // max_cache_size + num_clusters
    CHECK(u.count(0) == 4);
    CHECK(u.count(1) == 3);
    CHECK(u.count(2) == 1);
    CHECK(u.folded(0) == std::vector<int32_t>{2, 4, 6});
    CHECK(u.folded(1) == std::vector<int32_t>{3, 5});
    CHECK(r.k_row(0) == A);
    CHECK(r.k_row(1) == B);
    {
        const auto m0 = mean_of({0, 2, 4, 6}), m1 = mean_of({1, 3, 5});
        const auto v0 = r.v_row(0), v1 = r.v_row(1);
        for (int c = 0; c < d; ++c) {
            CHECK(v0[size_t(c)] == Approx(m0[size_t(c)]).margin(1e-6));
            CHECK(v1[size_t(c)] == Approx(m1[size_t(c)]).margin(1e-6));
        }
    }
    CHECK(u.bytes() == 4 * 2 * d * 4 + 2 * UnitStore::kCountBytes);
    auto ml = u.merged_log();
    std::sort(ml.begin(), ml.end());
    const std::vector<std::pair<int32_t, int32_t>> want = {{2, 0}, {3, 1}, {4, 0}, {5, 1}, {6, 0}};
    CHECK(ml == want);
    u.merged_log().clear();
    std::vector<int32_t> ev = u.evicted_log();
    std::sort(ev.begin(), ev.end());
    CHECK(ev == std::vector<int32_t>{2, 3, 4, 5, 6});
    u.evicted_log().clear();
    // Between prunings the cache grows by a token a step, and the budget with it.
    for (int t = 9; t <= 15; ++t) {
        r.step(t, k[size_t(t)], v[size_t(t)], 7);
        CHECK(r.layer->budget_tokens(t, 0) == 4 + (t - 8));
        CHECK(u.size() <= r.layer->budget_tokens(t, 0));
    }
    // Third pruning at t = 16: 8 and 9..15 are pruned (7 stays hot); the existing centroids
    // take them: A gets 9..15 (count 11), B gets 8 (count 4).
    r.step(16, k[16], v[16], 7);
    CHECK(r.held() == std::vector<int32_t>{0, 1, 7, 16});
    CHECK(u.count(0) == 11);
    CHECK(u.count(1) == 4);
    CHECK(u.folded(1) == std::vector<int32_t>{3, 5, 8});
    {
        const auto m0 = mean_of({0, 2, 4, 6, 9, 10, 11, 12, 13, 14, 15}),
                   m1 = mean_of({1, 3, 5, 8});
        const auto v0 = r.v_row(0), v1 = r.v_row(1);
        for (int c = 0; c < d; ++c) {
            CHECK(v0[size_t(c)] == Approx(m0[size_t(c)]).margin(1e-6));
            CHECK(v1[size_t(c)] == Approx(m1[size_t(c)]).margin(1e-6));
        }
    }

    // A fixed learning rate: c += eta (x - c), in the order the tokens were pruned.
    test::PolicyRig e(
        "kmeans:max_cache_size=2,num_clusters=2,pruning_interval=8,lookback_window=8,"
        "kmeans_learning_rate=0.5",
        d, 32);
    for (int t = 0; t <= 8; ++t) e.step(t, k[size_t(t)], v[size_t(t)], 7);
    REQUIRE(e.held() == std::vector<int32_t>{0, 1, 7, 8});
    CHECK(e.units[0].count(0) == 4);
    const auto v0 = e.v_row(0);
    for (int c = 0; c < d; ++c) {
        double x = v[0][size_t(c)];
        for (int t : {2, 4, 6}) x += 0.5 * (v[size_t(t)][size_t(c)] - x);
        CHECK(v0[size_t(c)] == Approx(x).margin(1e-6));
    }

    // num_clusters = 0: pruning alone, nothing merged.
    test::PolicyRig p("kmeans:max_cache_size=2,num_clusters=0,pruning_interval=8,lookback_window=8",
                      d, 32);
    for (int t = 0; t <= 8; ++t) p.step(t, k[size_t(t)], v[size_t(t)], 7);
    CHECK(p.held() == std::vector<int32_t>{7, 8});
    CHECK_FALSE(p.units[0].any_merged());
    CHECK(p.units[0].merged_log().empty());
}

TEST_CASE("kmeans: bad parameters are one-line errors", "[cpu]") {
    CHECK_THROWS_WITH(parse_spec("kmeans:max_cache_size=0"),
                      Catch::Contains("parameter 'max_cache_size' must be in [1,"));
    CHECK_THROWS_WITH(parse_spec("kmeans:num_clusters=-1"),
                      Catch::Contains("parameter 'num_clusters' must be in [0,"));
    CHECK_THROWS_WITH(parse_spec("kmeans:pruning_interval=0"),
                      Catch::Contains("parameter 'pruning_interval' must be in [1,"));
    CHECK_THROWS_WITH(parse_spec("kmeans:lookback_window=2.5"),
                      Catch::Contains("parameter 'lookback_window' must be an integer"));
    CHECK_THROWS_WITH(parse_spec("kmeans:kmeans_learning_rate=1.5"),
                      Catch::Contains("parameter 'kmeans_learning_rate' must be in [0, 1]"));
    CHECK_THROWS_WITH(parse_spec("kmeans:budget=64"), Catch::Contains("has no parameter 'budget'"));
    const PolicySpec s = parse_spec("kmeans");
    CHECK(s.canonical ==
          "kmeans:max_cache_size=1024,num_clusters=256,pruning_interval=512,lookback_window=256,"
          "kmeans_learning_rate=0,gqa=mean");
}

namespace {

RunResult run1(const std::string& path, const std::string& spec, Mode mode) {
    return test::replay_one(path, spec, mode, 4);
}

std::string merge_trace() {
    const std::string p = tmp("merge_trace.h5");
    if (!fs::exists(p)) {
        test::AttnTraceOptions o;
        o.prompt_len = 96;
        test::write_attn_trace(p, o);
    }
    return p;
}

}  // namespace

// With num_clusters >= 1 kmeans drops nothing: every token is held or folded into a centroid,
// so the recall (the full-attention mass of the original tokens the held entries stand for) is 1
// at every step, while the output error is not 0; with num_clusters = 0 (pruning alone) it is not.
TEST_CASE("kmeans in replay: folded tokens keep their recall, decisions recorded", "[cpu]") {
    const std::string path = merge_trace();
    const std::string spec =
        "kmeans:max_cache_size=12,num_clusters=6,pruning_interval=16,"
        "lookback_window=8";
    for (const Mode mode : {Mode::stream, Mode::prefill}) {
        INFO(mode_name(mode));
        const RunResult r = run1(path, spec, mode);
        const size_t U = r.n_units(), T = size_t(r.n_tokens);
        float rmin = 1, emax = 0;
        for (size_t i = 0; i < r.recall.size(); ++i) {
            rmin = std::min(rmin, r.recall[i]);
            emax = std::max(emax, r.err[i]);
        }
        CHECK(rmin > 0.9999f);
        CHECK(emax > 0.01f);
        size_t folded = 0;
        for (size_t u = 0; u < U; ++u) {
            int held_end = 0;
            int n_merged = 0;
            for (size_t j = 0; j < T; ++j) {
                const int32_t into = r.merged_into[u * T + j], at = r.merged_at[u * T + j];
                held_end += r.evicted_at[u * T + j] < 0;
                if (into < 0) {
                    CHECK(at == -1);
                    continue;
                }
                ++folded;
                // kmeans folds a token once, when it is pruned: it leaves as an entry then, into
                // a centroid that is never evicted.
                CHECK(r.evicted_at[u * T + j] == at);
                CHECK(r.evicted_at[u * T + size_t(into)] == -1);
                CHECK(r.merged_into[u * T + size_t(into)] == -1);
            }
            // Every token is accounted for: held at the end or folded.
            for (size_t j = 0; j < T; ++j)
                CHECK((r.evicted_at[u * T + j] < 0) != (r.merged_into[u * T + j] >= 0));
            // Bytes at the last step: fp16 rows of every held entry plus a count per centroid
            // that took at least one token.
            std::vector<int32_t> reps;
            for (size_t j = 0; j < T; ++j)
                if (r.merged_into[u * T + j] >= 0) reps.push_back(r.merged_into[u * T + j]);
            std::sort(reps.begin(), reps.end());
            n_merged = int(std::unique(reps.begin(), reps.end()) - reps.begin());
            const size_t last = (r.n_steps() - 1) * U + u;
            CHECK(r.held[last] == held_end);
            CHECK(r.bytes[last] ==
                  int64_t(held_end) * 2 * r.d * 2 + int64_t(n_merged) * UnitStore::kCountBytes);
            CHECK(held_end <= 12 + 6 + 15);
        }
        CHECK(folded > 0);
        // Pruning alone loses attention mass.
        const RunResult p = run1(path,
                                 "kmeans:max_cache_size=12,num_clusters=0,pruning_interval=16,"
                                 "lookback_window=8",
                                 mode);
        CHECK(p.summary.recall_mean < 0.99);
        for (int32_t x : p.merged_into) CHECK(x == -1);
    }
}

TEST_CASE("results files: merges round-trip, schema 2 files read without them", "[cpu]") {
    const RunResult r = run1(merge_trace(),
                             "kmeans:max_cache_size=12,num_clusters=6,pruning_interval=16,"
                             "lookback_window=8",
                             Mode::stream);
    const std::string p = tmp("merge_results.h5");
    write_results(p, {r}, "test");
    auto back = read_results(p);
    REQUIRE(back.size() == 1);
    CHECK(back[0].merged_into == r.merged_into);
    CHECK(back[0].merged_at == r.merged_at);
    CHECK(back[0].evicted_at == r.evicted_at);
    // The previous writer's layout: schema_version 2, no merged_into / merged_at.
    const std::string old = tmp("merge_results_v2.h5");
    fs::copy_file(p, old, fs::copy_options::overwrite_existing);
    {
        capture::h5::init();
        capture::h5::Id f(H5Fopen(old.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
        REQUIRE(f.valid());
        REQUIRE(H5Adelete(f.get(), "schema_version") >= 0);
        capture::h5::write_attr(f.get(), "schema_version", int64_t(2), old);
        REQUIRE(H5Ldelete(f.get(), "runs/0000/merged_into", H5P_DEFAULT) >= 0);
        REQUIRE(H5Ldelete(f.get(), "runs/0000/merged_at", H5P_DEFAULT) >= 0);
    }
    back = read_results(old);
    REQUIRE(back.size() == 1);
    CHECK(back[0].evicted_at == r.evicted_at);
    CHECK(back[0].merged_into == std::vector<int32_t>(r.merged_into.size(), -1));
    CHECK(back[0].merged_at == std::vector<int32_t>(r.merged_at.size(), -1));
    // A schema 3 file without them is damaged.
    {
        capture::h5::Id f(H5Fopen(old.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
        REQUIRE(H5Adelete(f.get(), "schema_version") >= 0);
        capture::h5::write_attr(f.get(), "schema_version", int64_t(3), old);
    }
    CHECK_THROWS_WITH(read_results(old), Catch::Contains("missing dataset 'merged_into'"));
}
