// The sampler's distribution, not only its determinism: greedy and top-k = 1 give the argmax;
// top-p keeps the smallest set of tokens whose mass reaches p (after top-k and temperature,
// renormalized, as transformers and llama.cpp do); top-k keeps the k largest; and the empirical
// frequencies of many draws (fixed seed) follow softmax(logits / T) within a chi-square bound,
// while failing that bound for a wrong temperature.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "engine/sampler.h"

using namespace kvs;

namespace {

// A hand-made distribution over 6 tokens, largest not first: token 3 has 0.4, 0 has 0.3, 5 has
// 0.2, 1 has 0.07, 2 has 0.02, 4 has 0.01 (cumulative in that order: .4 .7 .9 .97 .99 1).
const std::vector<double> kProbs = {0.3, 0.07, 0.02, 0.4, 0.01, 0.2};
const std::vector<int> kOrder = {3, 0, 5, 1, 2, 4};

std::vector<float> logits_of(const std::vector<double>& p) {
    std::vector<float> l;
    for (double x : p) l.push_back(float(std::log(x)) + 3.0f);  // any offset: softmax ignores it
    return l;
}

std::vector<int> draw(const std::vector<float>& logits, SamplerParams sp, int n) {
    Sampler s(sp);
    std::vector<int> counts(logits.size(), 0);
    int out_of_range = 0;
    for (int i = 0; i < n; ++i) {
        const int32_t t = s.sample(logits.data(), int(logits.size()));
        if (t >= 0 && t < int32_t(logits.size()))
            ++counts[size_t(t)];
        else
            ++out_of_range;
    }
    REQUIRE(out_of_range == 0);
    return counts;
}

// softmax(logits / T) restricted to `keep` (renormalized), zero elsewhere.
std::vector<double> expected(const std::vector<float>& logits, double T,
                             const std::set<int>& keep) {
    std::vector<double> p(logits.size(), 0.0);
    double sum = 0;
    for (int i : keep) sum += p[size_t(i)] = std::exp(double(logits[size_t(i)]) / T);
    for (double& x : p) x /= sum;
    return p;
}

// Pearson's chi-square of the counts against probabilities p (tokens with p = 0 must have count
// 0, checked by the callers); degrees of freedom = tokens with p > 0, minus 1.
double chi2(const std::vector<int>& counts, const std::vector<double>& p, int n) {
    double x = 0;
    for (size_t i = 0; i < p.size(); ++i) {
        if (p[i] <= 0) continue;
        const double e = p[i] * n;
        x += (counts[i] - e) * (counts[i] - e) / e;
    }
    return x;
}

// The chi-square value a correct sampler exceeds with probability 0.001, by degrees of freedom.
double chi2_bound(int df) {
    static const double q999[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52};
    REQUIRE(df >= 1);
    REQUIRE(df <= 5);
    return q999[df];
}

std::set<int> sampled(const std::vector<int>& counts) {
    std::set<int> s;
    for (size_t i = 0; i < counts.size(); ++i)
        if (counts[i] > 0) s.insert(int(i));
    return s;
}

}  // namespace

TEST_CASE("sampler: temperature 0 and top-k 1 give the argmax", "[cpu]") {
    const auto l = logits_of(kProbs);
    REQUIRE(argmax(l.data(), int(l.size())) == 3);
    for (uint64_t seed = 0; seed < 20; ++seed) {
        SamplerParams greedy;
        greedy.seed = seed;
        CHECK(draw(l, greedy, 50)[3] == 50);
        SamplerParams k1;
        k1.temperature = 1.5f;
        k1.top_k = 1;
        k1.seed = seed;
        CHECK(draw(l, k1, 50)[3] == 50);
    }
}

TEST_CASE("sampler: top-p keeps the smallest set with mass >= p", "[cpu]") {
    const auto l = logits_of(kProbs);
    const int n = 20000;
    // p -> how many of the tokens (by decreasing probability) must be kept.
    const std::map<float, size_t> cases = {
        {0.3f, 1}, {0.65f, 2}, {0.85f, 3}, {0.95f, 4}, {1.0f, 6}};
    for (const auto& [top_p, n_keep] : cases) {
        INFO("top_p " << top_p);
        SamplerParams sp;
        sp.temperature = 1.0f;
        sp.top_p = top_p;
        sp.seed = 11;
        const auto counts = draw(l, sp, n);
        const std::set<int> keep(kOrder.begin(), kOrder.begin() + long(n_keep));
        CHECK(sampled(counts) == keep);  // 20000 draws: every kept token appears
        if (n_keep > 1) {
            const double x = chi2(counts, expected(l, 1.0, keep), n);
            INFO("chi2 " << x);
            CHECK(x < chi2_bound(int(n_keep) - 1));
        }
    }
}

TEST_CASE("sampler: top-k keeps the k largest, top-p applies after top-k and temperature",
          "[cpu]") {
    const auto l = logits_of(kProbs);
    const int n = 20000;
    SECTION("top-k 2: tokens 3 and 0 in proportion 4:3") {
        SamplerParams sp;
        sp.temperature = 1.0f;
        sp.top_k = 2;
        sp.seed = 5;
        const auto counts = draw(l, sp, n);
        CHECK(sampled(counts) == std::set<int>{3, 0});
        CHECK(chi2(counts, expected(l, 1.0, {3, 0}), n) < chi2_bound(1));
    }
    SECTION("top-k 3 then top-p 0.75: over the renormalized 3 (.44 .33 .22), 2 tokens suffice") {
        // Without renormalization .4 + .3 = .7 < .75 would keep 3 tokens.
        SamplerParams sp;
        sp.temperature = 1.0f;
        sp.top_k = 3;
        sp.top_p = 0.75f;
        sp.seed = 6;
        CHECK(sampled(draw(l, sp, n)) == std::set<int>{3, 0});
    }
    SECTION("temperature 2 then top-p 0.65: the flatter distribution needs 3 tokens") {
        // softmax(log p / 2) ~ sqrt(p): .325 .282 .230 ...: .607 < .65 <= .837. At T = 1, 2.
        SamplerParams sp;
        sp.temperature = 2.0f;
        sp.top_p = 0.65f;
        sp.seed = 7;
        const auto counts = draw(l, sp, n);
        CHECK(sampled(counts) == std::set<int>{3, 0, 5});
        CHECK(chi2(counts, expected(l, 2.0, {3, 0, 5}), n) < chi2_bound(2));
        sp.temperature = 1.0f;
        CHECK(sampled(draw(l, sp, n)) == std::set<int>{3, 0});
    }
}

TEST_CASE("sampler: frequencies follow softmax(logits / T)", "[cpu]") {
    // Five tokens with spread-out logits; 20000 draws per temperature, fixed seeds.
    const std::vector<float> l = {1.0f, -0.5f, 2.0f, 0.3f, 1.4f};
    const std::set<int> all = {0, 1, 2, 3, 4};
    const int n = 20000;
    for (float T : {0.5f, 1.0f, 2.0f}) {
        INFO("T " << T);
        SamplerParams sp;
        sp.temperature = T;
        sp.seed = 100 + uint64_t(T * 10);
        const auto counts = draw(l, sp, n);
        const double x = chi2(counts, expected(l, T, all), n);
        INFO("chi2 " << x << " against softmax(l / " << T << ")");
        CHECK(x < chi2_bound(4));
        // The bound separates temperatures: the same draws are far from the T = 1 (or, for
        // T = 1, the T = 2) distribution.
        const double other = T == 1.0f ? 2.0 : 1.0;
        const double y = chi2(counts, expected(l, other, all), n);
        INFO("chi2 " << y << " against softmax(l / " << other << ")");
        CHECK(y > 20 * chi2_bound(4));
    }
}
