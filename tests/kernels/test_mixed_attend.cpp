// mixed_attend (kernels/include/kernels/mixed_attend.h): the CPU reference equals a dense
// attention, written here independently, over the quant_unpack'ed K/V laid out in position order;
// the result does not depend on how tokens are split into classes; empty cache; bad arguments.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/mixed_attend.h"
#include "kernels/quant_pack.h"

using namespace kvs::kernels;
using kvs_test::Rng;

namespace {

// A cache of n tokens of head_dim d in classes of the given widths, with shuffled positions.
struct Cache {
    int d, group;
    std::vector<float> k_dense, v_dense;  // [n_pos, d] dequantized, in position order
    std::vector<int> bits;
    std::vector<std::vector<uint8_t>> k, v;
    std::vector<std::vector<int32_t>> pos;
    int n_pos = 0;

    std::vector<PackedClass> classes() const {
        std::vector<PackedClass> out;
        for (size_t i = 0; i < bits.size(); ++i) {
            PackedClass c;
            c.bits = bits[i];
            c.n_tok = int(pos[i].size());
            c.k = k[i].data(), c.v = v[i].data(), c.pos = pos[i].data();
            out.push_back(c);
        }
        return out;
    }
};

Cache make_cache(Rng& rng, int d, int group, const std::vector<std::pair<int, int>>& class_sizes) {
    Cache c;
    c.d = d, c.group = group;
    for (const auto& cs : class_sizes) c.n_pos += cs.second;
    std::vector<int32_t> perm(static_cast<size_t>(c.n_pos));
    std::iota(perm.begin(), perm.end(), 0);
    for (size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng.next() % i]);
    c.k_dense.assign(size_t(c.n_pos) * d, 0.0f);
    c.v_dense.assign(size_t(c.n_pos) * d, 0.0f);
    size_t next = 0;
    for (const auto& [bits, n] : class_sizes) {
        const auto k = kvs_test::kv_like(rng, n, d), v = kvs_test::kv_like(rng, n, d);
        std::vector<uint8_t> kp(quant_packed_bytes(n, d, bits, group, Axis::per_token));
        std::vector<uint8_t> vp(kp.size());
        REQUIRE(quant_pack_cpu(k.data(), n, d, bits, group, Axis::per_token, kp.data()) ==
                Status::ok);
        REQUIRE(quant_pack_cpu(v.data(), n, d, bits, group, Axis::per_token, vp.data()) ==
                Status::ok);
        std::vector<float> ku(k.size()), vu(v.size());
        quant_unpack_cpu(kp.data(), n, d, bits, group, Axis::per_token, ku.data());
        quant_unpack_cpu(vp.data(), n, d, bits, group, Axis::per_token, vu.data());
        std::vector<int32_t> pos(perm.begin() + long(next), perm.begin() + long(next + n));
        next += size_t(n);
        for (int t = 0; t < n; ++t) {
            std::copy_n(&ku[size_t(t) * d], d, &c.k_dense[size_t(pos[t]) * d]);
            std::copy_n(&vu[size_t(t) * d], d, &c.v_dense[size_t(pos[t]) * d]);
        }
        c.bits.push_back(bits);
        c.k.push_back(std::move(kp));
        c.v.push_back(std::move(vp));
        c.pos.push_back(std::move(pos));
    }
    return c;
}

// Dense attention over [n, d] K/V in position order, in long double.
void dense_attend(const std::vector<float>& q, const std::vector<float>& k,
                  const std::vector<float>& v, int n, int d, float scale, std::vector<float>* out,
                  float* lse, std::vector<float>* probs) {
    std::vector<long double> s(static_cast<size_t>(n));
    long double m = -INFINITY;
    for (int j = 0; j < n; ++j) {
        long double dot = 0;
        for (int c = 0; c < d; ++c) dot += (long double)q[c] * k[size_t(j) * d + c];
        s[j] = dot * scale;
        m = std::max(m, s[j]);
    }
    long double sum = 0;
    for (int j = 0; j < n; ++j) sum += std::exp(s[j] - m);
    const long double l = m + std::log(sum);
    out->assign(size_t(d), 0.0f);
    probs->assign(size_t(n), 0.0f);
    std::vector<long double> acc(size_t(d), 0);
    for (int j = 0; j < n; ++j) {
        const long double p = std::exp(s[j] - l);
        (*probs)[j] = float(p);
        for (int c = 0; c < d; ++c) acc[c] += p * v[size_t(j) * d + c];
    }
    for (int c = 0; c < d; ++c) (*out)[c] = float(acc[c]);
    *lse = float(l);
}

double rel_l2(const std::vector<float>& ref, const std::vector<float>& got) {
    return std::sqrt(kvs_test::nmse(ref, got));
}

}  // namespace

TEST_CASE("mixed_attend equals dense attention over the dequantized cache", "[cpu]") {
    Rng rng(31);
    struct Shape {
        int d, group;
        std::vector<std::pair<int, int>> classes;  // (bits, tokens)
    };
    const std::vector<Shape> shapes = {
        {64, 32, {{16, 7}, {8, 19}, {4, 111}, {2, 1}}},
        {19, 8, {{2, 19}, {16, 1}, {4, 0}, {8, 111}}},
        {1, 32, {{4, 19}, {8, 1}}},
        {128, 32, {{2, 989}, {16, 19}}},
        {111, 16, {{8, 5}, {8, 6}, {2, 7}}},  // a width may repeat
    };
    for (const Shape& sh : shapes) {
        const Cache c = make_cache(rng, sh.d, sh.group, sh.classes);
        std::vector<float> q(static_cast<size_t>(sh.d));
        for (auto& v : q) v = rng.normal();
        const float scale = 1.0f / std::sqrt(float(sh.d));
        std::vector<float> out(static_cast<size_t>(sh.d)),
            probs(static_cast<size_t>(c.n_pos), -1.0f);
        float lse = 0.0f;
        const auto cls = c.classes();
        REQUIRE(mixed_attend_cpu(q.data(), sh.d, sh.group, cls.data(), int(cls.size()), scale,
                                 out.data(), &lse, probs.data(), c.n_pos) == Status::ok);
        std::vector<float> ref_out, ref_probs;
        float ref_lse;
        dense_attend(q, c.k_dense, c.v_dense, c.n_pos, sh.d, scale, &ref_out, &ref_lse, &ref_probs);
        INFO("d " << sh.d << " tokens " << c.n_pos << " rel L2 " << rel_l2(ref_out, out)
                  << " max diff " << kvs_test::max_abs_diff(ref_out, out) << " lse " << lse
                  << " vs " << ref_lse);
        CHECK(rel_l2(ref_out, out) <= 1e-5);
        CHECK(std::fabs(lse - ref_lse) <= 1e-5 * std::max(1.0f, std::fabs(ref_lse)));
        for (int j = 0; j < c.n_pos; ++j) {
            REQUIRE(std::fabs(probs[j] - ref_probs[j]) <= 1e-5 * ref_probs[j] + 1e-12);
        }
    }
}

// Tokens [t0, t1) of a per-token quant_pack buffer as a buffer of their own: their params and
// their rows, copied (the format keeps each token's bytes apart, so no re-quantization).
std::vector<uint8_t> slice_tokens(const std::vector<uint8_t>& buf, int n_tok, int d, int bits,
                                  int g, int t0, int t1) {
    const size_t gpt = bits == 16 ? 0 : size_t((d + g - 1) / g);
    const size_t row = (size_t(d) * bits + 7) / 8;
    std::vector<uint8_t> out(buf.begin() + long(4 * gpt * t0), buf.begin() + long(4 * gpt * t1));
    const size_t payload = 4 * gpt * size_t(n_tok);
    out.insert(out.end(), buf.begin() + long(payload + row * t0),
               buf.begin() + long(payload + row * t1));
    REQUIRE(out.size() == quant_packed_bytes(t1 - t0, d, bits, g, Axis::per_token));
    return out;
}

TEST_CASE("mixed_attend does not depend on class order or on how tokens are split", "[cpu]") {
    Rng rng(32);
    const int d = 64, g = 32;
    const Cache c = make_cache(rng, d, g, {{8, 40}, {4, 30}, {2, 20}, {16, 10}});
    std::vector<float> q(static_cast<size_t>(d));
    for (auto& v : q) v = rng.normal();
    auto cls = c.classes();
    std::vector<float> a(static_cast<size_t>(d)), b(static_cast<size_t>(d)),
        pa(static_cast<size_t>(c.n_pos)), pb(static_cast<size_t>(c.n_pos));
    float la, lb;
    REQUIRE(mixed_attend_cpu(q.data(), d, g, cls.data(), 4, 0.125f, a.data(), &la, pa.data(),
                             c.n_pos) == Status::ok);
    // Reverse the classes and split the 8-bit one (tokens 0..12 and 13..39) and the 16-bit one.
    const auto k0 = slice_tokens(c.k[0], 40, d, 8, g, 0, 13),
               k1 = slice_tokens(c.k[0], 40, d, 8, g, 13, 40);
    const auto v0 = slice_tokens(c.v[0], 40, d, 8, g, 0, 13),
               v1 = slice_tokens(c.v[0], 40, d, 8, g, 13, 40);
    const auto k2 = slice_tokens(c.k[3], 10, d, 16, g, 0, 4),
               k3 = slice_tokens(c.k[3], 10, d, 16, g, 4, 10);
    const auto v2 = slice_tokens(c.v[3], 10, d, 16, g, 0, 4),
               v3 = slice_tokens(c.v[3], 10, d, 16, g, 4, 10);
    std::vector<PackedClass> split = {
        {16, 6, k3.data(), v3.data(), c.pos[3].data() + 4},
        {2, 20, c.k[2].data(), c.v[2].data(), c.pos[2].data()},
        {8, 27, k1.data(), v1.data(), c.pos[0].data() + 13},
        {4, 30, c.k[1].data(), c.v[1].data(), c.pos[1].data()},
        {16, 4, k2.data(), v2.data(), c.pos[3].data()},
        {8, 13, k0.data(), v0.data(), c.pos[0].data()},
    };
    REQUIRE(mixed_attend_cpu(q.data(), d, g, split.data(), int(split.size()), 0.125f, b.data(), &lb,
                             pb.data(), c.n_pos) == Status::ok);
    CHECK(rel_l2(a, b) <= 1e-7);
    CHECK(std::fabs(la - lb) <= 1e-6f);
    CHECK(rel_l2(pa, pb) <= 1e-7);
}

TEST_CASE("mixed_attend empty cache and bad arguments", "[cpu]") {
    const int d = 8;
    std::vector<float> q(d, 1.0f), out(d, 5.0f);
    float lse = 0.0f;
    PackedClass empty;
    empty.bits = 4;
    REQUIRE(mixed_attend_cpu(q.data(), d, 4, &empty, 1, 1.0f, out.data(), &lse, nullptr, 0) ==
            Status::ok);
    CHECK(std::all_of(out.begin(), out.end(), [](float v) { return v == 0.0f; }));
    CHECK(lse == -std::numeric_limits<float>::infinity());
    REQUIRE(mixed_attend_cpu(q.data(), d, 4, nullptr, 0, 1.0f, out.data(), &lse, nullptr, 0) ==
            Status::ok);

    Rng rng(33);
    const Cache c = make_cache(rng, d, 4, {{4, 3}});
    auto cls = c.classes();
    std::vector<float> probs(2);  // positions go up to 2: n_pos 2 is too small
    CHECK(mixed_attend_cpu(q.data(), d, 4, cls.data(), 1, 1.0f, out.data(), &lse, probs.data(),
                           2) == Status::invalid_argument);
    cls[0].bits = 3;
    CHECK(mixed_attend_cpu(q.data(), d, 4, cls.data(), 1, 1.0f, out.data(), &lse, nullptr, 0) ==
          Status::invalid_argument);
    cls[0].bits = 4;
    cls[0].k = nullptr;
    CHECK(mixed_attend_cpu(q.data(), d, 4, cls.data(), 1, 1.0f, out.data(), &lse, nullptr, 0) ==
          Status::invalid_argument);
    CHECK(mixed_attend_cpu(q.data(), d, 4, cls.data(), kMaxMixedClasses + 1, 1.0f, out.data(), &lse,
                           nullptr, 0) == Status::invalid_argument);
}
