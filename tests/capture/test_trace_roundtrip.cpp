// TraceWriter -> TraceReader round trip of every field on synthetic data: f32 and f16 storage,
// no compression / gzip:1 (the writer's own chunk encoder) / gzip:4 (HDF5's filter), appends of
// odd sizes across chunk boundaries, a subset of layers, the task group, interruption, and the
// .partial file protocol.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include "capture/trace_reader.h"
#include "capture/trace_writer.h"
#include "engine/error.h"
#include "engine/ggml_types.h"
#include "gguf_writer.h"
#include "synthetic_trace.h"

using namespace kvs;
using namespace kvs::capture;

using namespace kvs::test;

namespace {

float stored(float x, StorageDtype dt) {
    return dt == StorageDtype::F16 ? fp16_to_fp32(fp32_to_fp16(x)) : x;
}

}  // namespace

TEST_CASE("trace: writer -> reader round trip of every field", "[cpu]") {
    const ModelConfig c = synthetic_config();
    struct Case {
        StorageDtype dtype;
        int gzip;
        int chunk;
    };
    const Case cases[] = {{StorageDtype::F32, 0, 64},
                          {StorageDtype::F16, 1, 64},
                          {StorageDtype::F32, 1, 32},
                          {StorageDtype::F16, 4, 0},
                          {StorageDtype::F16, 0, 128}};
    int k = 0;
    for (const Case& cs : cases) {
        DYNAMIC_SECTION(dtype_name(cs.dtype)
                        << " " << compression_name(cs.gzip) << " chunk " << cs.chunk) {
            const std::string path = test::temp_path("rt" + std::to_string(k) + ".h5");
            TraceMeta meta;
            meta.model = c;
            meta.model_path = "/models/synthetic.gguf";
            meta.command_line = "kvscope capture --test";
            meta.config_json = R"({"x": 1})";
            meta.dtype = cs.dtype;
            meta.gzip_level = cs.gzip;
            meta.layers = {0, 2};
            meta.chunk_tokens = cs.chunk;
            const int sizes[] = {5, 150, 1, 1, 37, 64, 2};  // 260 tokens, across chunk boundaries
            int64_t T = 0;
            {
                TraceWriter w(path, meta);
                CHECK(std::filesystem::exists(w.partial_path()));
                CHECK_FALSE(std::filesystem::exists(path));
                for (int n : sizes) {
                    feed(w, c, T, n);
                    T += n;
                }
                CHECK(w.n_tokens() == T);
                w.set_prompt_len(200);
                TaskRecord task;
                task.kind = "needle";
                task.answer = "1234567";
                task.needle = "The special magic number for apple is: 1234567.";
                task.needle_key = "apple";
                task.generated = " 1234567.";
                task.depth = 0.25;
                task.seed = 99;
                task.correct = true;
                task.answer_positions = {40, 41, 42};
                task.needle_begin = 30;
                task.needle_end = 45;
                w.set_task(task);
                w.finish(true);
                CHECK_FALSE(std::filesystem::exists(w.partial_path()));
            }
            REQUIRE(std::filesystem::exists(path));
            const TraceReader r(path);
            const TraceInfo& ti = r.info();
            CHECK(ti.schema_version == kSchemaVersion);
            CHECK(ti.model_name == "synthetic");
            CHECK(ti.model_arch == "llama");
            CHECK(ti.model_path == "/models/synthetic.gguf");
            CHECK(ti.n_layer == 3);
            CHECK(ti.n_head == 4);
            CHECK(ti.n_head_kv == 2);
            CHECK(ti.head_dim == 8);
            CHECK(ti.layers == std::vector<int>{0, 2});
            CHECK(ti.rope_theta == 12345.0);
            CHECK(ti.rope_scaling.type == "llama3");
            CHECK(ti.rope_scaling.factor == 8.0f);
            CHECK(ti.rope_pairing == "interleaved");
            CHECK(ti.attn_scale == Approx(1 / std::sqrt(8.0)));
            CHECK(ti.dtype == cs.dtype);
            CHECK(ti.compression == compression_name(cs.gzip));
            CHECK(ti.n_tokens == T);
            CHECK(ti.prompt_len == 200);
            CHECK(ti.complete);
            CHECK(ti.command_line == "kvscope capture --test");
            CHECK(ti.config_json == R"({"x": 1})");
            CHECK(ti.created.size() == 20);
            CHECK(ti.kv_head_of_q_head == std::vector<int32_t>{0, 0, 1, 1});
            CHECK(ti.task.kind == "needle");
            CHECK(ti.task.answer == "1234567");
            CHECK(ti.task.needle_key == "apple");
            CHECK(ti.task.generated == " 1234567.");
            CHECK(ti.task.depth == 0.25);
            CHECK(ti.task.seed == 99);
            CHECK(ti.task.correct);
            CHECK(ti.task.answer_positions == std::vector<int32_t>{40, 41, 42});
            CHECK(ti.task.needle_begin == 30);
            CHECK(ti.task.needle_end == 45);
            CHECK(ti.file_bytes == std::filesystem::file_size(path));
            CHECK_FALSE(r.has_layer(1));
            CHECK_THROWS_AS(r.read(Field::Q, 1, 0, 0, 1), kvs::Error);

            const auto ids = r.token_ids();
            const auto pos = r.positions();
            const auto text = r.token_text();
            const auto lp = r.logprob();
            const auto lse = r.logits_lse();
            const auto tki = r.topk_ids();
            const auto tkl = r.topk_logits();
            REQUIRE(ids.size() == size_t(T));
            REQUIRE(tki.size() == size_t(T) * kTopK);
            int bad = 0;
            for (int64_t t = 0; t < T; ++t) {
                bad += ids[size_t(t)] != int32_t(t * 7919 % 1000);
                bad += pos[size_t(t)] != int32_t(t);
                bad += text[size_t(t)] != text_of(t);
                bad += t + 1 < T ? lp[size_t(t)] != -0.01 * double(t) : !std::isnan(lp[size_t(t)]);
                bad += lse[size_t(t)] != float(t) * 0.5f;
                for (int q = 0; q < kTopK; ++q) {
                    bad += tki[size_t(t) * kTopK + q] != int32_t(t + q);
                    bad += tkl[size_t(t) * kTopK + q] != float(t) - 0.25f * float(q);
                }
            }
            CHECK(bad == 0);
            CHECK(r.token_text(3, 5) == std::vector<std::string>{text_of(3), text_of(4)});

            // Per-layer tensors: whole, one head, and a sub-range; exact up to the storage dtype.
            for (int l : {0, 2}) {
                for (int fi = 0; fi < 4; ++fi) {
                    const Field f = Field(fi);
                    const int rows = field_is_kv(f) ? 2 : 4;
                    const auto all = r.read_heads(f, l, 0, T);
                    REQUIRE(all.size() == size_t(rows) * T * 8);
                    int diff = 0;
                    for (int h = 0; h < rows; ++h)
                        for (int64_t t = 0; t < T; ++t)
                            for (int i = 0; i < 8; ++i)
                                diff += all[(size_t(h) * T + t) * 8 + i] !=
                                        stored(value(l, fi, h, t, i), cs.dtype);
                    CHECK(diff == 0);
                    const auto part = r.read(f, l, rows - 1, 61, 70);
                    REQUIRE(part.size() == 9 * 8);
                    for (int64_t t = 61; t < 70; ++t)
                        CHECK(part[size_t(t - 61) * 8 + 3] ==
                              stored(value(l, fi, rows - 1, t, 3), cs.dtype));
                }
                const auto l3 = r.read_lse(l, 3, 0, T);
                int diff = 0;
                for (int64_t t = 0; t < T; ++t) diff += l3[size_t(t)] != lse_value(l, 3, t);
                CHECK(diff == 0);
            }
            CHECK_THROWS_WITH(r.read(Field::K, 0, 2, 0, 1), Catch::Contains("head 2"));
            CHECK_THROWS_WITH(r.read(Field::Q, 0, 0, 10, T + 1), Catch::Contains("token range"));
        }
        ++k;
    }
}

TEST_CASE("trace: an interrupted capture is complete = false, consistent, last logprob NaN",
          "[cpu]") {
    const ModelConfig c = synthetic_config();
    const std::string path = test::temp_path("interrupted.h5");
    TraceMeta meta;
    meta.model = c;
    meta.chunk_tokens = 16;
    {
        TraceWriter w(path, meta);
        feed(w, c, 0, 20);
        feed(w, c, 20, 20);
        w.set_prompt_len(100);  // more than captured: clamped to n_tokens
        w.finish(false);
    }
    const TraceReader r(path);
    CHECK_FALSE(r.info().complete);
    CHECK(r.info().n_tokens == 40);
    CHECK(r.info().prompt_len == 40);
    CHECK(r.info().layers == std::vector<int>{0, 1, 2});
    CHECK(r.info().task.kind == "text");
    const auto lp = r.logprob();
    CHECK(lp[38] == -0.38);
    CHECK(std::isnan(lp[39]));
}

TEST_CASE("trace: a writer destroyed without finish() leaves no file", "[cpu]") {
    const ModelConfig c = synthetic_config();
    const std::string path = test::temp_path("abandoned.h5");
    TraceMeta meta;
    meta.model = c;
    {
        TraceWriter w(path, meta);
        feed(w, c, 0, 10);
        CHECK(std::filesystem::exists(path + ".partial"));
    }
    CHECK_FALSE(std::filesystem::exists(path));
    CHECK_FALSE(std::filesystem::exists(path + ".partial"));
    // An unwritable destination is a clear error.
    CHECK_THROWS_WITH(TraceWriter("/nonexistent-dir/x.h5", meta),
                      Catch::Contains("/nonexistent-dir/x.h5.partial"));
}

TEST_CASE("capture options: --layers and --compress parsing", "[cpu]") {
    CHECK(parse_layer_list("all", 4) == std::vector<int>{0, 1, 2, 3});
    CHECK(parse_layer_list("", 2) == std::vector<int>{0, 1});
    CHECK(parse_layer_list("0,5,10-12", 30) == std::vector<int>{0, 5, 10, 11, 12});
    CHECK(parse_layer_list("3,1,1,2-3", 30) == std::vector<int>{1, 2, 3});
    CHECK_THROWS_WITH(parse_layer_list("30", 30), Catch::Contains("layer 30 does not exist"));
    CHECK_THROWS_WITH(parse_layer_list("1,x", 30), Catch::Contains("'x'"));
    CHECK_THROWS_WITH(parse_layer_list("5-2", 30), Catch::Contains("empty range"));
    CHECK_THROWS_AS(parse_layer_list("1,,2", 30), kvs::Error);
    CHECK(parse_compression("none") == 0);
    CHECK(parse_compression("gzip") == 1);
    CHECK(parse_compression("gzip:1") == 1);
    CHECK(parse_compression("gzip:9") == 9);
    CHECK_THROWS_AS(parse_compression("gzip:0"), kvs::Error);
    CHECK_THROWS_AS(parse_compression("gzip:10"), kvs::Error);
    CHECK_THROWS_AS(parse_compression("lz4"), kvs::Error);
    CHECK(compression_name(0) == "none");
    CHECK(compression_name(3) == "gzip:3");
}
