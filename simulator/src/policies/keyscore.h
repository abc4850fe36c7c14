// Policies that score tokens from their keys alone, with no attention (kvpress's ScorerPress
// family: knorm, keydiff). Shared by knorm.cpp and keydiff.cpp.
//
// kvpress (NVIDIA/kvpress kvpress/presses/scorer_press.py:76-96) compresses the prompt once:
// scores = score(keys) per KV head, the top int(k_len * (1 - compression_ratio)) kept (no window,
// no sinks). kvscope's convention (docs/policies.md):
//   prefill mode: at P the prompt [0, P) is scored and its top `budget` entries kept, token P
//                 with them (nothing has attended it yet); decoding adds its tokens without
//                 eviction. budget_tokens(t) = budget + (t - P + 1).
//   stream mode:  (kvpress's DecodingPress compresses every compression_interval steps; kvscope
//                 holds the budget at every step) while over budget, the held entries but the
//                 newest are scored again and the lowest evicted, so the cache holds `budget`
//                 entries, the newest included, at every step.
// Scores are computed from the keys as the store holds them (k_row: what attention reads).
// Ties: the lower score is evicted first, then the older token.
#pragma once
#include <functional>

#include "common.h"

namespace kvs::sim::detail {

// Fills score[i] (higher = kept) for the held entries i < n of `u` (the others are not scored).
using KeyScorer = std::function<void(const UnitStore& u, int n, std::vector<float>& score)>;

class KeyScoreLayer final : public LayerPolicy {
  public:
    KeyScoreLayer(const Budget& b, int bits, const LayerContext& c, KeyScorer f)
        : budget_(b), bits_(bits), mode_(c.mode), P_(c.prefill_len), score_(std::move(f)) {}
    bool observes() const override { return false; }
    int64_t budget_tokens(int64_t t, int) const override {
        if (mode_ == Mode::stream) return budget_.tokens(t + 1);
        return std::min<int64_t>(P_, budget_.tokens(P_)) + (t - P_ + 1);
    }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const bool select = mode_ == Mode::stream || t == P_;
        for (auto& u : units) {
            const int64_t keep = budget_tokens(t, 0);
            if (select && u.size() > keep) {
                const int n = u.size() - 1;  // the newest entry is kept
                std::vector<float> key(size_t(u.size()), kProtected);
                score_(u, n, key);
                key[size_t(n)] = kProtected;
                evict_to(u, keep, key);
            }
            store_at(u, bits_);
        }
    }

  private:
    Budget budget_;
    int bits_;
    Mode mode_;
    int64_t P_;
    KeyScorer score_;
};

// A key-scoring policy: budget= and bits= parsed once, every layer scored by `f`.
class KeyScorePolicy final : public Policy {
  public:
    KeyScorePolicy(const Params& p, KeyScorer f)
        : budget_(p.budget()), bits_(p.integer("bits")), score_(std::move(f)) {}
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        return std::make_unique<KeyScoreLayer>(budget_, bits_, c, score_);
    }

  private:
    Budget budget_;
    int bits_;
    KeyScorer score_;
};

}  // namespace kvs::sim::detail
