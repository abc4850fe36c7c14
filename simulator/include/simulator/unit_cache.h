// UnitCache: what one (layer, KV head) of a compressed KV cache holds during a replay, stored
// through the real formats of kernels/ so that errors and bytes are the ones a real cache has.
//
// Held tokens are kept in the order they were appended (ascending token index). For each one:
// the dequantized key and value rows (what attention reads), the bits they are stored at, the
// bytes the format stores for them, and the policy's score. Policies change the cache only
// through evict(), set_bits(), prune() and quantize_key_block(); the replay loop appends.
//
// Storage formats (the `Store` of a token):
//   fp16             b = 16: fp16 K and V rows (2 d bytes each)
//   per_token b      quant_pack(x [1, d], b, group, Axis::per_token) for K and for V
//   q8_0 / q4_0      llama.cpp block formats (kernels/ggml_blocks.h), one row per token
//   kivi key block   keys of `group` consecutive tokens packed per channel
//                    (quant_pack(x [g, d], b, g, Axis::per_channel)); values per token. The block's
//                    bytes are spread over its tokens (remainder on the first) so that the sum
//                    over held tokens is exact.
//   sparse           magnitude pruning (seed 001): the kept elements are packed per token at b
//                    bits; their positions cost min(d/8 bitmask, nnz index bytes).
// Lowering a token's bits re-quantizes its current (already lossy) values, as a real cache would;
// raising them (restoring, seed 001) reads the original full-precision copy, i.e. it assumes the
// system kept an offloaded copy; the replay counts those restores.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace kvs::sim {

enum class Store : uint8_t { fp16, per_token, q8_0, q4_0, kivi_block, sparse };

class UnitCache {
  public:
    // k_src, v_src: the trace's rows for this unit [T, d] (fp32, read from the trace).
    UnitCache(const float* k_src, const float* v_src, int64_t n_tokens, int d, int group);

    int d() const { return d_; }
    int group() const { return group_; }
    int64_t n_tokens() const { return n_tokens_; }
    int size() const { return int(pos_.size()); }

    // Appends token t (must be the next one) at fp16.
    void append(int32_t t);
    // Drops the held tokens whose index i (0..size-1) has drop[i] != 0, compacting the rest.
    void evict_mask(const std::vector<uint8_t>& drop);
    // Drops held index i.
    void evict_index(int i);

    // Re-stores held token i per token at `bits` in {2,4,8,16} (snap first). No-op if equal.
    void set_bits(int i, int bits);
    // llama.cpp block format for token i (q8_0 or q4_0).
    void set_block_format(int i, Store fmt);
    // Zeroes the fraction `p` (0..1) smallest-magnitude elements of token i's K and V rows and
    // stores the kept ones at `bits` (sparse when it is smaller than dense).
    void prune(int i, double p, int bits);
    // KIVI: keys of held tokens [i0, i0 + n) packed per channel at `bits` (groups of n tokens),
    // values per token at `bits`. The tokens must be fp16 before.
    void quantize_kivi_block(int i0, int n, int bits);

    // Accessors (index i = held order).
    const int32_t* positions() const { return pos_.data(); }
    int32_t pos(int i) const { return pos_[size_t(i)]; }
    int bits(int i) const { return bits_[size_t(i)]; }
    Store store(int i) const { return store_[size_t(i)]; }
    const float* k_rows() const { return k_.data(); }  // [size, d] dequantized
    const float* v_rows() const { return v_.data(); }
    const float* k_orig_rows() const { return ko_.data(); }  // [size, d] original keys, held
    const float* k_orig(int32_t t) const { return k_src_ + size_t(t) * size_t(d_); }
    const float* v_orig(int32_t t) const { return v_src_ + size_t(t) * size_t(d_); }
    std::vector<float>& scores() { return score_; }  // the policy's score per held token
    const std::vector<float>& scores() const { return score_; }
    int64_t bytes() const { return bytes_total_; }
    // True when every held token is stored exactly as the trace holds it (fp16 of the original).
    bool all_fp16() const { return n_lossy_ == 0; }
    int64_t restores() const { return restores_; }
    // Tokens evicted since the last call (the replay records when each one left).
    std::vector<int32_t>& evicted_log() { return evicted_log_; }
    // (token, new bits) of every change of a held token's width since the last call.
    std::vector<std::pair<int32_t, int32_t>>& bits_log() { return bits_log_; }

  private:
    void set_token_bytes(int i, int64_t kb, int64_t vb);
    void requant_row(float* row, const float* src, int bits);
    const float* k_src_;
    const float* v_src_;
    int64_t n_tokens_;
    int d_, group_;
    std::vector<int32_t> pos_;
    std::vector<uint8_t> bits_;
    std::vector<Store> store_;
    std::vector<float> k_, v_, ko_, score_;
    std::vector<int64_t> kbytes_, vbytes_;
    int64_t bytes_total_ = 0;
    int n_lossy_ = 0;
    int64_t restores_ = 0;
    std::vector<int32_t> evicted_log_;
    std::vector<std::pair<int32_t, int32_t>> bits_log_;
    void set_width(size_t i, int bits) {
        if (bits_[i] != bits) bits_log_.emplace_back(pos_[i], bits);
        bits_[i] = uint8_t(bits);
    }
    std::vector<uint8_t> scratch_;
    std::vector<float> tmp_;
};

}  // namespace kvs::sim
