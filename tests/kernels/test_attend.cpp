// kernels/attend.h: the one attention routine, against hand-computed values, an independent
// double-precision reference on odd sizes, and its exactness contract (a row's bits do not
// depend on the call it is computed in).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/attend.h"

using namespace kvs::kernels;

namespace {

// Softmax attention in double, written from the definition (no shared code with attend_cpu).
void reference(const std::vector<float>& q, const std::vector<int32_t>& qpos, int nq,
               const std::vector<float>& k, const std::vector<float>& v,
               const std::vector<int32_t>& kpos, const std::vector<float>& bias, int n, int d,
               float scale, std::vector<double>& out, std::vector<double>& lse,
               std::vector<double>& probs) {
    out.assign(size_t(nq) * d, 0.0);
    lse.assign(size_t(nq), -INFINITY);
    probs.assign(size_t(nq) * n, 0.0);
    for (int i = 0; i < nq; ++i) {
        std::vector<double> s(size_t(n), -INFINITY);
        double m = -INFINITY;
        for (int j = 0; j < n; ++j) {
            if (!qpos.empty() && kpos[size_t(j)] > qpos[size_t(i)]) continue;
            double dot = 0;
            for (int c = 0; c < d; ++c)
                dot += double(q[size_t(i) * d + c]) * double(k[size_t(j) * d + c]);
            s[size_t(j)] = double(scale) * dot + (bias.empty() ? 0.0 : double(bias[size_t(j)]));
            m = std::max(m, s[size_t(j)]);
        }
        if (m == -INFINITY) continue;
        double z = 0;
        for (int j = 0; j < n; ++j) z += std::exp(s[size_t(j)] - m);
        lse[size_t(i)] = m + std::log(z);
        for (int j = 0; j < n; ++j) {
            const double p = std::exp(s[size_t(j)] - lse[size_t(i)]);
            probs[size_t(i) * n + j] = p;
            for (int c = 0; c < d; ++c) out[size_t(i) * d + c] += p * double(v[size_t(j) * d + c]);
        }
    }
}

struct Case {
    int nq, n, d;
    std::vector<float> q, k, v, bias;
    std::vector<int32_t> qpos, kpos;
};

Case make_case(int nq, int n, int d, bool causal, bool with_bias, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.5f);
    Case c{nq, n, d, {}, {}, {}, {}, {}, {}};
    c.q.resize(size_t(nq) * d);
    c.k.resize(size_t(n) * d);
    c.v.resize(size_t(n) * d);
    for (auto* x : {&c.q, &c.k, &c.v})
        for (auto& e : *x) e = nd(rng);
    for (int j = 0; j < n; ++j) c.kpos.push_back(3 * j);
    if (causal)
        for (int i = 0; i < nq; ++i) c.qpos.push_back(int32_t(rng() % uint32_t(3 * n + 2)) - 1);
    if (with_bias)
        for (int j = 0; j < n; ++j) c.bias.push_back(std::log(float(1 + rng() % 5)));
    return c;
}

}  // namespace

TEST_CASE("attend: a hand-computed softmax, causal by position", "[cpu]") {
    // d = 2, scale 1/sqrt(2). Keys (1,0), (0,1), (1,1); q = (sqrt2, 0) -> scores 1, 0, 1.
    const float s2 = std::sqrt(2.0f);
    const float q[2] = {s2, 0};
    const float k[6] = {1, 0, 0, 1, 1, 1};
    const float v[6] = {1, 2, 3, 4, 5, 6};
    const int32_t kpos[3] = {0, 1, 2};
    const float scale = 1.0f / s2;
    float out[2], lse, p[3];
    int32_t qp = 2;
    REQUIRE(attend_cpu(q, &qp, 1, k, v, kpos, nullptr, 3, 2, scale, out, &lse, p) == Status::ok);
    const double e = std::exp(1.0), z = 2 * e + 1;
    CHECK(lse == Approx(std::log(z)).epsilon(1e-6));
    CHECK(out[0] == Approx((e * 1 + 3 + e * 5) / z).epsilon(1e-6));
    CHECK(out[1] == Approx((e * 2 + 4 + e * 6) / z).epsilon(1e-6));
    CHECK(p[1] == Approx(1 / z).epsilon(1e-6));
    // The query at position 1 does not see the key at position 2.
    qp = 1;
    REQUIRE(attend_cpu(q, &qp, 1, k, v, kpos, nullptr, 3, 2, scale, out, &lse, p) == Status::ok);
    CHECK(lse == Approx(std::log(e + 1)).epsilon(1e-6));
    CHECK(out[0] == Approx((e * 1 + 3) / (e + 1)).epsilon(1e-6));
    CHECK(p[2] == 0.0f);
    // A bias of log 2 on key 1 counts it twice: it is a merged entry of two equal tokens.
    const float bias[3] = {0, std::log(2.0f), 0};
    qp = 1;
    REQUIRE(attend_cpu(q, &qp, 1, k, v, kpos, bias, 3, 2, scale, out, &lse, p) == Status::ok);
    CHECK(lse == Approx(std::log(e + 2)).epsilon(1e-6));
    CHECK(out[0] == Approx((e * 1 + 2 * 3) / (e + 2)).epsilon(1e-6));
    // No visible key: -inf, a zero output, zero probabilities.
    qp = -1;
    REQUIRE(attend_cpu(q, &qp, 1, k, v, kpos, nullptr, 3, 2, scale, out, &lse, p) == Status::ok);
    CHECK(lse == -std::numeric_limits<float>::infinity());
    CHECK((out[0] == 0.0f && out[1] == 0.0f && p[0] == 0.0f && p[2] == 0.0f));
}

TEST_CASE("attend: equals a double-precision reference on odd sizes", "[cpu]") {
    const int shapes[][3] = {{1, 1, 1},    {3, 7, 5},  {2, 33, 13}, {5, 100, 64},
                             {9, 257, 72}, {4, 19, 8}, {1, 0, 16},  {7, 64, 24}};
    unsigned seed = 1;
    for (const auto& sh : shapes)
        for (bool causal : {false, true})
            for (bool with_bias : {false, true}) {
                const Case c = make_case(sh[0], sh[1], sh[2], causal, with_bias, seed++);
                const float scale = 1.0f / std::sqrt(float(c.d));
                std::vector<float> out(size_t(c.nq) * c.d), lse(size_t(c.nq)),
                    p(size_t(c.nq) * c.n);
                REQUIRE(attend_cpu(c.q.data(), causal ? c.qpos.data() : nullptr, c.nq, c.k.data(),
                                   c.v.data(), c.kpos.data(), with_bias ? c.bias.data() : nullptr,
                                   c.n, c.d, scale, out.data(), lse.data(),
                                   p.data()) == Status::ok);
                std::vector<double> ro, rl, rp;
                reference(c.q, causal ? c.qpos : std::vector<int32_t>{}, c.nq, c.k, c.v, c.kpos,
                          with_bias ? c.bias : std::vector<float>{}, c.n, c.d, scale, ro, rl, rp);
                INFO("nq " << c.nq << " n " << c.n << " d " << c.d << " causal " << causal
                           << " bias " << with_bias);
                for (int i = 0; i < c.nq; ++i) {
                    if (std::isinf(rl[size_t(i)])) {
                        CHECK(std::isinf(lse[size_t(i)]));
                    } else {
                        CHECK(std::fabs(lse[size_t(i)] - rl[size_t(i)]) < 2e-5);
                    }
                    double psum = 0;
                    for (int j = 0; j < c.n; ++j) {
                        CHECK(std::fabs(p[size_t(i) * c.n + j] - rp[size_t(i) * c.n + j]) < 2e-6);
                        psum += p[size_t(i) * c.n + j];
                    }
                    if (!std::isinf(rl[size_t(i)])) CHECK(std::fabs(psum - 1.0) < 1e-5);
                    for (int ch = 0; ch < c.d; ++ch)
                        CHECK(std::fabs(out[size_t(i) * c.d + ch] - ro[size_t(i) * c.d + ch]) <
                              1e-5 * (1 + std::fabs(ro[size_t(i) * c.d + ch])));
                }
            }
}

TEST_CASE("attend: a row's bits do not depend on the call it is computed in", "[cpu]") {
    // A chunk of 37 queries at positions 0..36 over 37 entries, in one call, must give the same
    // bits as each query alone over only the entries it sees (what replay does step by step).
    for (int d : {64, 13}) {
        const int n = 37;
        Case c = make_case(n, n, d, false, false, 11u + unsigned(d));
        for (int j = 0; j < n; ++j) c.kpos[size_t(j)] = j;
        std::vector<int32_t> qpos(static_cast<size_t>(n));
        for (int i = 0; i < n; ++i) qpos[size_t(i)] = i;
        const float scale = 0.125f;
        std::vector<float> out(static_cast<size_t>(n * d)), lse(static_cast<size_t>(n)),
            p(static_cast<size_t>(n * n));
        REQUIRE(attend_cpu(c.q.data(), qpos.data(), n, c.k.data(), c.v.data(), c.kpos.data(),
                           nullptr, n, d, scale, out.data(), lse.data(), p.data()) == Status::ok);
        for (int i = 0; i < n; ++i) {
            std::vector<float> o1(static_cast<size_t>(d)), p1(static_cast<size_t>(i + 1));
            float l1;
            REQUIRE(attend_cpu(c.q.data() + size_t(i) * d, &qpos[size_t(i)], 1, c.k.data(),
                               c.v.data(), c.kpos.data(), nullptr, i + 1, d, scale, o1.data(), &l1,
                               p1.data()) == Status::ok);
            INFO("d " << d << " row " << i);
            CHECK(std::memcmp(&l1, &lse[size_t(i)], sizeof(float)) == 0);
            CHECK(std::memcmp(o1.data(), out.data() + size_t(i) * d, sizeof(float) * d) == 0);
            CHECK(std::memcmp(p1.data(), p.data() + size_t(i) * n, sizeof(float) * (i + 1)) == 0);
        }
        // Unsorted positions (no early stop) give the same bits too.
        std::vector<float> k2(c.k), v2(c.v);
        std::vector<int32_t> kp2(c.kpos);
        std::swap_ranges(k2.begin(), k2.begin() + d, k2.end() - d);
        std::swap_ranges(v2.begin(), v2.begin() + d, v2.end() - d);
        std::swap(kp2.front(), kp2.back());
        std::vector<float> out2(out.size()), lse2(lse.size());
        REQUIRE(attend_cpu(c.q.data(), qpos.data(), n, k2.data(), v2.data(), kp2.data(), nullptr, n,
                           d, scale, out2.data(), lse2.data(), nullptr) == Status::ok);
        // Row 0 sees only entry 0 (now stored last): its result is exact whatever the order.
        CHECK(std::memcmp(out2.data(), out.data(), sizeof(float) * d) == 0);
    }
}

TEST_CASE("attend: bad arguments are refused without writing", "[cpu]") {
    float q[4] = {1, 2, 3, 4}, out[4] = {7, 7, 7, 7}, lse = 7;
    const int32_t kpos[1] = {0};
    CHECK(attend_cpu(q, nullptr, 1, q, q, kpos, nullptr, 1, 0, 1, out, &lse, nullptr) ==
          Status::invalid_argument);
    CHECK(attend_cpu(q, nullptr, 1, nullptr, q, kpos, nullptr, 1, 4, 1, out, &lse, nullptr) ==
          Status::invalid_argument);
    CHECK(attend_cpu(q, nullptr, -1, q, q, kpos, nullptr, 1, 4, 1, out, &lse, nullptr) ==
          Status::invalid_argument);
    CHECK(attend_cpu(q, nullptr, 1, q, q, nullptr, nullptr, 1, 4, 1, out, &lse, nullptr) ==
          Status::invalid_argument);
    CHECK((out[0] == 7 && lse == 7));
}

TEST_CASE("attend: probabilities equal exp(s - m) / z over the whole exponent range", "[cpu]") {
    // d = 1, q = 1, scale = 1: s_j = k_j. Scores from 0 down to -100 (past where expf underflows),
    // an odd count so that both the 8-wide and the scalar exp run.
    const int n = 1001;
    std::vector<float> k(n), v(n, 0.0f), p(n);
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-100.0f, 0.0f);
    for (int j = 0; j < n; ++j) k[size_t(j)] = j == 500 ? 0.0f : u(rng);
    std::vector<int32_t> kpos(n, 0);
    const float q = 1.0f;
    float out = 0, lse = 0;
    REQUIRE(attend_cpu(&q, nullptr, 1, k.data(), v.data(), kpos.data(), nullptr, n, 1, 1.0f, &out,
                       &lse, p.data()) == Status::ok);
    double z = 0;
    for (int j = 0; j < n; ++j) z += std::exp(double(k[size_t(j)]));
    CHECK(lse == Approx(std::log(z)).epsilon(1e-6));
    int zeros = 0;
    for (int j = 0; j < n; ++j) {
        const double want = std::exp(double(k[size_t(j)])) / z;
        INFO("s = " << k[size_t(j)]);
        if (k[size_t(j)] < -87.3f) {
            CHECK(p[size_t(j)] == 0.0f);  // below the normal floats: flushed to 0
            ++zeros;
        } else {
            CHECK(std::fabs(p[size_t(j)] - want) <= 1e-6 * want);
        }
    }
    CHECK(zeros > 50);
}
