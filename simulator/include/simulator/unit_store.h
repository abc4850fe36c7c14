// UnitStore: one (layer, KV head) of a compressed KV cache, stored through the real formats of
// kernels/ so that errors and bytes are the ones a real cache has. It knows nothing of traces or
// of the engine: the replay driver feeds it rows read from a trace, the live driver (a KvCache
// inside the engine, simulator/live_cache.h) the rows the forward pass computes. Policies act on
// it the same way in both.
//
// Held entries are kept in the order they were appended (ascending position). For each one: its
// key and value rows as the format really stores them (packed bytes in an arena, described by
// kernels/packed_rows.h; attention reads them through kernels::attend_packed_cpu and decodes
// them on the fly, so a 4-bit cache is read as 4-bit bytes), the width it is stored at, the bytes
// the format stores for it, and the policy's score. Policies change the store only through evict(),
// set_bits(), set_block_format(), prune(), quantize_kivi_block() and merge(); the drivers
// append.
//
// Full precision is the store's `Precision`: fp16 (what real systems keep; the default) or fp32
// (the engine's dense cache, for bit-exact comparisons). Its width is reported as 16 or 32.
// Storage formats (the `Store` of an entry):
//   full             fp16 or fp32 K and V rows (2 d or 4 d bytes each)
//   per_token b      quant_pack(x [1, d], b, group, Axis::per_token) for K and for V
//   q8_0 / q4_0      llama.cpp block formats (kernels/ggml_blocks.h), one row per token
//   kivi key block   keys of `group` consecutive tokens packed per channel
//                    (quant_pack(x [g, d], b, g, Axis::per_channel)); values per token. The block's
//                    bytes are spread over its tokens (remainder on the first) so that the sum
//                    over held tokens is exact.
//   low_rank         (ZACK) r coefficients per row in the unit's basis (set_low_rank: r basis
//                    rows of d fp32 for K, likewise for V, each stored once in the arena and
//                    counted once in bytes()); the coefficients at the store's full precision
//   sparse           magnitude pruning (seed 001): the kept elements are packed per token at b
//                    bits; their positions cost min(d/8 bitmask, nnz index bytes). (The arena
//                    holds a sparse row decoded to dense fp32, which attention reads: its bytes
//                    are counted as the sparse format's, its decode speed is not that format's.)
// Merged entries: an entry is one token, or a merged entry standing for `count` original tokens
// (merge()): its key and value rows are the ones the policy gives (a centroid, say), stored at
// full precision, and attention adds log(count) to its logit (bias(), handed to
// kernels::attend_packed_cpu), so a merged entry of n tokens with equal keys receives exactly the
// attention those n tokens would. The entry keeps its representative's position (the position
// of the entry the others were folded into) and the list of the other original positions it
// stands for (folded(i)). Its bytes: its stored K and V rows plus the count, a uint16 (2 bytes,
// kCountBytes; a count above 65535 is refused), counted on the K side. merged_log() records, for
// each original position folded, the representative it went into; the folded entries' own
// positions also go to evicted_log() (they left the cache as entries of their own).
// Lowering an entry's width re-quantizes its current (already lossy) values, as a real cache
// would. Raising it (restoring, seed 001) reads the original full-precision copy: that is only
// allowed when the store keeps an offloaded copy (set_offload(true)), whose bytes are real memory
// and are counted apart (offload_bytes(): the full-precision K and V of every held lossy entry).
//
// The store also keeps the original rows of its held entries (set_keep_originals, on by default)
// for measurement (replay's recall with the original keys) and as the offloaded restore source;
// those are not part of the cache and are not counted in bytes(). The live driver keeps them only
// for policies that offload. Rewritten rows are appended to the arena and the old bytes become
// garbage, reclaimed by compaction (in entry order) once the arena is twice the live bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "kernels/packed_rows.h"

namespace kvs::sim {

enum class Store : uint8_t { full, per_token, q8_0, q4_0, kivi_block, sparse, low_rank };
enum class Precision : uint8_t { f16, f32 };

class UnitStore {
  public:
    UnitStore(int d, int group, Precision full = Precision::f16);

    int d() const { return d_; }
    int group() const { return group_; }
    Precision precision() const { return prec_; }
    int full_bits() const { return prec_ == Precision::f32 ? 32 : 16; }
    // Entries a policy sees: all held ones, or the first n while a view is set (the live driver
    // shows each query of a prompt chunk only the entries at or before its position).
    int size() const { return view_ >= 0 ? view_ : int(pos_.size()); }
    int held() const { return int(pos_.size()); }
    void set_view(int n);  // -1: no view
    int view() const { return view_; }

    // Appends an entry at position `pos` (greater than every held one) with its original rows,
    // stored at full precision.
    void append(int32_t pos, const float* k, const float* v);
    // Drops the held entries whose index i (0..size-1) has drop[i] != 0, compacting the rest.
    void evict_mask(const std::vector<uint8_t>& drop);
    // Drops held index i.
    void evict_index(int i);

    // Re-stores held entry i per token at `bits` in {2,4,8} or at full precision (bits >= 16),
    // snapping to a supported width. No-op if equal.
    void set_bits(int i, int bits);
    // How set_bits() and prune() fill per-token codes from now on: min / max groups
    // (kernels::quant_pack, the default) or seed 001's mean / std rule with outlier scale s
    // (kernels::zscore_pack_cpu). Both write the same bytes per row (the same format, decoded the
    // same way); only the codes differ.
    enum class Quantizer : uint8_t { minmax, zscore };
    void set_quantizer(Quantizer q, float s = 0);
    // llama.cpp block format for entry i (q8_0 or q4_0).
    void set_block_format(int i, Store fmt);
    // Zeroes the fraction `p` (0..1) smallest-magnitude elements of entry i's K and V rows and
    // stores the kept ones at `bits` (sparse when it is smaller than dense).
    void prune(int i, double p, int bits);
    // KIVI: keys of held entries [i0, i0 + n) packed per channel at `bits` (groups of n tokens),
    // values per token at `bits`. The entries must be at full precision before.
    void quantize_kivi_block(int i0, int n, int bits);
    // Low rank (ZACK): the bases entries are projected onto from now on, r_k rows of d values
    // for keys and r_v for values (each row of unit length, the rows orthogonal: the projection
    // of x is sum_k (b_k . x) b_k). Set once; their bytes (4 + 4 d r each) count in bytes().
    void set_low_rank(const std::vector<float>& bk, int rk, const std::vector<float>& bv, int rv);
    int rank_k() const { return rk_; }
    int rank_v() const { return rv_; }
    // Entry i's K and V rows replaced by their coefficients in the bases (b_k . x, in order of
    // k), stored at full precision: 2 r or 4 r bytes per row. The entry must be at full
    // precision; set_low_rank first.
    void project(int i);
    // Merges: entry i gets the rows k, v [d] (stored at full precision) and stands for `count`
    // tokens; the held entries j with fold[j] != 0 (fold has size() entries, fold[i] == 0) are
    // folded into it: removed, their positions (and the ones they stood for) added to entry i's.
    // count (in [1, kMaxCount]) is what the policy says the rows stand for: normally entry i's
    // count plus the counts folded in. The merged rows become the entry's originals (what a
    // restore from an offloaded copy gives back). Not while a view is set.
    void merge(int i, const float* k, const float* v, int count, const std::vector<uint8_t>& fold);
    static constexpr int kMaxCount = 65535;
    static constexpr int64_t kCountBytes = 2;  // the count, a uint16, per merged entry
    int count(int i) const { return count_[size_t(i)]; }
    // The original positions entry i stands for besides its own (empty for a plain token).
    const std::vector<int32_t>& folded(int i) const { return folded_[size_t(i)]; }
    // Per-entry logit bias for attention: log(count) per held entry, or nullptr when no held
    // entry is merged (then attention is exactly what it was before merges existed).
    const float* bias() const { return n_merged_ > 0 ? logc_.data() : nullptr; }
    bool any_merged() const { return n_merged_ > 0; }
    // (original position, representative position) of every token folded since the last call.
    std::vector<std::pair<int32_t, int32_t>>& merged_log() { return merged_log_; }

    // Whether the system keeps an offloaded full-precision copy of lossy entries (a restore
    // source). Set by the driver from LayerPolicy::offloads().
    void set_offload(bool on) { offload_ = on; }
    // Whether the original rows are kept (before the first append only). Restores need them.
    void set_keep_originals(bool on);
    // Called, when set, just before any change of what attention reads from the entries already
    // held: an eviction, a new width or format, a prune, a merge (not before an append, whose
    // entry comes after every held one), with the smallest position the change touches. Replay
    // uses it to attend a stretch of steps in one call: until a change touches a position a
    // waiting step sees, that step's entries are still there, unchanged.
    void set_on_change(std::function<void(int32_t)> f) { on_change_ = std::move(f); }

    // Accessors (index i = held order).
    const int32_t* positions() const { return pos_.data(); }
    int32_t pos(int i) const { return pos_[size_t(i)]; }
    int bits(int i) const { return bits_[size_t(i)]; }
    Store store(int i) const { return store_[size_t(i)]; }
    // The held entries' rows as stored (for kernels::attend_packed_cpu); valid until the next
    // change of the store.
    kernels::PackedRows packed_k() const;
    kernels::PackedRows packed_v() const;
    // Entry i's rows as attention reads them (decoded), into out [d].
    void k_row(int i, float* out) const;
    void v_row(int i, float* out) const;
    const float* k_orig_rows() const;  // [held, d] original rows (needs keep originals)
    const float* v_orig_rows() const;
    // Bytes the arenas occupy now (live rows + garbage not yet reclaimed + KIVI params).
    size_t arena_bytes() const { return kbuf_.size() + vbuf_.size(); }
    std::vector<float>& scores() { return score_; }  // the policy's score per held entry
    const std::vector<float>& scores() const { return score_; }
    int64_t bytes() const { return bytes_total_ + basis_bytes_; }
    // Bytes of the offloaded full-precision copies (0 unless set_offload(true)).
    int64_t offload_bytes() const;
    // True when every held entry is stored at full precision.
    bool all_full() const { return n_lossy_ == 0; }
    int64_t restores() const { return restores_; }
    // Positions evicted since the last call (the drivers record when each one left).
    std::vector<int32_t>& evicted_log() { return evicted_log_; }
    // (position, new width) of every change of a held entry's width since the last call.
    std::vector<std::pair<int32_t, int32_t>>& bits_log() { return bits_log_; }

  private:
    void set_token_bytes(int i, int64_t kb, int64_t vb);
    // Stores src [d] for entry i's K (kv = 0) or V (kv = 1) row at `bits` (per token, or full
    // precision for bits >= 16), appending the bytes to the arena.
    void store_row(size_t i, int kv, const float* src, int bits);
    // Appends bytes to an arena, returning their offset.
    uint32_t put(int kv, const void* p, size_t n);
    void maybe_compact();
    void compact();
    void refuse_low_rank(int i, const char* what) const;
    std::vector<float> bk_, bv_;  // the low-rank bases (rk_ x d, rv_ x d)
    int64_t full_row_bytes() const { return int64_t(d_) * (prec_ == Precision::f32 ? 4 : 2); }
    // Per-token codes of src [n] (one row) at `bits` into scratch_ (quant_packed_bytes(1, n, ...)
    // bytes), by the store's quantizer.
    void pack_row(const float* src, int n, int bits);
    int d_, group_;
    Precision prec_;
    Quantizer quantizer_ = Quantizer::minmax;
    float zscore_s_ = 0;
    int view_ = -1;
    bool offload_ = false;
    std::vector<int32_t> pos_;
    std::vector<uint8_t> bits_;
    std::vector<Store> store_;
    bool keep_orig_ = true;
    // Arenas of packed K and V rows, and per held entry: offsets, KIVI params offset, format.
    std::vector<uint8_t> kbuf_, vbuf_;
    std::vector<uint32_t> koff_, voff_, kaux_, vaux_;
    // Low rank: the bases' offsets in the arenas, their ranks (0: none) and bytes.
    uint32_t kbasis_ = 0, vbasis_ = 0;
    int rk_ = 0, rv_ = 0;
    int64_t basis_bytes_ = 0;
    std::vector<uint8_t> kfmt_, vfmt_;
    size_t compact_at_ = 1 << 16;
    std::vector<float> score_;
    // The original rows: entry i's at row orow_[i] of ko_ / vo_. An eviction only drops the
    // index (moving every later row was most of a window policy's replay time); the rows are
    // put back in entry order when a caller needs them contiguous (k_orig_rows) or once the
    // dropped ones outnumber the held ones.
    mutable std::vector<float> ko_, vo_;
    mutable std::vector<uint32_t> orow_;
    mutable bool orow_ident_ = true;  // orow_ is 0, 1, ... and ko_ holds no dropped rows
    void compact_originals() const;
    std::vector<int64_t> kbytes_, vbytes_;
    int64_t bytes_total_ = 0;
    int n_lossy_ = 0;
    int64_t restores_ = 0;
    std::vector<int32_t> evicted_log_;
    std::vector<uint16_t> count_;
    std::vector<float> logc_;
    std::vector<std::vector<int32_t>> folded_;
    int n_merged_ = 0;
    std::vector<std::pair<int32_t, int32_t>> merged_log_;
    std::vector<std::pair<int32_t, int32_t>> bits_log_;
    void set_width(size_t i, int bits) {
        if (bits_[i] != bits) bits_log_.emplace_back(pos_[i], bits);
        bits_[i] = uint8_t(bits);
    }
    std::function<void(int32_t)> on_change_;
    void changing(int32_t first_pos) {
        if (on_change_) on_change_(first_pos);
    }
    std::vector<uint8_t> scratch_;
    std::vector<float> tmp_;
    std::vector<uint32_t> remap_;
};

}  // namespace kvs::sim
