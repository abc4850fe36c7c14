// Merged entries in the viewer's data model (schema 3 merged_into / merged_at): the reader on
// synthetic files with known folds, on broken ones and on a real kmeans replay written by
// kvscope's own results_io; the per-cell state the timeline draws from (folded_matrix) and what a
// merged entry stands for (the token strip's hover).
#include <algorithm>
#include <catch2/catch.hpp>
#include <numeric>

#include "attn_trace.h"
#include "engine/error.h"
#include "gguf_writer.h"
#include "replay_one.h"
#include "simulator/results_io.h"
#include "synthetic_results.h"
#include "viewdata/colormap.h"
#include "viewdata/quantities.h"
#include "viewdata/results.h"

using namespace kvs;
using kvs::view::Matrix;
using kvs::view::RunData;
using kvs::view::TokenState;

namespace {

// The toy's answer: what token j is in unit (l, h) at step t.
TokenState toy_state(const test::SyntheticRun& a, int64_t j, int64_t t, int l, int h) {
    if (j > t) return TokenState::Future;
    if (test::toy_held(a, j, t, l, h)) return TokenState::Held;
    return test::toy_merged_into(a, j) >= 0 ? TokenState::Folded : TokenState::Evicted;
}

std::string read_error(const std::string& p) {
    try {
        view::read_results(p);
    } catch (const Error& e) {
        return e.what();
    }
    return "no error";
}

}  // namespace

TEST_CASE("merges: a schema 3 file with folds reads the merge arrays", "[cpu]") {
    const std::string path = test::temp_path("merges_v3.h5");
    test::SyntheticRun a;
    a.fold_every = 5;  // tokens 5, 10, 15, ... fold into sink j % 4 when dropped
    test::ResultsOptions o;
    o.schema_version = 3;
    test::write_synthetic_results(path, {a}, o);
    const view::ResultsFile f = view::read_results(path);
    CHECK(f.schema_version == 3);
    const RunData& r = f.runs[0];
    REQUIRE(r.has_merges);
    REQUIRE(r.merged_into.size() == size_t(r.L * r.H * r.T));
    REQUIRE(r.merged_at.size() == r.merged_into.size());
    int n_folded = 0, n_evicted = 0;
    for (int l = 0; l < 2; ++l)
        for (int h = 0; h < 2; ++h)
            for (int64_t j = 0; j < r.T; ++j) {
                const size_t i = r.lht(l, h, j);
                const int32_t ev = r.evicted_at[i];
                const int32_t want = ev >= 0 ? test::toy_merged_into(a, j) : -1;
                REQUIRE(r.merged_into[i] == want);
                REQUIRE(r.merged_at[i] == (want >= 0 ? ev : -1));
                for (int64_t t = 0; t < r.T; ++t) {
                    const TokenState s = r.token_state(l, h, j, t);
                    REQUIRE(s == toy_state(a, j, t, l, h));
                    n_folded += s == TokenState::Folded;
                    n_evicted += s == TokenState::Evicted;
                }
            }
    // Both kinds of leaving occur, so the checks above tell them apart.
    CHECK(n_folded > 1000);
    CHECK(n_evicted > 1000);

    // What sink 0's entry stands for in unit (layer slot 1, KV head 1) at step 80: itself and
    // every multiple of 20 (j % 5 == 0, j % 4 == 0) the toy has dropped by then.
    const int64_t t = 80;
    std::vector<int32_t> want{0};
    for (int64_t j = 4; j <= t; ++j)
        if (test::toy_merged_into(a, j) == 0 && !test::toy_held(a, j, t, 1, 1))
            want.push_back(int32_t(j));
    CHECK(want.size() >= 3);
    CHECK(r.stands_for(1, 1, 0, t) == want);
    CHECK(r.stands_for(1, 1, 2, t).size() > 1);                    // sink 2 takes 10, 30, 50, ...
    CHECK(r.stands_for(1, 1, 79, t) == std::vector<int32_t>{79});  // a plain entry
    CHECK(r.stands_for(1, 1, 20, t).empty());  // folded: not an entry at this step
    // entry_sizes: merged entries count their tokens; the sum is held + folded tokens.
    const std::vector<int32_t> sz = r.entry_sizes(1, 1, t);
    CHECK(sz[0] == int32_t(want.size()));
    CHECK(sz[20] == 0);
    CHECK(sz[79] == 1);
    int held_folded = 0;
    for (int64_t j = 0; j <= t; ++j) {
        const TokenState s = toy_state(a, j, t, 1, 1);
        held_folded += s == TokenState::Held || s == TokenState::Folded;
    }
    CHECK(std::accumulate(sz.begin(), sz.end(), 0) == held_folded);
}

TEST_CASE("merges: the timeline's folded cells are exactly the folded tokens", "[cpu]") {
    const std::string path = test::temp_path("merges_tl.h5");
    test::SyntheticRun a;
    a.fold_every = 3;
    test::ResultsOptions o;
    o.schema_version = 3;
    test::write_synthetic_results(path, {a}, o);
    const RunData r = view::read_results(path).runs[0];
    // One unit (model layer 2 = slot 1, KV head 0): 1 where folded, 0 elsewhere, NaN above the
    // diagonal.
    const Matrix one = view::folded_matrix(r, 2, 0);
    REQUIRE(one.rows == r.S);
    REQUIRE(one.cols == r.T);
    int ones = 0;
    for (int64_t s = 0; s < r.S; ++s)
        for (int64_t j = 0; j < r.T; ++j) {
            if (j > s) {
                REQUIRE(std::isnan(one.at(s, j)));
                continue;
            }
            const bool folded = toy_state(a, j, s, 1, 0) == TokenState::Folded;
            REQUIRE(one.at(s, j) == (folded ? 1.0f : 0.0f));
            ones += folded;
        }
    CHECK(ones > 500);
    // Held stays what it was: a folded token is not held as an entry of its own.
    const Matrix held = view::results_matrix(r, view::Quantity::Held, 2, 0);
    for (int64_t s = 0; s < r.S; s += 3)
        for (int64_t j = 0; j <= s; ++j)
            if (one.at(s, j) > 0) REQUIRE(held.at(s, j) == 0.0f);
    // All units: the fraction of the 4 units (budgets 24..26) folding it.
    const Matrix all = view::folded_matrix(r, -1, -1);
    for (int64_t s = 30; s < r.S; s += 7)
        for (int64_t j = 0; j <= s; ++j) {
            int n = 0;
            for (int l = 0; l < 2; ++l)
                for (int h = 0; h < 2; ++h) n += toy_state(a, j, s, l, h) == TokenState::Folded;
            REQUIRE(all.at(s, j) == Approx(n / 4.0));
        }
    // The same run without merges: no folded cell anywhere.
    a.fold_every = 0;
    test::write_synthetic_results(path, {a}, o);
    const RunData plain = view::read_results(path).runs[0];
    CHECK_FALSE(plain.has_merges);
    const Matrix none = view::folded_matrix(plain, -1, -1);
    CHECK(std::none_of(none.v.begin(), none.v.end(), [](float x) { return x > 0; }));
}

TEST_CASE("merges: older schemas read as nothing merged", "[cpu]") {
    test::SyntheticRun a;
    a.fold_every = 5;  // ignored below schema 3: there is nowhere to write it
    for (int v : {1, 2}) {
        INFO("schema " << v);
        const std::string path = test::temp_path("merges_old.h5");
        test::ResultsOptions o;
        o.schema_version = v;
        test::write_synthetic_results(path, {a}, o);
        const view::ResultsFile f = view::read_results(path);
        CHECK(f.schema_version == v);
        const RunData& r = f.runs[0];
        CHECK_FALSE(r.has_merges);
        CHECK(r.merged_into == std::vector<int32_t>(size_t(r.L * r.H * r.T), -1));
        CHECK(r.merged_at == r.merged_into);
        // A dropped token is evicted, never folded.
        CHECK(r.token_state(0, 0, 20, 90) == TokenState::Evicted);
        CHECK(r.token_state(0, 0, 89, 90) == TokenState::Held);
        CHECK(r.token_state(0, 0, 91, 90) == TokenState::Future);
    }
}

TEST_CASE("merges: malformed merge arrays give one clear line", "[cpu]") {
    test::SyntheticRun a;
    a.fold_every = 5;
    test::ResultsOptions o;
    o.schema_version = 3;
    {
        // Token 5 (unit 0: budget 24, dropped at step 25) names representative 1 with no step.
        const std::string p = test::temp_path("merges_bad.h5");
        o.bad_merges = true;
        test::write_synthetic_results(p, {a}, o);
        CHECK(read_error(p) ==
              "results '" + p +
                  "' runs/0000: 'merged_into' / 'merged_at' of token 5 in layer slot 0, KV head 0 "
                  "are 1 / -1 (evicted_at 25): want both -1, or a representative in [0, 100) "
                  "other than the token and a step in [0, 100) at or after evicted_at");
        o.bad_merges = false;
    }
    {
        const std::string p = test::temp_path("merges_drop.h5");
        o.drop_dataset = "merged_into";
        test::write_synthetic_results(p, {a}, o);
        CHECK(read_error(p) == "results '" + p + "': missing dataset 'runs/0000/merged_into'");
    }
}

TEST_CASE("merges: a token folded twice and an entry evicted after its fold", "[cpu]") {
    // The toy without merges (window of 24 in unit 0: token j dropped at step j + 20), with
    // folds written in by hand, as a policy that merges entries into entries would record them:
    // token 30 is folded into entry 45 at step 50 (when the toy drops it), entry 45 into entry 60
    // at step 65; entry 60 is evicted at step 80. The file keeps the last fold: 30 -> 60 at 65.
    const std::string path = test::temp_path("merges_twice.h5");
    test::SyntheticRun a;
    test::ResultsOptions o;
    o.schema_version = 3;
    test::write_synthetic_results(path, {a}, o);
    RunData r = view::read_results(path).runs[0];
    REQUIRE(r.evicted_at[r.lht(0, 0, 30)] == 50);
    REQUIRE(r.evicted_at[r.lht(0, 0, 60)] == 80);
    r.evicted_at[r.lht(0, 0, 45)] = 65;
    for (int j : {30, 45}) {
        r.merged_into[r.lht(0, 0, j)] = 60;
        r.merged_at[r.lht(0, 0, j)] = 65;
    }
    r.has_merges = true;
    CHECK(r.token_state(0, 0, 30, 49) == TokenState::Held);
    for (int64_t t = 50; t < 80; ++t) REQUIRE(r.token_state(0, 0, 30, t) == TokenState::Folded);
    CHECK(r.token_state(0, 0, 30, 80) == TokenState::Evicted);
    CHECK(r.token_state(0, 0, 45, 64) == TokenState::Held);
    CHECK(r.token_state(0, 0, 45, 65) == TokenState::Folded);
    CHECK(r.token_state(0, 0, 45, 80) == TokenState::Evicted);
    CHECK(r.stands_for(0, 0, 60, 64) == std::vector<int32_t>{60});
    CHECK(r.stands_for(0, 0, 60, 70) == std::vector<int32_t>{30, 45, 60});
    CHECK(r.stands_for(0, 0, 60, 80).empty());
    CHECK(r.entry_sizes(0, 0, 70)[60] == 3);
    const Matrix m = view::folded_matrix(r, 0, 0);
    CHECK(m.at(49, 30) == 0.0f);
    CHECK(m.at(55, 30) == 1.0f);
    CHECK(m.at(79, 30) == 1.0f);
    CHECK(m.at(80, 30) == 0.0f);
    CHECK(m.at(64, 45) == 0.0f);
    CHECK(m.at(70, 45) == 1.0f);
}

TEST_CASE("merges: kvscope's own kmeans replay reads back in the viewer", "[cpu]") {
    // A kmeans replay on a synthetic trace (as tests/simulator/test_merge.cpp runs it), written
    // by kvscope's results_io: kmeans drops nothing with num_clusters >= 1, so every token is
    // held or folded at every step, and the viewer must see the simulator's arrays unchanged.
    const std::string trace = test::temp_path("merges_trace.h5");
    test::AttnTraceOptions to;
    to.prompt_len = 96;
    test::write_attn_trace(trace, to);
    const sim::RunResult rr = test::replay_one(
        trace, "kmeans:max_cache_size=12,num_clusters=6,pruning_interval=16,lookback_window=8");
    const std::string path = test::temp_path("merges_kmeans.h5");
    sim::write_results(path, {rr}, "test");
    const view::ResultsFile f = view::read_results(path);
    CHECK(f.schema_version == 3);
    const RunData& r = f.runs[0];
    CHECK(r.info.policy == "kmeans");
    REQUIRE(r.has_merges);
    CHECK(r.merged_into == rr.merged_into);
    CHECK(r.merged_at == rr.merged_at);
    CHECK(r.evicted_at == rr.evicted_at);
    int folded = 0;
    for (int64_t s = 0; s < r.S; s += 9) {
        const int64_t t = r.steps[size_t(s)];
        for (int l = 0; l < int(r.L); ++l)
            for (int h = 0; h < int(r.H); ++h) {
                const std::vector<int32_t> sz = r.entry_sizes(l, h, t);
                REQUIRE(std::accumulate(sz.begin(), sz.end(), int64_t(0)) == t + 1);
                for (int64_t j = 0; j <= t; ++j) {
                    const TokenState st = r.token_state(l, h, j, t);
                    REQUIRE((st == TokenState::Held || st == TokenState::Folded));
                    folded += st == TokenState::Folded;
                    if (st == TokenState::Folded) {
                        const int32_t rep = r.merged_into[r.lht(l, h, j)];
                        const std::vector<int32_t> sf = r.stands_for(l, h, rep, t);
                        REQUIRE(std::binary_search(sf.begin(), sf.end(), int32_t(j)));
                    }
                }
            }
    }
    CHECK(folded > 100);
    // The timeline over all units: at every step each token is held or folded in every unit.
    const Matrix held = view::results_matrix(r, view::Quantity::Held, -1, -1);
    const Matrix fm = view::folded_matrix(r, -1, -1);
    float max_folded = 0;
    for (int64_t s = 0; s < r.S; ++s)
        for (int64_t j = 0; j <= r.steps[size_t(s)]; ++j) {
            REQUIRE(held.at(s, j) + fm.at(s, j) == Approx(1.0f).margin(1e-5));
            max_folded = std::max(max_folded, fm.at(s, j));
        }
    CHECK(max_folded == Approx(1.0f));
}

TEST_CASE("merges: the folded colour is painted over the texture by share", "[cpu]") {
    // A 2 x 2 grid (rows = x): mask 0, 1 / 0.5, NaN over a grey texture.
    const float mask[4] = {0.0f, 1.0f, 0.5f, view::kNaN};
    const view::Rgb8 grey{100, 100, 100};
    std::vector<uint32_t> rgba(4, view::pack_rgba(grey));
    view::overlay_transposed(mask, 2, 2, view::kFoldedRgb, &rgba);
    // Texel (x = i, y = k) is rgba[k * 2 + i] and holds mask[i * 2 + k].
    CHECK(rgba[0] == view::pack_rgba(grey));              // mask 0: untouched
    CHECK(rgba[2] == view::pack_rgba(view::kFoldedRgb));  // mask 1: the folded colour itself
    CHECK(rgba[3] == view::pack_rgba(grey));              // NaN: untouched
    // 0.5: weight 0.45 + 0.55 * 0.5 = 0.725 towards (255, 64, 200).
    const uint32_t half = rgba[1];
    CHECK(int(half & 0xFF) == 212);          // 100 + 155 * 0.725 = 212.4
    CHECK(int((half >> 8) & 0xFF) == 74);    // 100 - 36 * 0.725 = 73.9
    CHECK(int((half >> 16) & 0xFF) == 173);  // 100 + 100 * 0.725 = 172.5 (rounds up)
    CHECK(int(half >> 24) == 255);
}
