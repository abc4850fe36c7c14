// Attention computed from a trace's q and k against a direct double-precision softmax,
// on the capture tests' synthetic trace (3 layers, 4 heads, 2 KV heads, d = 8).
#include <catch2/catch.hpp>
#include <cmath>

#include "gguf_writer.h"
#include "synthetic_trace.h"
#include "viewdata/attention.h"
#include "viewdata/trace_data.h"

using namespace kvs;
using namespace kvs::view;
using capture::Field;

namespace {

// p(t, j) averaged over the query heads of `kv` (all heads when kv < 0) of `layer`.
double direct(const TraceData& tr, int layer, int kv, int64_t t, int64_t j) {
    const auto& I = tr.info;
    const int64_t T = I.n_tokens;
    double acc = 0;
    int n = 0;
    for (int h = 0; h < I.n_head; ++h) {
        const int g = I.kv_head_of_q_head[size_t(h)];
        if (kv >= 0 && g != kv) continue;
        const auto q = tr.reader->read(Field::Q, layer, h, 0, T);
        const auto k = tr.reader->read(Field::K, layer, g, 0, T);
        // The softmax over the keys query t sees (the synthetic trace's stored lse is random,
        // so it is recomputed here from the definition).
        auto score = [&](int64_t jj) {
            double dot = 0;
            for (int i = 0; i < I.head_dim; ++i)
                dot += double(q[size_t(t * I.head_dim + i)]) * k[size_t(jj * I.head_dim + i)];
            return I.attn_scale * dot;
        };
        double m = -INFINITY, z = 0;
        for (int64_t jj = 0; jj <= t; ++jj) m = std::max(m, score(jj));
        for (int64_t jj = 0; jj <= t; ++jj) z += std::exp(score(jj) - m);
        acc += std::exp(score(j) - m) / z;
        ++n;
    }
    return acc / n;
}

}  // namespace

TEST_CASE("attention: from q and k, per KV head and aggregated", "[cpu]") {
    const std::string path = test::temp_path("att.h5");
    test::write_synthetic_trace(path, 37);
    const auto tr = load_trace(path);
    REQUIRE(tr->n_tokens() == 37);
    REQUIRE(tr->q_heads_of(1) == std::vector<int>{2, 3});
    std::vector<float> progress;
    const Matrix m1 = attention_matrix(*tr, 2, 1, [&](float f) { progress.push_back(f); });
    REQUIRE(m1.rows == 37);
    REQUIRE(m1.cols == 37);
    REQUIRE(!progress.empty());
    CHECK(progress.back() == Approx(1));
    for (int64_t t = 0; t < 37; t += 4)
        for (int64_t j = 0; j < 37; j += 3) {
            if (j > t) {
                REQUIRE(std::isnan(m1.at(t, j)));
                continue;
            }
            const double want = direct(*tr, 2, 1, t, j);
            REQUIRE(m1.at(t, j) == Approx(want).epsilon(1e-3));
        }
    // All layers and heads: the mean of the per-layer means.
    const Matrix all = attention_matrix(*tr, -1, -1, {});
    for (int64_t t : {0, 17, 36})
        for (int64_t j : {0, 5, 17}) {
            if (j > t) continue;
            const double want =
                (direct(*tr, 0, -1, t, j) + direct(*tr, 1, -1, t, j) + direct(*tr, 2, -1, t, j)) /
                3;
            REQUIRE(all.at(t, j) == Approx(want).epsilon(1e-3));
        }
    // One step for every layer and KV head agrees with the matrix row.
    const std::vector<float> row = attention_at_step(*tr, 20);
    REQUIRE(row.size() == size_t(3 * 2 * 37));
    for (int64_t j = 0; j < 37; ++j) {
        const float v = row[size_t((2 * 2 + 1) * 37 + j)];
        if (j > 20)
            REQUIRE(std::isnan(v));
        else
            REQUIRE(v == Approx(m1.at(20, j)).epsilon(1e-4));
    }
    // Cumulative: the running sum down each column.
    const Matrix cum = cumulative_rows(m1);
    CHECK(cum.at(10, 3) == Approx(m1.at(3, 3) + m1.at(4, 3) + m1.at(5, 3) + m1.at(6, 3) +
                                  m1.at(7, 3) + m1.at(8, 3) + m1.at(9, 3) + m1.at(10, 3)));
    CHECK(std::isnan(cum.at(2, 3)));
    // A layer that was not captured, a cancelled job.
    CHECK_THROWS_WITH(attention_matrix(*tr, 7, 0, {}),
                      "trace '" + path + "': layer 7 was not captured");
    std::atomic<bool> cancel{true};
    attention_matrix(*tr, -1, -1, {}, &cancel);  // returns at once
    const float p[4] = {0.25f, 0.25f, 0.25f, 0.25f};
    CHECK(row_entropy(p, 4) == Approx(std::log(4.0)));
}

TEST_CASE("trace data: printable token text", "[cpu]") {
    CHECK(printable_token("hello") == "hello");
    CHECK(printable_token("\n\xC3\xA9 x") == "\\n\xC3\xA9 x");
    CHECK(printable_token("\xE2\x82") == "\xEF\xBF\xBD\xEF\xBF\xBD");  // partial UTF-8
    CHECK(printable_token("a\tb\x01") == "a\\tb\\x01");
    CHECK(printable_token(std::string(100, 'x'), 10) == std::string(10, 'x') + "...");
}
