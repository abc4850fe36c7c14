#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace kvs {

int32_t argmax(const float* x, int n) {
    return int32_t(std::max_element(x, x + n) - x);
}

int32_t Sampler::sample(const float* logits, int n_vocab) {
    if (p_.temperature <= 0.0f) return argmax(logits, n_vocab);
    std::vector<int32_t> idx(static_cast<size_t>(n_vocab));
    std::iota(idx.begin(), idx.end(), 0);
    int k = (p_.top_k > 0 && p_.top_k < n_vocab) ? p_.top_k : n_vocab;
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    idx.resize(size_t(k));
    std::vector<double> p(idx.size());
    const double m = logits[idx[0]];
    double sum = 0;
    for (size_t i = 0; i < idx.size(); ++i)
        sum += p[i] = std::exp((logits[idx[i]] - m) / p_.temperature);
    // top-p: keep the smallest prefix whose mass reaches top_p.
    size_t keep = idx.size();
    if (p_.top_p < 1.0f) {
        double acc = 0;
        for (size_t i = 0; i < idx.size(); ++i) {
            acc += p[i] / sum;
            if (acc >= p_.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    std::discrete_distribution<size_t> dist(p.begin(), p.begin() + long(keep));
    return idx[dist(rng_)];
}

}  // namespace kvs
