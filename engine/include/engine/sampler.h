// Token sampling: greedy (temperature 0), or temperature + top-k + top-p with a seeded RNG.
#pragma once
#include <cstdint>
#include <random>

namespace kvs {

struct SamplerParams {
    float temperature = 0.0f;  // 0 = greedy
    float top_p = 1.0f;
    int top_k = 0;  // 0 = off
    uint64_t seed = 0;
};

class Sampler {
  public:
    explicit Sampler(const SamplerParams& p) : p_(p), rng_(p.seed) {}
    int32_t sample(const float* logits, int n_vocab);

  private:
    SamplerParams p_;
    std::mt19937_64 rng_;
};

int32_t argmax(const float* x, int n);

}  // namespace kvs
