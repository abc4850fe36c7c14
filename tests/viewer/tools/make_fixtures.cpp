// Writes the screenshot test's inputs into a folder: trace.h5 (random q, k, v with o and lse
// computed exactly from them, as the simulator tests use: 3 layers, 4 heads, 2 KV heads, d = 8,
// 160 tokens), a.h5 and b.h5 (results of two toy policies
// with different budgets, synthetic_results.h), bad.h5 (a results file of schema version 4,
// newer than kvscope reads) and km.h5 (a kmeans replay of trace.h5 written by kvscope's own
// replay and results_io: merged entries, schema 3).
#include <cstdio>
#include <filesystem>

#include "attn_trace.h"
#include "gguf_writer.h"
#include "simulator/policy.h"
#include "simulator/replay.h"
#include "simulator/results_io.h"
#include "synthetic_results.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: kvs_view_fixtures <out-dir>\n");
        return 2;
    }
    const std::string d = argv[1];
    std::filesystem::create_directories(d);
    const int64_t T = 160;
    kvs::test::AttnTraceOptions o;
    o.T = T;
    o.n_layer = 3;
    o.n_head = 4;
    o.n_kv = 2;
    o.d = 8;
    o.dtype = kvs::capture::StorageDtype::F16;
    kvs::test::write_attn_trace(d + "/trace.h5", o);
    kvs::test::SyntheticRun a, b;
    a.T = b.T = T;
    a.layers = b.layers = {0, 1, 2};
    a.policy = "window";
    a.budget = 24;
    b.policy = "window";
    b.budget = 80;
    b.sink = 0;
    a.C = b.C = 16;
    kvs::test::write_synthetic_results(d + "/a.h5", {a});
    kvs::test::write_synthetic_results(d + "/b.h5", {b});
    kvs::test::ResultsOptions bad;
    bad.schema_version = 4;
    kvs::test::write_synthetic_results(d + "/bad.h5", {a}, bad);
    kvs::sim::ReplayOptions ro;
    ro.quiet = true;
    ro.threads = 1;
    ro.checkpoints = 8;
    const auto km = kvs::sim::replay_trace(
        d + "/trace.h5",
        {kvs::sim::parse_spec("kmeans:max_cache_size=24,num_clusters=8,pruning_interval=32,"
                              "lookback_window=16")},
        ro);
    kvs::sim::write_results(d + "/km.h5", km, "kvs_view_fixtures");
    std::printf("fixtures in %s\n", d.c_str());
    return 0;
}
