// closed_loop_json (schema v2, `kvscope eval -o`) in the results reader, and the closed-loop view's
// data: replay and closed-loop runs of one spec side by side, the scatter's points, Spearman, CSV.
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <sstream>

#include "engine/error.h"
#include "gguf_writer.h"
#include "synthetic_results.h"
#include "viewdata/closed_loop.h"
#include "viewdata/results.h"

using namespace kvs;
using namespace kvs::view;

namespace {

const char* kPplJson =
    R"({"policy":"window","spec":"window:budget=24,sink=4","budget":"24","mode":"stream",)"
    R"("task":"ppl","ppl":12.5,"ppl_full":12.0,"delta_ppl":0.5,"kl_mean":0.04,"kl_p95":0.2,)"
    R"("top1_agree":0.9,"tokens_scored":254,"kv_bytes_mean":1048576.0,"kv_bytes_peak":2097152,)"
    R"("offload_bytes_mean":0.0,"offload_bytes_peak":0,"tokens_per_s":null,"seconds":1.5})";

std::string read_all(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<std::vector<std::string>> csv_rows(const std::string& path) {
    std::vector<std::vector<std::string>> rows;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        std::vector<std::string> f;
        std::string cur;
        bool q = false;
        for (char c : line) {
            if (c == '"')
                q = !q;
            else if (c == ',' && !q) {
                f.push_back(cur);
                cur.clear();
            } else
                cur += c;
        }
        f.push_back(cur);
        rows.push_back(f);
    }
    return rows;
}

}  // namespace

TEST_CASE("results: closed_loop_json of an eval run is read, replay runs have none", "[cpu]") {
    const std::string path = test::temp_path("res_cl.h5");
    test::SyntheticRun replay, eval;
    eval.closed_loop_json = kPplJson;
    eval.recall_mean = NAN;  // live runs have no replay metrics
    eval.err_mean = NAN;
    test::ResultsOptions o;
    o.schema_version = 2;
    test::write_synthetic_results(path, {replay, eval}, o);
    const ResultsFile f = read_results(path);
    REQUIRE(f.runs.size() == 2);
    CHECK(f.schema_version == 2);
    const RunInfo& r = f.runs[0].info;
    CHECK_FALSE(r.is_closed_loop());
    CHECK(r.closed_loop.empty());
    CHECK(r.closed_loop_task.empty());
    CHECK(r.summary.at("err_mean") == Approx(0.1));
    const RunInfo& e = f.runs[1].info;
    CHECK(e.is_closed_loop());
    CHECK(e.closed_loop_json == kPplJson);
    CHECK(e.closed_loop_task == "ppl");
    CHECK(e.closed_loop.at("kl_mean") == Approx(0.04));
    CHECK(e.closed_loop.at("kl_p95") == Approx(0.2));
    CHECK(e.closed_loop.at("delta_ppl") == Approx(0.5));
    CHECK(e.closed_loop.at("top1_agree") == Approx(0.9));
    CHECK(e.closed_loop.at("kv_bytes_peak") == 2097152.0);  // an integer reads too
    CHECK(e.closed_loop.at("tokens_scored") == 254.0);
    CHECK(std::isnan(e.closed_loop.at("tokens_per_s")));  // null = NaN
    CHECK(e.closed_loop.count("policy") == 0);            // strings are not numbers
    CHECK(std::isnan(e.summary.at("err_mean")));
}

TEST_CASE("results: v1 files and v2 files without closed_loop_json still read", "[cpu]") {
    for (int v : {1, 2}) {
        const std::string path = test::temp_path("res_v" + std::to_string(v) + ".h5");
        test::ResultsOptions o;
        o.schema_version = v;
        test::write_synthetic_results(path, {test::SyntheticRun{}}, o);
        const ResultsFile f = read_results(path);
        CHECK(f.schema_version == v);
        REQUIRE(f.runs.size() == 1);
        CHECK_FALSE(f.runs[0].info.is_closed_loop());
        CHECK(f.runs[0].info.closed_loop.empty());
    }
}

TEST_CASE("results: a malformed closed_loop_json is one line naming the file and run", "[cpu]") {
    for (const char* bad : {"{\"kl_mean\": 0.1,", "[1, 2]", "not json"}) {
        const std::string path = test::temp_path("res_clbad.h5");
        test::SyntheticRun a, b;
        b.closed_loop_json = bad;
        test::ResultsOptions o;
        o.schema_version = 2;
        test::write_synthetic_results(path, {a, b}, o);
        try {
            read_results(path);
            FAIL("no error for closed_loop_json " << bad);
        } catch (const Error& e) {
            const std::string m = e.what();
            INFO(m);
            CHECK(m.find(path) != std::string::npos);
            CHECK(m.find("runs/0001") != std::string::npos);
            CHECK(m.find("closed_loop_json") != std::string::npos);
            CHECK(m.find('\n') == std::string::npos);
        }
    }
}

TEST_CASE("closed loop: rows match replay and eval runs of one spec and mode", "[cpu]") {
    // Two replay files' worth of runs and one eval file, as the viewer lists them.
    RunInfo rw, rh, rw2, ew, eh, eo, live;
    rw.policy = "window";
    rw.spec = "window:budget=24,sink=4";
    rw.budget = "24";
    rw.mode = "stream";
    rw.summary = {{"recall_mean", 0.8}, {"err_mean", 0.2}, {"bytes_mean", 1000}};
    rw2 = rw;  // the same spec replayed on another trace: averaged
    rw2.summary = {{"recall_mean", 0.6}, {"err_mean", 0.4}, {"bytes_mean", 3000}};
    rh = rw;
    rh.policy = "h2o";
    rh.spec = "h2o:budget=24";
    rh.summary = {{"recall_mean", 0.95}, {"err_mean", 0.05}, {"bytes_mean", 1000}};
    ew = rw;
    ew.summary = {{"recall_mean", NAN}, {"err_mean", NAN}};
    ew.closed_loop_json = "{}";
    ew.closed_loop_task = "ppl";
    ew.closed_loop = {{"kl_mean", 0.3}, {"delta_ppl", 2.0}, {"kv_bytes_mean", 5000}};
    eh = ew;
    eh.policy = "h2o";
    eh.spec = "h2o:budget=24";
    eh.closed_loop = {{"kl_mean", 0.1}, {"delta_ppl", 0.5}, {"kv_bytes_mean", 5000}};
    eo = ew;  // an eval run of a spec never replayed, in prefill mode
    eo.spec = "snapkv:budget=24";
    eo.mode = "prefill";
    eo.prefill_len = 128;
    live = rw;  // capture --policy: live decisions, no metrics on either side
    live.summary = {{"recall_mean", NAN}, {"err_mean", NAN}};
    const std::vector<const RunInfo*> runs = {&rw, &rh, &live, &rw2, &ew, &eh, &eo};
    const std::vector<std::string> labels = {
        "window 24",    "h2o 24",    "window 24 #2",           "window 24 #3",
        "window 24 #4", "h2o 24 #2", "snapkv 24 (prefill 128)"};
    const auto rows = closed_loop_rows(runs, labels);
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].spec == rw.spec);
    CHECK(rows[0].label == "window 24");
    CHECK(rows[0].replay_runs == std::vector<int>{0, 3});
    CHECK(rows[0].eval_runs == std::vector<int>{4});
    CHECK(rows[0].matched());
    CHECK(rows[0].task == "ppl");
    CHECK(rows[0].value("recall_mean", true) == Approx(0.7));
    CHECK(rows[0].value("err_mean", true) == Approx(0.3));
    CHECK(rows[0].value("bytes_mean", true) == Approx(2000));
    CHECK(rows[0].value("kl_mean", false) == Approx(0.3));
    CHECK(rows[0].value("delta_ppl", false) == Approx(2.0));
    CHECK(std::isnan(rows[0].value("recall_mean", false)));  // no such closed-loop column
    CHECK(std::isnan(rows[0].value("accuracy", false)));
    CHECK(rows[1].replay_runs == std::vector<int>{1});
    CHECK(rows[1].eval_runs == std::vector<int>{5});
    CHECK(rows[2].label == "snapkv 24 (prefill)");
    CHECK(rows[2].prefill_lens == std::vector<int64_t>{128});
    CHECK_FALSE(rows[2].matched());
    CHECK(std::isnan(rows[2].value("err_mean", true)));

    const ClosedLoopPoints p = closed_loop_points(rows);
    CHECK(p.y_key == "kl_mean");
    CHECK(p.row == std::vector<int>{0, 1});
    CHECK(p.x == std::vector<double>{rows[0].value("err_mean", true), 0.05});
    CHECK(p.y == std::vector<double>{0.3, 0.1});
    CHECK(spearman(p.x, p.y) == Approx(1.0));

    // CSV: one row per spec, the header names both sides, the values are the table's.
    const std::string csv = test::temp_path("cl.csv");
    write_closed_loop_csv(csv, rows);
    const auto t = csv_rows(csv);
    REQUIRE(t.size() == 4);
    const auto& h = t[0];
    auto col = [&](const char* name) {
        const auto it = std::find(h.begin(), h.end(), name);
        REQUIRE(it != h.end());
        return size_t(it - h.begin());
    };
    CHECK(t[1][col("spec")] == rw.spec);
    CHECK(t[1][col("replay_runs")] == "2");
    CHECK(t[1][col("eval_runs")] == "1");
    CHECK(std::stod(t[1][col("replay_err_mean")]) == Approx(0.3));
    CHECK(std::stod(t[1][col("eval_kl_mean")]) == Approx(0.3));
    CHECK(std::stod(t[2][col("eval_delta_ppl")]) == Approx(0.5));
    CHECK(t[3][col("replay_err_mean")].empty());  // NaN: empty
    CHECK(t[3][col("prefill_len")] == "128");
    CHECK(t[3][col("mode")] == "prefill");
    CHECK(read_all(csv).find("eval_accuracy") != std::string::npos);
}

TEST_CASE("closed loop: retrieval tasks plot 1 - accuracy and nothing matches without both",
          "[cpu]") {
    RunInfo r, e;
    r.spec = "h2o:budget=64";
    r.mode = "prefill";
    r.prefill_len = 1000;
    r.summary = {{"err_mean", 0.1}, {"recall_mean", 0.9}};
    e = r;
    e.prefill_len = 1030;  // another prompt length: the same row
    e.closed_loop_json = "{}";
    e.closed_loop_task = "passkey";
    e.closed_loop = {{"accuracy", 0.75}};
    auto rows = closed_loop_rows({&r, &e}, {});
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].prefill_lens == std::vector<int64_t>{1000, 1030});
    CHECK(rows[0].label == "h2o:budget=64 (prefill)");
    const ClosedLoopPoints p = closed_loop_points(rows);
    CHECK(p.y_key == "1-accuracy");
    REQUIRE(p.y.size() == 1);
    CHECK(p.y[0] == Approx(0.25));
    // Another mode does not match.
    e.mode = "stream";
    rows = closed_loop_rows({&r, &e}, {});
    CHECK(rows.size() == 2);
    CHECK(closed_loop_points(rows).x.empty());
    CHECK(closed_loop_points(rows).y_key.empty());
}

TEST_CASE("closed loop: Spearman rank correlation", "[cpu]") {
    CHECK(spearman({1, 2, 3, 4}, {10, 20, 30, 40}) == Approx(1.0));
    CHECK(spearman({1, 2, 3, 4}, {4, 3, 2, 1}) == Approx(-1.0));
    // Monotone but not linear: still 1.
    CHECK(spearman({0.001, 0.01, 0.1, 1}, {1, 2, 3, 1000}) == Approx(1.0));
    // Ties get average ranks: x ranks 1.5 1.5 3, y 1 2 3 -> r = 0.866.
    CHECK(spearman({1, 1, 2}, {1, 2, 3}) == Approx(std::sqrt(3.0) / 2));
    CHECK(std::isnan(spearman({1}, {2})));
    CHECK(std::isnan(spearman({1, 1, 1}, {1, 2, 3})));
}
