// The dense KV cache and the reference attention against hand-computed values.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>

#include "engine/kv_cache.h"

using namespace kvs;

TEST_CASE("attend_one matches a hand-computed softmax", "[cpu]") {
    // d = 2, scale 1/sqrt(2). Keys (1,0), (0,1), (1,1); q = (sqrt2, 0) -> scores 1, 0, 1.
    const float s2 = std::sqrt(2.0f);
    const float q[2] = {s2, 0};
    const float k[6] = {1, 0, 0, 1, 1, 1};
    const float v[6] = {1, 2, 3, 4, 5, 6};
    const int32_t pos[3] = {0, 1, 2};
    float out[2];
    const float lse = attend_one(q, 2, k, v, pos, 3, 2, out);
    const double e = std::exp(1.0), z = 2 * e + 1;
    CHECK(lse == Approx(std::log(z)).epsilon(1e-6));
    CHECK(out[0] == Approx((e * 1 + 3 + e * 5) / z).epsilon(1e-6));
    CHECK(out[1] == Approx((e * 2 + 4 + e * 6) / z).epsilon(1e-6));
    // Causal by position: the query at position 1 does not see the key at position 2.
    const float lse1 = attend_one(q, 1, k, v, pos, 3, 2, out);
    CHECK(lse1 == Approx(std::log(e + 1)).epsilon(1e-6));
    CHECK(out[0] == Approx((e * 1 + 3) / (e + 1)).epsilon(1e-6));
    // No visible key: -inf and a zero output.
    const int32_t late[3] = {5, 6, 7};
    CHECK(attend_one(q, 1, k, v, late, 3, 2, out) == -std::numeric_limits<float>::infinity());
    CHECK(out[0] == 0.0f);
}

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
