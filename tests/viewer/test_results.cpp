// The results reader on synthetic files (written to the schema) and on broken ones, and the
// quantities computed from a run.
#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>

#include "engine/error.h"
#include "gguf_writer.h"
#include "synthetic_results.h"
#include "viewdata/quantities.h"
#include "viewdata/results.h"
#include "viewdata/series.h"

using namespace kvs;
using namespace kvs::view;

TEST_CASE("results: synthetic file round trip", "[cpu]") {
    const std::string path = test::temp_path("res.h5");
    test::SyntheticRun a, b;
    b.policy = "window2";
    b.budget = 40;
    b.prefill = 30;
    test::write_synthetic_results(path, {a, b});
    CHECK(detect_file_kind(path) == FileKind::Results);
    const ResultsFile f = read_results(path);
    REQUIRE(f.runs.size() == 2);
    CHECK(f.schema_version == 1);
    const RunData& r = f.runs[0];
    CHECK(r.info.policy == "window");
    CHECK(r.info.spec == "window:budget=24,sink=4");
    CHECK(r.info.mode == "stream");
    CHECK(r.info.summary.at("recall_mean") == Approx(0.9));
    CHECK(r.S == 100);
    CHECK(r.L == 2);
    CHECK(r.H == 2);
    CHECK(r.T == 100);
    CHECK(r.C == 5);
    CHECK(r.layers == std::vector<int32_t>{0, 2});
    CHECK(f.runs[1].info.mode == "prefill");
    CHECK(f.runs[1].S == 70);
    CHECK(f.runs[1].steps.front() == 30);
    CHECK(r.layer_index(2) == 1);
    CHECK(r.layer_index(1) == -1);
    // evicted_at agrees with the toy policy at every step.
    for (int l = 0; l < 2; ++l)
        for (int h = 0; h < 2; ++h)
            for (int64_t j = 0; j < 100; j += 7)
                for (int64_t t = 0; t < 100; t += 3)
                    REQUIRE(r.held_at(l, h, j, t) == test::toy_held(a, j, t, l, h));
    // The scores went through float16.
    const int64_t c = 4, t = r.ckpt_steps[4];
    CHECK(r.ckpt_score[r.clht(c, 0, 0, t)] == Approx(1.0f));
    CHECK(std::isnan(r.ckpt_score[r.clht(c, 0, 0, 30)]));  // evicted at the last checkpoint
    CHECK(int(r.ckpt_bits[r.clht(c, 0, 0, t)]) == 16);
}

TEST_CASE("results: quantities from a run", "[cpu]") {
    const std::string path = test::temp_path("resq.h5");
    test::SyntheticRun a;
    a.bit_events = false;  // an older file: bits carried forward from the checkpoints
    test::write_synthetic_results(path, {a});
    const RunData r = read_results(path).runs[0];
    // Held, one unit: exactly the toy policy; NaN above the diagonal.
    const Matrix held = results_matrix(r, Quantity::Held, 2, 1);
    REQUIRE(held.rows == 100);
    REQUIRE(held.cols == 100);
    for (int64_t s = 0; s < 100; s += 3)
        for (int64_t j = 0; j < 100; j += 5) {
            if (j > s)
                REQUIRE(std::isnan(held.at(s, j)));
            else
                REQUIRE(held.at(s, j) == (test::toy_held(a, j, s, 1, 1) ? 1.0f : 0.0f));
        }
    // Aggregated: the fraction of the 4 units holding the token.
    const Matrix all = results_matrix(r, Quantity::Held, -1, -1);
    for (int64_t s = 50; s < 100; s += 7)
        for (int64_t j = 0; j <= s; j += 3) {
            int n = 0;
            for (int l = 0; l < 2; ++l)
                for (int h = 0; h < 2; ++h) n += test::toy_held(a, j, s, l, h);
            REQUIRE(all.at(s, j) == Approx(n / 4.0));
        }
    // Bits: the last checkpoint at or before the step, evictions applied at the step itself.
    const Matrix bits = results_matrix(r, Quantity::Bits, 0, 0);
    const int64_t c1 = r.ckpt_steps[1];
    CHECK(std::isnan(bits.at(c1 - 1, 0)) == (r.ckpt_steps[0] > c1 - 1));
    CHECK(bits.at(c1, c1) == 16);
    CHECK(bits.at(c1 + 1, c1) == 16);            // carried forward
    CHECK(std::isnan(bits.at(c1 + 1, c1 + 1)));  // arrived after the checkpoint
    CHECK(bits.at(c1, 0) == 4);                  // a sink token, old: 4 bits
    CHECK(bits.at(c1, c1 - 30) == 0);            // evicted
    // A layer that was not replayed gives an all-NaN matrix.
    const Matrix none = results_matrix(r, Quantity::Held, 1, -1);
    CHECK(std::isnan(none.at(50, 0)));
    // Difference of two different matrices, aligned by step value: B holds rows 10.. of the
    // aggregate (its row 0 is step r.steps[10]) and 90 columns. Rows of A whose step B lacks are
    // NaN, the columns are B's 90, and every defined entry is held(A) - all(B) at the same step.
    Matrix part(90, 90);
    std::vector<int32_t> part_steps;
    for (int64_t s = 10; s < 100; ++s) {
        part_steps.push_back(r.steps[size_t(s)]);
        for (int64_t j = 0; j < 90; ++j) part.at(s - 10, j) = all.at(s, j);
    }
    const Matrix d = difference(held, r.steps, part, part_steps);
    REQUIRE(d.rows == 100);
    REQUIRE(d.cols == 90);
    int n_nonzero = 0;
    for (int64_t s = 0; s < 100; ++s)
        for (int64_t j = 0; j < 90; ++j) {
            const float want = s < 10 || j > s ? kNaN : held.at(s, j) - all.at(s, j);
            INFO("step row " << s << ", token " << j);
            if (std::isnan(want)) {
                REQUIRE(std::isnan(d.at(s, j)));
            } else {
                REQUIRE(d.at(s, j) == want);
                n_nonzero += want != 0;
            }
        }
    CHECK(n_nonzero > 100);  // the two differ: a difference that returned 0 would fail above
    // Curves and grid metrics.
    const auto bytes = curve(r, Curve::CacheBytes, -1);
    const auto ratio = curve(r, Curve::Ratio, -1);
    REQUIRE(bytes.size() == 100);
    double want = 0;
    for (int l = 0; l < 2; ++l)
        for (int h = 0; h < 2; ++h) want += double(r.bytes[r.slh(99, l, h)]);
    CHECK(bytes[99] == Approx(want));
    CHECK(ratio[99] == Approx(4.0 * double(r.full_bytes[99]) / want));
    CHECK(curve(r, Curve::Recall, 2)[99] ==
          Approx((r.recall[r.slh(99, 1, 0)] + r.recall[r.slh(99, 1, 1)]) / 2));
    CHECK(unit_metric(r, Metric::Budget, 10, 1, 1) == 26);
    // The answer tokens: sink tokens always kept, a middle token not at the end.
    CHECK(answer_all_kept(r, {0, 1, 2}, 99));
    CHECK_FALSE(answer_all_kept(r, {0, 50}, 99));
    CHECK(answer_kept(r, {50}, 99)[0] == 0);
    CHECK(answer_kept(r, {50}, 60)[0] == 1);
}

TEST_CASE("results: broken files give one clear line", "[cpu]") {
    const std::string dir = test::temp_path("");
    test::SyntheticRun a;
    auto err = [](const std::string& p) {
        try {
            read_results(p);
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    {
        const std::string p = test::temp_path("notes.txt");
        std::ofstream(p) << "not hdf5\n";
        CHECK(err(p) == "results '" + p + "': not an HDF5 file, so not a kvscope results file");
        CHECK(detect_file_kind(p) == FileKind::NotHdf5);
    }
    CHECK(err(dir + "/missing.h5") == "results '" + dir + "/missing.h5': no such file");
    CHECK(detect_file_kind(dir + "/missing.h5") == FileKind::Missing);
    {
        const std::string p = test::temp_path("v4.h5");
        test::ResultsOptions o;
        o.schema_version = 4;
        test::write_synthetic_results(p, {a}, o);
        CHECK(err(p) == "results '" + p +
                            "': schema_version 4 is newer than this kvscope reads (3); update "
                            "kvscope");
    }
    {
        const std::string p = test::temp_path("fmt.h5");
        test::ResultsOptions o;
        o.format = "kvscope-trace";
        test::write_synthetic_results(p, {a}, o);
        CHECK(err(p) == "results '" + p +
                            "': not a kvscope results file (format is 'kvscope-trace', expected "
                            "'kvscope-results')");
    }
    {
        const std::string p = test::temp_path("drop.h5");
        test::ResultsOptions o;
        o.drop_dataset = "recall";
        test::write_synthetic_results(p, {a}, o);
        CHECK(err(p) == "results '" + p + "': missing dataset 'runs/0000/recall'");
    }
    {
        const std::string p = test::temp_path("shape.h5");
        test::ResultsOptions o;
        o.bad_shape = true;
        test::write_synthetic_results(p, {a}, o);
        CHECK(err(p) == "results '" + p +
                            "': dataset 'runs/0000/held' has shape [100, 2, 3], expected [100, 2, "
                            "2] (steps, layers, n_head_kv)");
    }
    {
        const std::string p = test::temp_path("steps.h5");
        test::ResultsOptions o;
        o.bad_steps = true;
        test::write_synthetic_results(p, {a}, o);
        CHECK_THAT(err(p), Catch::Contains("'steps' must be ascending token indices in [0, 100)"));
    }
    {
        const std::string p = test::temp_path("nruns.h5");
        test::ResultsOptions o;
        o.n_runs_attr = 3;
        test::write_synthetic_results(p, {a}, o);
        CHECK(err(p) == "results '" + p + "': missing group 'runs/0001' (n_runs = 3)");
    }
    {
        // A truncated file.
        const std::string good = test::temp_path("good.h5"), p = test::temp_path("trunc.h5");
        test::write_synthetic_results(good, {a});
        std::ifstream in(good, std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)), {});
        std::ofstream(p, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
        CHECK_THAT(err(p), Catch::StartsWith("results '" + p + "': "));
    }
}

TEST_CASE("results: every plotted curve spans every evaluated step", "[cpu]") {
    // The curves view once showed most runs ending a third of the way along (a legend of 22
    // runs drawn over the plots, and a thinning stride that dropped the last step): the data
    // handed to the plot must run from the first evaluated step to the last, and its reduction
    // to pixel columns must keep both ends and the extremes.
    const std::string path = test::temp_path("res_span.h5");
    test::SyntheticRun a, b;
    a.T = 2054;
    a.C = 16;
    b.T = 2054;
    b.C = 16;
    b.prefill = 500;
    test::write_synthetic_results(path, {a, b});
    const ResultsFile f = read_results(path);
    for (const RunData& r : f.runs)
        for (int c = 0; c < kNumCurves; ++c) {
            const XY s = curve_series(r, Curve(c), -1);
            REQUIRE(s.x.size() == size_t(r.S));
            REQUIRE(s.y.size() == size_t(r.S));
            CHECK(s.x.front() == r.steps.front());
            CHECK(s.x.back() == r.steps.back());
            CHECK(s.x.back() == double(r.T - 1));
            for (size_t i = 0; i < s.y.size(); ++i) REQUIRE(std::isfinite(s.y[i]));
            // Reduced to 300 columns (a plot ~300 px wide): both ends, the lowest and the
            // highest point survive, and it is far smaller.
            const std::vector<size_t> idx = decimate_minmax(s.x, s.y, s.x.front(), s.x.back(), 300);
            REQUIRE(!idx.empty());
            CHECK(idx.front() == 0);
            CHECK(idx.back() == s.x.size() - 1);
            CHECK(idx.size() <= 4 * 301);
            CHECK(std::is_sorted(idx.begin(), idx.end()));
            const size_t lo = size_t(std::min_element(s.y.begin(), s.y.end()) - s.y.begin());
            const size_t hi = size_t(std::max_element(s.y.begin(), s.y.end()) - s.y.begin());
            CHECK(std::count(idx.begin(), idx.end(), lo) + std::count(idx.begin(), idx.end(), hi) >=
                  1 + (lo != hi));
            // Every column that has points keeps one: no gap wider than a column.
            const double col = (s.x.back() - s.x.front()) / 300;
            for (size_t k = 1; k < idx.size(); ++k)
                REQUIRE(s.x[idx[k]] - s.x[idx[k - 1]] <= 2 * col + 1);
        }
}

TEST_CASE("series: per-column reduction keeps spikes and breaks", "[cpu]") {
    std::vector<double> x, y;
    for (int i = 0; i < 1000; ++i) {
        x.push_back(i);
        y.push_back(0.1);
    }
    y[437] = 5;    // a spike
    y[712] = -3;   // a dip
    y[800] = NAN;  // a gap
    const std::vector<size_t> idx = decimate_minmax(x, y, 0, 999, 50);
    CHECK(std::find(idx.begin(), idx.end(), 437) != idx.end());
    CHECK(std::find(idx.begin(), idx.end(), 712) != idx.end());
    CHECK(std::find(idx.begin(), idx.end(), 800) != idx.end());
    CHECK(idx.back() == 999);
    CHECK(idx.size() <= 4 * 51 + 1);
    // Few points: all of them.
    CHECK(decimate_minmax({0, 1, 2}, {1, 2, 3}, 0, 2, 100).size() == 3);
    CHECK(decimate_minmax({}, {}, 0, 1, 10).empty());
}

TEST_CASE("results: held and single-width bits are exact at every step", "[cpu]") {
    const std::string path = test::temp_path("res_exact.h5");
    test::SyntheticRun a;
    a.T = 120;
    a.C = 4;
    a.bit_events = false;
    test::write_synthetic_results(path, {a});
    RunData r = read_results(path).runs[0];
    CHECK_FALSE(r.has_bit_events);
    CHECK(uniform_bits(r) == 0);  // 16 and 4 bits: carried forward
    CHECK(quantity_provenance(r, Quantity::Bits).find("carried forward") != std::string::npos);
    CHECK(quantity_provenance(r, Quantity::Held).find("exact") != std::string::npos);
    // An eviction-only run: every held token at 16 bits.
    for (uint8_t& b : r.ckpt_bits)
        if (b) b = 16;
    CHECK(uniform_bits(r) == 16);
    CHECK(quantity_provenance(r, Quantity::Bits).find("exact") != std::string::npos);
    const Matrix bits = results_matrix(r, Quantity::Bits, 2, 1);
    const Matrix held = results_matrix(r, Quantity::Held, 2, 1);
    for (int64_t s = 0; s < r.S; ++s)
        for (int64_t j = 0; j < r.T; ++j) {
            const int64_t t = r.steps[size_t(s)];
            if (j > t) {
                REQUIRE(std::isnan(bits.at(s, j)));
                REQUIRE(std::isnan(held.at(s, j)));
            } else {
                // Between checkpoints too (no staircase), and for tokens newer than the last one.
                const bool h = test::toy_held(a, j, t, 1, 1);
                REQUIRE(held.at(s, j) == (h ? 1.0f : 0.0f));
                REQUIRE(bits.at(s, j) == (h ? 16.0f : 0.0f));
            }
        }
}

TEST_CASE("results: bits are exact at every step from bit_events", "[cpu]") {
    const std::string path = test::temp_path("res_events.h5");
    test::SyntheticRun a;
    a.T = 90;
    a.C = 3;  // checkpoints far apart: the carried-forward staircase would be wrong in between
    test::SyntheticRun old = a;
    old.bit_events = false;
    test::write_synthetic_results(path, {a, old});
    const ResultsFile f = read_results(path);
    const RunData& r = f.runs[0];
    REQUIRE(r.has_bit_events);
    REQUIRE(r.bit_events.size() % 4 == 0);
    CHECK(r.bit_events.size() > 0);
    CHECK(quantity_provenance(r, Quantity::Bits).find("exact at every step (from bit_events") !=
          std::string::npos);
    // One unit: exactly the toy's width at every (step, token); NaN for future tokens.
    for (int l = 0; l < 2; ++l)
        for (int h = 0; h < 2; ++h) {
            const Matrix bits = results_matrix(r, Quantity::Bits, r.layers[size_t(l)], h);
            REQUIRE(bits.rows == r.S);
            for (int64_t s = 0; s < r.S; ++s)
                for (int64_t j = 0; j < r.T; ++j) {
                    const int64_t t = r.steps[size_t(s)];
                    if (j > t) {
                        REQUIRE(std::isnan(bits.at(s, j)));
                        continue;
                    }
                    const int want = test::toy_bits(a, j, t, l, h);
                    REQUIRE(bits.at(s, j) == float(want));
                    REQUIRE(token_bits(r, l, h, j, t) == want);
                }
        }
    // All units: the mean width over them (0 where a unit evicted the token).
    const Matrix all = results_matrix(r, Quantity::Bits, -1, -1);
    for (int64_t s = 0; s < r.S; s += 3)
        for (int64_t j = 0; j <= r.steps[size_t(s)]; j += 2) {
            const int64_t t = r.steps[size_t(s)];
            double want = 0;
            for (int l = 0; l < 2; ++l)
                for (int h = 0; h < 2; ++h) want += test::toy_bits(a, j, t, l, h);
            REQUIRE(all.at(s, j) == Approx(want / 4));
        }
    // The checkpoints agree with the events where both exist.
    for (int64_t c = 0; c < r.C; ++c) {
        const int64_t t = r.ckpt_steps[size_t(c)];
        for (int64_t j = 0; j <= t; ++j)
            REQUIRE(int(r.ckpt_bits[r.clht(c, 1, 0, j)]) == token_bits(r, 1, 0, j, t));
    }
    // The same run without bit_events: the fallback carries the last checkpoint forward, so
    // between checkpoints it lags (a token 16 steps old is still 16 bits there).
    const RunData& o = f.runs[1];
    REQUIRE_FALSE(o.has_bit_events);
    CHECK(quantity_provenance(o, Quantity::Bits).find("carried forward") != std::string::npos);
    const Matrix ob = results_matrix(o, Quantity::Bits, 0, 0);
    const Matrix eb = results_matrix(r, Quantity::Bits, 0, 0);
    const int64_t c0 = o.ckpt_steps[0], c1 = o.ckpt_steps[1];
    REQUIRE(c1 - c0 > 20);
    const int64_t t = c0 + 18, j = c0;  // held, dropped to 4 bits at c0 + 16
    REQUIRE(test::toy_held(a, j, t, 0, 0));
    CHECK(ob.at(t, j) == 16);  // carried forward from c0
    CHECK(eb.at(t, j) == 4);   // exact
    bool exact = true;
    CHECK(token_bits(o, 0, 0, j, t, &exact) == 16);
    CHECK_FALSE(exact);
    // Broken rows give one clear line.
    const std::string bad = test::temp_path("res_events_bad.h5");
    test::ResultsOptions bo;
    bo.bad_bit_events = true;
    test::write_synthetic_results(bad, {a}, bo);
    try {
        read_results(bad);
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("'bit_events' row 0") != std::string::npos);
    }
}

TEST_CASE("series: the curve cache computes each series once and keeps its reduction", "[cpu]") {
    const std::string path = test::temp_path("res_cache.h5");
    test::SyntheticRun a;
    a.T = 400;
    test::write_synthetic_results(path, {a});
    const RunData r = read_results(path).runs[0];
    CurveCache cache;
    CurveCache::Entry& e = cache.get(r, Curve::Recall, -1);
    const XY want = curve_series(r, Curve::Recall, -1);
    CHECK(e.xy.x == want.x);
    CHECK(e.xy.y == want.y);
    CHECK(&cache.get(r, Curve::Recall, -1) == &e);  // same entry, not recomputed
    CHECK(cache.computed() == 1);
    cache.get(r, Curve::Recall, 2);
    cache.get(r, Curve::OutErr, -1);
    CHECK(cache.computed() == 3);
    // The reduction: the same as decimate_minmax, recomputed only when width or range change.
    const auto& i1 = e.dec.get(e.xy.x, e.xy.y, 0, 399, 50);
    CHECK(i1 == decimate_minmax(want.x, want.y, 0, 399, 50));
    const size_t* p1 = i1.data();
    CHECK(e.dec.get(e.xy.x, e.xy.y, 0, 399, 50).data() == p1);
    CHECK(e.dec.get(e.xy.x, e.xy.y, 0, 399, 60) == decimate_minmax(want.x, want.y, 0, 399, 60));
    CHECK(e.dec.columns == 60);
}
