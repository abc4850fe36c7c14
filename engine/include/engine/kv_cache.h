// The KV cache is an interface (ARCHITECTURE.md, contract 2): the forward pass appends keys and
// values, asks the cache to attend, and a policy applies decisions to it. The dense fp32 cache is
// one implementation; compressed caches (packed, mixed precision) plug in behind the same calls.
//
// Every entry remembers the absolute position of its token; attention is causal by position
// (a query at position p sees entries with position <= p), so a cache that evicted tokens
// still attends correctly. Shapes (row-major):
//   k, v : [n_head_kv, n_tok, head_dim]   q, out : [n_head, n_tok, head_dim]   lse : [n_head,
//   n_tok]
// Query head h reads KV head h / (n_head / n_head_kv) (GQA).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/packed_rows.h"

namespace kvs {

struct KvShape {
    int n_layer = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
};

class KvCache {
  public:
    virtual ~KvCache() = default;
    virtual const KvShape& shape() const = 0;
    // Stores n_tok new entries of layer il (k, v: [n_head_kv, n_tok, d]) at positions pos[n_tok].
    virtual void append(int il, int n_tok, const int32_t* pos, const float* k, const float* v) = 0;
    // Softmax attention of n_tok queries (q: [n_head, n_tok, d], positions pos[n_tok]) over the
    // entries held for layer il, scaled by 1/sqrt(d). Writes out [n_head, n_tok, d] and the
    // natural log-sum-exp of each scaled score row, lse [n_head, n_tok].
    virtual void attend(int il, int n_tok, const int32_t* pos, const float* q, float* out,
                        float* lse) const = 0;
    // Entries held for (layer, kv head).
    virtual int n_held(int il, int h_kv) const = 0;
    virtual std::vector<int32_t> positions(int il, int h_kv) const = 0;
    // A decision: drop the entries of (layer, kv head) whose positions are listed.
    virtual void evict(int il, int h_kv, const std::vector<int32_t>& positions) = 0;
    // Bytes the cache really stores for its entries (payload + metadata), all layers and heads.
    virtual size_t bytes() const = 0;
    virtual void clear() = 0;
    // How many tokens starting at position first_pos one append/attend call may carry (a cache
    // whose policy acts between tokens takes them one at a time). Drivers split chunks by it.
    virtual int max_chunk(int64_t first_pos) const {
        (void)first_pos;
        return 1 << 30;
    }
};

// Dense fp32 cache with a fixed capacity per (layer, kv head).
class DenseKvCache final : public KvCache {
  public:
    DenseKvCache(const KvShape& shape, int capacity);
    const KvShape& shape() const override { return shape_; }
    void append(int il, int n_tok, const int32_t* pos, const float* k, const float* v) override;
    void attend(int il, int n_tok, const int32_t* pos, const float* q, float* out,
                float* lse) const override;
    int n_held(int il, int h_kv) const override;
    std::vector<int32_t> positions(int il, int h_kv) const override;
    void evict(int il, int h_kv, const std::vector<int32_t>& positions) override;
    size_t bytes() const override;
    void clear() override;
    int capacity() const { return capacity_; }

  private:
    struct Slot {
        std::vector<float> k, v;   // [capacity, d]
        std::vector<int32_t> pos;  // [capacity]
        int n = 0;
    };
    Slot& slot(int il, int h) { return slots_[size_t(il) * shape_.n_head_kv + h]; }
    const Slot& slot(int il, int h) const { return slots_[size_t(il) * shape_.n_head_kv + h]; }
    KvShape shape_;
    int capacity_;
    std::vector<Slot> slots_;
};

// One (layer, KV head) as attention reads it: n entries, rows [n, d] fp32 (k, v) or packed as a
// compressed cache stores them (packed: pk, pv, kernels/packed_rows.h), positions, an optional
// per-entry logit bias.
struct KvView {
    const float* k = nullptr;
    const float* v = nullptr;
    const int32_t* pos = nullptr;
    const float* bias = nullptr;
    int n = 0;
    bool packed = false;
    kernels::PackedRows pk, pv;
};

// The attention of a chunk (q, out: [n_head, n_tok, d]; lse [n_head, n_tok]) over the views of
// every KV head of one layer (view(g) for g in [0, n_head_kv)), with kernels/attend.h's
// attend_cpu, threaded over (KV head, rows). Every KvCache implementation attends through it.
void attend_groups(const KvShape& shape, int n_tok, const int32_t* pos, const float* q, float* out,
                   float* lse, const std::function<KvView(int)>& view);

}  // namespace kvs
