// CSV export, settings persistence, the policy list and the subprocess runner.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "attn_trace.h"
#include "engine/error.h"
#include "gguf_writer.h"
#include "simulator/replay.h"
#include "viewdata/csv.h"
#include "viewdata/jobs.h"
#include "viewdata/replay_backend.h"
#include "viewdata/results.h"
#include "viewdata/settings.h"

using namespace kvs;
using namespace kvs::view;

namespace {
std::string slurp(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}
}  // namespace

TEST_CASE("csv: escaping, numbers, matrix export", "[cpu]") {
    CHECK(csv_field("plain") == "plain");
    CHECK(csv_field("a,b") == "\"a,b\"");
    CHECK(csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
    CHECK(csv_field("\n") == "\"\n\"");
    CHECK(csv_number(kNaN) == "");
    CHECK(csv_number(3) == "3");
    CHECK(csv_number(0.25) == "0.25");
    CHECK(csv_number(1e-7) == "1e-07");
    Matrix m(3, 4);
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c <= r; ++c) m.at(r, c) = float(r * 10 + c) / 4;
    const std::string p = test::temp_path("m.csv");
    write_matrix_csv(p, m, 1, 3, 0, 4, {100, 101, 102}, "step", "token", "held");
    CHECK(slurp(p) == "step,token,held\n101,0,2.5\n101,1,2.75\n102,0,5\n102,1,5.25\n102,2,5.5\n");
    {
        const std::string q = test::temp_path("t.csv");
        CsvWriter w(q);
        w.row({"index", "text"});
        w.row({"0", "Hello, \"world\"\n"});
        w.close();
        CHECK(slurp(q) == "index,text\n0,\"Hello, \"\"world\"\"\n\"\n");
    }
    CHECK_THROWS_AS(CsvWriter("/nonexistent-dir/x.csv"), Error);
}

TEST_CASE("settings: round trip, defaults, a broken file", "[cpu]") {
    const std::string p = test::temp_path("cfg/kvscope/viewer.json");
    Settings s;
    s.colormap = "cividis";
    s.win_w = 1234;
    s.log_scale = false;
    for (int i = 0; i < 12; ++i) s.add_recent("/tmp/f" + std::to_string(i) + ".h5");
    s.add_recent("/tmp/f3.h5");
    REQUIRE(s.recent_files.size() == 10);
    CHECK(s.recent_files[0] == "/tmp/f3.h5");
    CHECK(s.recent_files[1] == "/tmp/f11.h5");
    REQUIRE(save_settings(s, p));
    std::string w;
    const Settings t = load_settings(p, &w);
    CHECK(w.empty());
    CHECK(t.colormap == "cividis");
    CHECK(t.win_w == 1234);
    CHECK_FALSE(t.log_scale);
    CHECK(t.recent_files == s.recent_files);
    CHECK(load_settings(test::temp_path("none.json")).colormap == "viridis");
    std::ofstream(test::temp_path("bad.json")) << "{not json";
    const Settings b = load_settings(test::temp_path("bad.json"), &w);
    CHECK(b.colormap == "viridis");
    CHECK_THAT(w, Catch::Contains("ignored"));
    setenv("XDG_CONFIG_HOME", "/x/y", 1);
    CHECK(settings_dir() == "/x/y/kvscope");
    unsetenv("XDG_CONFIG_HOME");
}

TEST_CASE("policy list, specs, subprocess", "[cpu]") {
    const auto p = parse_policies_json(
        R"([{"name":"h2o","summary":"heavy hitters","params":[{"name":"budget","default":"256","help":"tokens"},{"name":"recent","default":32,"help":""}]},{"name":"full","summary":"","params":[]}])");
    REQUIRE(p.size() == 2);
    CHECK(p[0].name == "h2o");
    REQUIRE(p[0].params.size() == 2);
    CHECK(p[0].params[0].default_value == "256");
    CHECK(p[0].params[1].default_value == "32");
    CHECK(p[1].params.empty());
    CHECK_THROWS_WITH(parse_policies_json("{}"), "the policy list is not a JSON array");
    CHECK_THROWS_AS(parse_policies_json("[{\"summary\":1}]"), Error);
    CHECK(make_spec("h2o", {{"budget", "128"}, {"recent", ""}, {"gqa", "max"}}) ==
          "h2o:budget=128,gqa=max");
    CHECK(make_spec("full", {}) == "full");

    std::string out, err;
    CHECK(run_process({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, &out, &err, nullptr) ==
          3);
    CHECK(out == "out\n");
    CHECK(err == "err\n");
    std::vector<std::string> lines;
    run_process({"/bin/sh", "-c", "echo 'progress 1/4' >&2; echo 'progress 4/4' >&2"}, nullptr,
                nullptr, nullptr, [&](const std::string& l) { lines.push_back(l); });
    CHECK(lines == std::vector<std::string>{"progress 1/4", "progress 4/4"});
    CHECK(run_process({"/nonexistent/kvscope"}, nullptr, &err, nullptr) == 127);
    // Cancel kills a running child quickly.
    std::atomic<bool> cancel{false};
    Job j("sleep", [&](Job&) { run_process({"/bin/sleep", "30"}, nullptr, nullptr, &cancel); });
    cancel = true;
    for (int i = 0; i < 100 && !j.done(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(j.done());
    // A backend whose executable fails: a clear error, no crash.
    SubprocessBackend be("/bin/false");
    CHECK_THROWS_WITH(be.policies(), Catch::StartsWith("'/bin/false policies --json' failed"));
    std::atomic<bool> no{false};
    ReplayRequest req;
    req.trace = "t.h5";
    req.spec = "h2o";
    req.out = "o.h5";
    CHECK_THROWS_WITH(be.run(req, {}, no, {}),
                      Catch::StartsWith("kvscope replay --policy h2o failed (exit 1)"));
}

TEST_CASE("in-process replay: the layer on screen first, then every layer, as kvscope replay",
          "[cpu]") {
    const std::string trace = test::temp_path("inproc_trace.h5");
    test::AttnTraceOptions to;
    to.n_layer = 3;
    to.prompt_len = 40;
    test::write_attn_trace(trace, to);
    InProcessBackend be;
    const std::vector<PolicyDesc> pol = be.policies();
    REQUIRE(pol.size() == sim::policy_registry().size());
    CHECK(std::any_of(pol.begin(), pol.end(),
                      [](const PolicyDesc& d) { return d.name == "h2o" && !d.params.empty(); }));
    ReplayRequest req;
    req.trace = trace;
    req.spec = "h2o:budget=12";
    req.out = test::temp_path("inproc_all.h5");
    req.first_layer = 1;
    req.first_out = test::temp_path("inproc_first.h5");
    std::atomic<bool> cancel{false};
    std::vector<std::string> events;
    float last = -2;
    be.run(
        req,
        [&](float f) {
            if (f >= 0 && last < 0 && events.size() == 1) events.push_back("progress");
            last = f;
        },
        cancel,
        [&](const std::string& p) {
            events.push_back("first");
            CHECK(p == req.first_out);
        });
    CHECK(events == std::vector<std::string>{"first", "progress"});
    CHECK(last == 1.0f);
    // The first file holds layer 1 alone, the whole file every layer; layer 1's held sets are
    // the same in both, and the same as the command line's replay (sim::replay_trace).
    const ResultsFile first = read_results(req.first_out), all = read_results(req.out);
    REQUIRE(first.runs.size() == 1);
    REQUIRE(all.runs.size() == 1);
    CHECK(first.runs[0].layers == std::vector<int32_t>{1});
    CHECK(all.runs[0].layers == std::vector<int32_t>{0, 1, 2});
    sim::ReplayOptions quiet;
    quiet.quiet = true;
    const auto ref = sim::replay_trace(trace, {sim::parse_spec(req.spec)}, quiet);
    CHECK(all.runs[0].info.spec == ref[0].spec);
    for (int64_t s = 0; s < all.runs[0].S; s += 5)
        for (int h = 0; h < int(all.runs[0].H); ++h)
            for (int64_t j = 0; j <= all.runs[0].steps[size_t(s)]; ++j)
                REQUIRE(first.runs[0].token_state(0, h, j, first.runs[0].steps[size_t(s)]) ==
                        all.runs[0].token_state(1, h, j, all.runs[0].steps[size_t(s)]));
    // A bad spec: the simulator's one-line error, nothing written.
    req.spec = "bogus:budget=3";
    req.out = test::temp_path("inproc_bad.h5");
    req.first_out = test::temp_path("inproc_bad_first.h5");
    CHECK_THROWS_WITH(be.run(req, {}, cancel, {}), Catch::Contains("unknown policy 'bogus'"));
    CHECK(!std::filesystem::exists(req.out));
    CHECK(!std::filesystem::exists(req.first_out));
    // Cancelled: an error, no results file.
    req.spec = "h2o:budget=12";
    cancel = true;
    CHECK_THROWS_WITH(be.run(req, {}, cancel, {}), Catch::Contains("cancelled"));
    CHECK(!std::filesystem::exists(req.out));
}

TEST_CASE("jobs: progress, errors", "[cpu]") {
    Job ok("ok", [](Job& j) { j.set_progress(0.5f); });
    Job bad("bad", [](Job&) { fail("broken {}", 1); });
    while (!ok.done() || !bad.done()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(ok.error().empty());
    CHECK(ok.progress() == 0.5f);
    CHECK(bad.error() == "broken 1");
}
