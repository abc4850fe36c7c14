// The dense KV cache: GQA mapping, causal positions, eviction, bytes, capacity.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>

#include "engine/kv_cache.h"
#include "kernels/attend.h"

using namespace kvs;

namespace {
// One query over explicit keys through the attention routine (tests/kernels/test_attend.cpp
// checks that routine against hand-computed values and a double-precision reference).
float attend_one(const float* q, int32_t qpos, const float* k, const float* v, const int32_t* kpos,
                 int n, int d, float* out) {
    float lse = 0;
    REQUIRE(kernels::attend_cpu(q, &qpos, 1, k, v, kpos, nullptr, n, d, 1.0f / std::sqrt(float(d)),
                                out, &lse, nullptr) == kernels::Status::ok);
    return lse;
}
}  // namespace

TEST_CASE("dense cache: GQA mapping, eviction, bytes", "[cpu]") {
    const KvShape shape{2, 4, 2, 3};  // 2 layers, 4 query heads over 2 KV heads, d = 3
    DenseKvCache cache(shape, 7);
    std::mt19937 rng(7);
    std::normal_distribution<float> nd;
    const int n = 5, d = 3;
    std::vector<float> k(size_t(2 * n * d)), v(k.size()), q(size_t(4 * n * d));
    for (auto* x : {&k, &v, &q})
        for (auto& e : *x) e = nd(rng);
    std::vector<int32_t> pos = {0, 1, 2, 3, 4};
    cache.append(1, n, pos.data(), k.data(), v.data());
    CHECK(cache.n_held(1, 0) == 5);
    CHECK(cache.n_held(0, 0) == 0);
    std::vector<float> out(q.size()), lse(size_t(4 * n));
    cache.attend(1, n, pos.data(), q.data(), out.data(), lse.data());
    // Query head 3 reads KV head 1; its token 4 sees all 5 keys.
    float ref[3];
    const float l =
        attend_one(&q[(3 * n + 4) * d], 4, &k[(1 * n) * d], &v[(1 * n) * d], pos.data(), 5, d, ref);
    CHECK(lse[3 * n + 4] == Approx(l));
    for (int c = 0; c < d; ++c) CHECK(out[(3 * n + 4) * d + c] == Approx(ref[c]));

    // Evict positions 1 and 3 from KV head 1: attention equals attention over the rest.
    cache.evict(1, 1, {3, 1});
    CHECK(cache.positions(1, 1) == std::vector<int32_t>{0, 2, 4});
    CHECK(cache.positions(1, 0) == std::vector<int32_t>{0, 1, 2, 3, 4});
    cache.attend(1, n, pos.data(), q.data(), out.data(), lse.data());
    std::vector<float> k2, v2;
    for (int j : {0, 2, 4})
        for (int c = 0; c < d; ++c) {
            k2.push_back(k[size_t((1 * n + j) * d + c)]);
            v2.push_back(v[size_t((1 * n + j) * d + c)]);
        }
    const int32_t p2[3] = {0, 2, 4};
    const float l2 = attend_one(&q[(2 * n + 4) * d], 4, k2.data(), v2.data(), p2, 3, d, ref);
    CHECK(lse[2 * n + 4] == Approx(l2));
    for (int c = 0; c < d; ++c) CHECK(out[(2 * n + 4) * d + c] == Approx(ref[c]));
    CHECK(cache.bytes() == size_t(5 + 3) * (2 * 3 * 4 + 4));

    // Capacity is enforced with an error, not an overflow.
    CHECK_THROWS(cache.append(1, 3, pos.data(), k.data(), v.data()));
    cache.clear();
    CHECK(cache.n_held(1, 1) == 0);
}
