#include "simulator/unit_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "engine/error.h"
#include "engine/ggml_types.h"
#include "kernels/ggml_blocks.h"
#include "kernels/quant_pack.h"

namespace kvs::sim {

namespace kk = kvs::kernels;

namespace {
float fp16_round(float x) {
    return kvs::fp16_to_fp32(kvs::fp32_to_fp16(x));
}
}  // namespace

namespace {
// The first index i with mask[i] != 0, or mask.size().
size_t first_set(const std::vector<uint8_t>& mask) {
    return size_t(std::find_if(mask.begin(), mask.end(), [](uint8_t x) { return x != 0; }) -
                  mask.begin());
}

kk::RowFormat pt_format(int bits) {
    return bits == 2 ? kk::RowFormat::pt2 : bits == 4 ? kk::RowFormat::pt4 : kk::RowFormat::pt8;
}
kk::RowFormat kv_format(int bits) {
    return bits == 2 ? kk::RowFormat::kv2 : bits == 4 ? kk::RowFormat::kv4 : kk::RowFormat::kv8;
}
}  // namespace

UnitStore::UnitStore(int d, int group, Precision full) : d_(d), group_(group), prec_(full) {
    KVS_ASSERT(d > 0 && group > 0);
    tmp_.resize(size_t(d) * 2);
}

void UnitStore::set_view(int n) {
    KVS_ASSERT(n >= -1 && n <= held());
    view_ = n;
}

void UnitStore::set_keep_originals(bool on) {
    KVS_ASSERT(pos_.empty());
    keep_orig_ = on;
}

void UnitStore::compact_originals() const {
    // orow_ is strictly increasing (rows are appended in entry order and only dropped), so
    // every row moves down, onto a row no later entry uses: in place, in order.
    const size_t d = size_t(d_), n = orow_.size();
    for (size_t i = 0; i < n; ++i) {
        const size_t r = orow_[i];
        KVS_ASSERT(r >= i);
        if (r != i) {
            std::copy_n(ko_.begin() + ptrdiff_t(r * d), d, ko_.begin() + ptrdiff_t(i * d));
            std::copy_n(vo_.begin() + ptrdiff_t(r * d), d, vo_.begin() + ptrdiff_t(i * d));
        }
        orow_[i] = uint32_t(i);
    }
    ko_.resize(n * d);
    vo_.resize(n * d);
    orow_ident_ = true;
}

const float* UnitStore::k_orig_rows() const {
    KVS_ASSERT(keep_orig_);
    if (!orow_ident_) compact_originals();
    return ko_.data();
}
const float* UnitStore::v_orig_rows() const {
    KVS_ASSERT(keep_orig_);
    if (!orow_ident_) compact_originals();
    return vo_.data();
}

int64_t UnitStore::offload_bytes() const {
    return offload_ ? int64_t(n_lossy_) * 2 * full_row_bytes() : 0;
}

kk::PackedRows UnitStore::packed_k() const {
    return kk::PackedRows{kbuf_.data(), koff_.data(), kaux_.data(), kfmt_.data(), group_};
}
kk::PackedRows UnitStore::packed_v() const {
    return kk::PackedRows{vbuf_.data(), voff_.data(), vaux_.data(), vfmt_.data(), group_};
}
void UnitStore::k_row(int i, float* out) const {
    kk::dequant_rows(packed_k(), i, i + 1, d_, out);
}
void UnitStore::v_row(int i, float* out) const {
    kk::dequant_rows(packed_v(), i, i + 1, d_, out);
}

uint32_t UnitStore::put(int kv, const void* p, size_t n) {
    std::vector<uint8_t>& b = kv == 0 ? kbuf_ : vbuf_;
    const size_t off = b.size();
    KVS_ASSERT(off + n <= size_t(UINT32_MAX));
    const auto* src = static_cast<const uint8_t*>(p);
    b.insert(b.end(), src, src + n);
    return uint32_t(off);
}

void UnitStore::set_quantizer(Quantizer q, float s) {
    if (q == Quantizer::zscore && !(s > 0))
        fail("internal error: the z-score quantizer needs an outlier scale s > 0 (got {})", s);
    quantizer_ = q;
    zscore_s_ = s;
}

void UnitStore::pack_row(const float* src, int n, int bits) {
    scratch_.resize(kk::quant_packed_bytes(1, n, bits, group_, kk::Axis::per_token));
    const kk::Status s =
        quantizer_ == Quantizer::zscore
            ? kk::zscore_pack_cpu(src, 1, n, bits, group_, zscore_s_, scratch_.data())
            : kk::quant_pack_cpu(src, 1, n, bits, group_, kk::Axis::per_token, scratch_.data());
    KVS_ASSERT(s == kk::Status::ok || s == kk::Status::non_finite_input);
}

void UnitStore::store_row(size_t i, int kv, const float* src, int bits) {
    std::vector<uint32_t>& off = kv == 0 ? koff_ : voff_;
    std::vector<uint8_t>& fmt = kv == 0 ? kfmt_ : vfmt_;
    if (bits >= 16) {
        if (prec_ == Precision::f32) {
            off[i] = put(kv, src, size_t(d_) * 4);
            fmt[i] = uint8_t(kk::RowFormat::f32);
        } else {
            scratch_.resize(size_t(d_) * 2);
            for (int c = 0; c < d_; ++c) {
                const uint16_t h = kvs::fp32_to_fp16(src[c]);
                scratch_[2 * size_t(c)] = uint8_t(h & 0xff);
                scratch_[2 * size_t(c) + 1] = uint8_t(h >> 8);
            }
            off[i] = put(kv, scratch_.data(), scratch_.size());
            fmt[i] = uint8_t(kk::RowFormat::f16);
        }
    } else {
        pack_row(src, d_, bits);
        off[i] = put(kv, scratch_.data(), scratch_.size());
        fmt[i] = uint8_t(pt_format(bits));
    }
    (kv == 0 ? kaux_ : vaux_)[i] = 0;
}

void UnitStore::maybe_compact() {
    if (kbuf_.size() + vbuf_.size() > compact_at_) compact();
}

// Rewrites both arenas with the held entries' bytes only, in entry order (a KIVI block's params
// once, before its first held row).
void UnitStore::compact() {
    const size_t n = pos_.size();
    const size_t d = size_t(d_);
    for (int kv = 0; kv < 2; ++kv) {
        std::vector<uint8_t>& b = kv == 0 ? kbuf_ : vbuf_;
        std::vector<uint32_t>& off = kv == 0 ? koff_ : voff_;
        std::vector<uint32_t>& aux = kv == 0 ? kaux_ : vaux_;
        const std::vector<uint8_t>& fmt = kv == 0 ? kfmt_ : vfmt_;
        std::vector<uint8_t> nb;
        nb.reserve(b.size() / 2 + 64);
        // The low-rank basis first (held or not, later rows use it), then each KIVI block's
        // params once, before its first held row.
        const int rank = kv == 0 ? rk_ : rv_;
        uint32_t& basis = kv == 0 ? kbasis_ : vbasis_;
        const uint32_t basis_old = basis;
        if (rank > 0) {
            const size_t len = 4 + 4 * d * size_t(rank);
            basis = uint32_t(nb.size());
            nb.insert(nb.end(), b.begin() + ptrdiff_t(basis_old),
                      b.begin() + ptrdiff_t(basis_old + len));
        }
        uint32_t last_aux_old = UINT32_MAX, last_aux_new = 0;
        for (size_t i = 0; i < n; ++i) {
            const auto f = kk::RowFormat(fmt[i]);
            const bool low_rank = f == kk::RowFormat::lr16 || f == kk::RowFormat::lr32;
            if (kv == 0 &&
                (f == kk::RowFormat::kv2 || f == kk::RowFormat::kv4 || f == kk::RowFormat::kv8)) {
                if (aux[i] != last_aux_old) {
                    last_aux_old = aux[i];
                    last_aux_new = uint32_t(nb.size());
                    nb.insert(nb.end(), b.begin() + ptrdiff_t(aux[i]),
                              b.begin() + ptrdiff_t(aux[i] + 4 * d));
                }
                aux[i] = last_aux_new;
            } else if (low_rank) {
                KVS_ASSERT(rank > 0 && aux[i] == basis_old);
                aux[i] = basis;
            }
            const size_t len = kk::row_format_bytes(f, low_rank ? rank : d_, group_);
            const uint32_t o = uint32_t(nb.size());
            nb.insert(nb.end(), b.begin() + ptrdiff_t(off[i]), b.begin() + ptrdiff_t(off[i] + len));
            off[i] = o;
        }
        b.swap(nb);
    }
    compact_at_ = std::max<size_t>(size_t(1) << 16, 2 * (kbuf_.size() + vbuf_.size()));
}

void UnitStore::append(int32_t pos, const float* k, const float* v) {
    KVS_ASSERT(view_ < 0);
    KVS_ASSERT(pos_.empty() || pos > pos_.back());
    const size_t i = pos_.size();
    pos_.push_back(pos);
    bits_.push_back(uint8_t(full_bits()));
    store_.push_back(Store::full);
    score_.push_back(0.0f);
    count_.push_back(1);
    logc_.push_back(0.0f);
    folded_.emplace_back();
    koff_.push_back(0);
    voff_.push_back(0);
    kaux_.push_back(0);
    vaux_.push_back(0);
    kfmt_.push_back(0);
    vfmt_.push_back(0);
    if (keep_orig_) {
        orow_.push_back(uint32_t(ko_.size() / size_t(d_)));
        ko_.insert(ko_.end(), k, k + d_);
        vo_.insert(vo_.end(), v, v + d_);
    }
    store_row(i, 0, k, 16);
    store_row(i, 1, v, 16);
    kbytes_.push_back(full_row_bytes());
    vbytes_.push_back(full_row_bytes());
    bytes_total_ += 2 * full_row_bytes();
    maybe_compact();
}

void UnitStore::evict_mask(const std::vector<uint8_t>& drop) {
    KVS_ASSERT(view_ < 0 && drop.size() == pos_.size());
    if (const size_t first = first_set(drop); first < drop.size()) changing(pos_[first]);
    size_t w = 0;
    const size_t d = size_t(d_);
    for (size_t i = 0; i < pos_.size(); ++i) {
        if (drop[i]) {
            bytes_total_ -= kbytes_[i] + vbytes_[i];
            evicted_log_.push_back(pos_[i]);
            if (store_[i] != Store::full) --n_lossy_;
            if (count_[i] > 1) --n_merged_;
            continue;
        }
        if (w != i) {
            pos_[w] = pos_[i];
            bits_[w] = bits_[i];
            store_[w] = store_[i];
            score_[w] = score_[i];
            count_[w] = count_[i];
            logc_[w] = logc_[i];
            folded_[w] = std::move(folded_[i]);
            kbytes_[w] = kbytes_[i];
            vbytes_[w] = vbytes_[i];
            koff_[w] = koff_[i];
            voff_[w] = voff_[i];
            kaux_[w] = kaux_[i];
            vaux_[w] = vaux_[i];
            kfmt_[w] = kfmt_[i];
            vfmt_[w] = vfmt_[i];
            if (keep_orig_) orow_[w] = orow_[i];
        }
        ++w;
    }
    pos_.resize(w);
    bits_.resize(w);
    store_.resize(w);
    score_.resize(w);
    count_.resize(w);
    logc_.resize(w);
    folded_.resize(w);
    kbytes_.resize(w);
    vbytes_.resize(w);
    koff_.resize(w);
    voff_.resize(w);
    kaux_.resize(w);
    vaux_.resize(w);
    kfmt_.resize(w);
    vfmt_.resize(w);
    if (keep_orig_ && w < orow_.size()) {
        orow_.resize(w);
        orow_ident_ = false;
        if (ko_.size() / d > 2 * w + 64) compact_originals();
    }
    // Evicted bytes are garbage now, reclaimed at the next compaction.
}

void UnitStore::merge(int i, const float* k, const float* v, int count,
                      const std::vector<uint8_t>& fold) {
    KVS_ASSERT(view_ < 0 && fold.size() == pos_.size() && i >= 0 && i < held() && !fold[size_t(i)]);
    if (count < 1 || count > kMaxCount)
        fail(
            "internal error: a merged entry must stand for 1 to {} tokens (its count is stored as "
            "a uint16), not {}",
            kMaxCount, count);
    changing(pos_[std::min(size_t(i), first_set(fold))]);  // positions ascend with the index
    const size_t ui = size_t(i), d = size_t(d_);
    // The folded entries' positions (and the ones they stood for) join entry i's.
    for (size_t j = 0; j < pos_.size(); ++j) {
        if (!fold[j]) continue;
        folded_[ui].push_back(pos_[j]);
        merged_log_.emplace_back(pos_[j], pos_[ui]);
        for (int32_t p : folded_[j]) {
            folded_[ui].push_back(p);
            merged_log_.emplace_back(p, pos_[ui]);
        }
    }
    std::sort(folded_[ui].begin(), folded_[ui].end());
    // Entry i's new rows, at full precision; they are its originals from now on.
    const bool was_lossy = store_[ui] != Store::full;
    store_row(ui, 0, k, 16);
    store_row(ui, 1, v, 16);
    if (keep_orig_) {
        std::copy_n(k, d, ko_.begin() + ptrdiff_t(size_t(orow_[ui]) * d));
        std::copy_n(v, d, vo_.begin() + ptrdiff_t(size_t(orow_[ui]) * d));
    }
    store_[ui] = Store::full;
    set_width(ui, full_bits());
    n_lossy_ -= int(was_lossy);
    n_merged_ += int(count > 1) - int(count_[ui] > 1);
    count_[ui] = uint16_t(count);
    logc_[ui] = count > 1 ? float(std::log(double(count))) : 0.0f;
    set_token_bytes(i, full_row_bytes() + (count > 1 ? kCountBytes : 0), full_row_bytes());
    bool any = false;
    for (uint8_t f : fold) any |= f != 0;
    if (any) evict_mask(fold);  // the folded entries leave (evicted_log: their own positions)
    maybe_compact();
}

void UnitStore::evict_index(int i) {
    std::vector<uint8_t> drop(pos_.size(), 0);
    drop[size_t(i)] = 1;
    evict_mask(drop);
}

void UnitStore::set_token_bytes(int i, int64_t kb, int64_t vb) {
    bytes_total_ += kb + vb - kbytes_[size_t(i)] - vbytes_[size_t(i)];
    kbytes_[size_t(i)] = kb;
    vbytes_[size_t(i)] = vb;
}

void UnitStore::refuse_low_rank(int i, const char* what) const {
    if (store_[size_t(i)] == Store::low_rank)
        fail("internal error: {} of a low-rank entry (position {}) is not supported", what,
             pos_[size_t(i)]);
}

void UnitStore::set_bits(int i, int bits) {
    bits = kk::snap_bits(bits);
    const size_t ui = size_t(i), d = size_t(d_);
    refuse_low_rank(i, "a new width");
    const bool to_full = bits >= 16;
    if (to_full && store_[ui] == Store::full) return;
    if (!to_full && bits == bits_[ui] && store_[ui] == Store::per_token) return;
    changing(pos_[ui]);
    const bool lossy = store_[ui] != Store::full;
    const bool raise = to_full || bits > bits_[ui] || store_[ui] == Store::sparse;
    float* cur = tmp_.data();
    if (raise && lossy) {
        // Restore from the offloaded full-precision copy.
        if (!offload_ || !keep_orig_)
            fail("internal error: a policy raised an entry's width without an offloaded copy");
        ++restores_;
        store_row(ui, 0, ko_.data() + size_t(orow_[ui]) * d, bits);
        store_row(ui, 1, vo_.data() + size_t(orow_[ui]) * d, bits);
    } else {
        // Lowering re-quantizes the values as stored (already lossy), as a real cache would.
        k_row(i, cur);
        store_row(ui, 0, cur, bits);
        v_row(i, cur);
        store_row(ui, 1, cur, bits);
    }
    store_[ui] = to_full ? Store::full : Store::per_token;
    set_width(ui, to_full ? full_bits() : bits);
    n_lossy_ += int(store_[ui] != Store::full) - int(lossy);
    const int64_t rb =
        to_full ? full_row_bytes()
                : int64_t(kk::quant_packed_bytes(1, d_, bits, group_, kk::Axis::per_token));
    set_token_bytes(i, rb, rb);
    maybe_compact();
}

void UnitStore::set_block_format(int i, Store fmt) {
    KVS_ASSERT(fmt == Store::q8_0 || fmt == Store::q4_0);
    refuse_low_rank(i, "a block format");
    const size_t ui = size_t(i);
    if (store_[ui] == fmt) return;
    changing(pos_[ui]);
    const kk::BlockFormat bf = fmt == Store::q8_0 ? kk::BlockFormat::q8_0 : kk::BlockFormat::q4_0;
    const size_t nb = kk::block_packed_bytes(bf, 1, d_);
    std::vector<uint8_t> packed(nb);
    for (int kv = 0; kv < 2; ++kv) {
        if (kv == 0)
            k_row(i, tmp_.data());
        else
            v_row(i, tmp_.data());
        const kk::Status s = kk::block_pack_cpu(bf, tmp_.data(), 1, d_, packed.data());
        KVS_ASSERT(s == kk::Status::ok || s == kk::Status::non_finite_input);
        const uint32_t o = put(kv, packed.data(), nb);
        const auto f = uint8_t(fmt == Store::q8_0 ? kk::RowFormat::q8_0 : kk::RowFormat::q4_0);
        (kv == 0 ? koff_ : voff_)[ui] = o;
        (kv == 0 ? kfmt_ : vfmt_)[ui] = f;
    }
    if (store_[ui] == Store::full) ++n_lossy_;
    store_[ui] = fmt;
    set_width(ui, fmt == Store::q8_0 ? 8 : 4);
    set_token_bytes(i, int64_t(nb), int64_t(nb));
    maybe_compact();
}

void UnitStore::prune(int i, double p, int bits) {
    bits = kk::snap_bits(bits);
    refuse_low_rank(i, "pruning");
    const size_t ui = size_t(i), d = size_t(d_);
    p = std::clamp(p, 0.0, 1.0);
    const int n_zero = int(std::floor(p * d_));
    if (n_zero == 0) {
        set_bits(i, bits);
        return;
    }
    changing(pos_[ui]);
    int64_t row_bytes[2] = {0, 0};
    std::vector<float> row(d);
    std::vector<int> order(d);
    std::vector<float> kept;
    for (int r = 0; r < 2; ++r) {
        if (r == 0)
            k_row(i, row.data());
        else
            v_row(i, row.data());
        std::iota(order.begin(), order.end(), 0);
        // The n_zero smallest magnitudes; ties by channel index so the result is deterministic
        // (a total order: the same set a stable sort by magnitude puts first).
        std::nth_element(
            order.begin(), order.begin() + (n_zero - 1), order.end(), [&](int a, int b) {
                const float fa = std::fabs(row[size_t(a)]), fb = std::fabs(row[size_t(b)]);
                return fa < fb || (fa == fb && a < b);
            });
        std::vector<uint8_t> keep(d, 1);
        for (int j = 0; j < n_zero; ++j) keep[size_t(order[size_t(j)])] = 0;
        kept.clear();
        for (size_t c = 0; c < d; ++c)
            if (keep[c]) kept.push_back(row[c]);
        const int nnz = int(kept.size());
        // The kept values are packed as one row of nnz elements at `bits`.
        std::vector<float> deq(kept.size());
        int64_t payload = 0;
        if (nnz > 0) {
            if (bits == 16) {
                for (int j = 0; j < nnz; ++j)
                    deq[size_t(j)] =
                        prec_ == Precision::f32 ? kept[size_t(j)] : fp16_round(kept[size_t(j)]);
                payload = full_row_bytes() / d_ * nnz;
            } else {
                pack_row(kept.data(), nnz, bits);
                const size_t nb = scratch_.size();
                kk::quant_unpack_cpu(scratch_.data(), 1, nnz, bits, group_, kk::Axis::per_token,
                                     deq.data());
                payload = int64_t(nb);
            }
        }
        const int64_t idx_bytes = int64_t(d_ <= 256 ? 1 : 2) * nnz;
        const int64_t mask_bytes = (d_ + 7) / 8;
        const int64_t sparse = payload + std::min(idx_bytes, mask_bytes);
        const int64_t dense =
            bits == 16 ? full_row_bytes()
                       : int64_t(kk::quant_packed_bytes(1, d_, bits, group_, kk::Axis::per_token));
        if (sparse < dense) {
            // Held as the decoded dense row (see the header); counted as the sparse format.
            int j = 0;
            for (size_t c = 0; c < d; ++c) row[c] = keep[c] ? deq[size_t(j++)] : 0.0f;
            (r == 0 ? koff_ : voff_)[ui] = put(r, row.data(), d * 4);
            (r == 0 ? kfmt_ : vfmt_)[ui] = uint8_t(kk::RowFormat::f32);
            if (r == 0) kaux_[ui] = 0;
            row_bytes[r] = sparse;
        } else {
            // Dense storage of the pruned row (zeros included) is smaller.
            for (size_t c = 0; c < d; ++c) tmp_[c] = keep[c] ? row[c] : 0.0f;
            store_row(ui, r, tmp_.data(), bits);
            row_bytes[r] = dense;
        }
    }
    if (store_[ui] == Store::full) ++n_lossy_;
    store_[ui] = Store::sparse;
    set_width(ui, bits);
    set_token_bytes(i, row_bytes[0], row_bytes[1]);
    maybe_compact();
}

void UnitStore::quantize_kivi_block(int i0, int n, int bits) {
    bits = kk::snap_bits(bits);
    KVS_ASSERT(i0 >= 0 && n > 0 && i0 + n <= size());
    if (bits == 16) return;
    changing(pos_[size_t(i0)]);
    const size_t d = size_t(d_);
    std::vector<float> blk(size_t(n) * d);
    for (int j = 0; j < n; ++j) {
        KVS_ASSERT(store_[size_t(i0 + j)] == Store::full);
        k_row(i0 + j, blk.data() + size_t(j) * d);
    }
    // Keys: one per-channel group over the block's n tokens: d {scale, zero} params, then a code
    // row per token. The params go to the arena once; every row of the block points at them.
    const size_t nb = kk::quant_packed_bytes(n, d_, bits, n, kk::Axis::per_channel);
    std::vector<uint8_t> packed(nb);
    kk::quant_pack_cpu(blk.data(), n, d_, bits, n, kk::Axis::per_channel, packed.data());
    const size_t params = 4 * d, row_bytes = (d * size_t(bits) + 7) / 8;
    KVS_ASSERT(params + size_t(n) * row_bytes == nb);
    const uint32_t aux = put(0, packed.data(), params);
    const int64_t vb = int64_t(kk::quant_packed_bytes(1, d_, bits, group_, kk::Axis::per_token));
    for (int j = 0; j < n; ++j) {
        const size_t ui = size_t(i0 + j);
        koff_[ui] = put(0, packed.data() + params + size_t(j) * row_bytes, row_bytes);
        kaux_[ui] = aux;
        kfmt_[ui] = uint8_t(kv_format(bits));
        v_row(int(ui), tmp_.data());
        store_row(ui, 1, tmp_.data(), bits);
        store_[ui] = Store::kivi_block;
        set_width(ui, bits);
        ++n_lossy_;
        // The block's key bytes, spread over its tokens; the remainder goes to the first.
        const int64_t kb = int64_t(nb) / n + (j == 0 ? int64_t(nb) % n : 0);
        set_token_bytes(int(ui), kb, vb);
    }
    maybe_compact();
}

void UnitStore::set_low_rank(const std::vector<float>& bk, int rk, const std::vector<float>& bv,
                             int rv) {
    KVS_ASSERT(rk_ == 0 && rv_ == 0);
    KVS_ASSERT(rk >= 1 && rk <= d_ && rv >= 1 && rv <= d_);
    KVS_ASSERT(bk.size() == size_t(rk) * size_t(d_) && bv.size() == size_t(rv) * size_t(d_));
    for (int kv = 0; kv < 2; ++kv) {
        const int r = kv == 0 ? rk : rv;
        const std::vector<float>& b = kv == 0 ? bk : bv;
        std::vector<uint8_t> blk(4 + 4 * b.size());
        const uint32_t r32 = uint32_t(r);
        std::memcpy(blk.data(), &r32, 4);
        std::memcpy(blk.data() + 4, b.data(), 4 * b.size());
        (kv == 0 ? kbasis_ : vbasis_) = put(kv, blk.data(), blk.size());
        basis_bytes_ += int64_t(blk.size());
    }
    rk_ = rk;
    rv_ = rv;
    bk_ = bk;
    bv_ = bv;
}

void UnitStore::project(int i) {
    const size_t ui = size_t(i), d = size_t(d_);
    KVS_ASSERT(rk_ > 0 && store_[ui] == Store::full);
    changing(pos_[ui]);
    const bool f32 = prec_ == Precision::f32;
    int64_t row_bytes[2] = {0, 0};
    for (int kv = 0; kv < 2; ++kv) {
        const int r = kv == 0 ? rk_ : rv_;
        const std::vector<float>& b = kv == 0 ? bk_ : bv_;
        if (kv == 0)
            k_row(i, tmp_.data());
        else
            v_row(i, tmp_.data());
        scratch_.resize(size_t(r) * (f32 ? 4 : 2));
        for (int k = 0; k < r; ++k) {
            float c = 0;  // b_k . x, one fmaf chain over the channels in order
            for (size_t j = 0; j < d; ++j) c = std::fmaf(b[size_t(k) * d + j], tmp_[j], c);
            if (f32) {
                std::memcpy(scratch_.data() + 4 * size_t(k), &c, 4);
            } else {
                const uint16_t h = kvs::fp32_to_fp16(c);
                scratch_[2 * size_t(k)] = uint8_t(h & 0xff);
                scratch_[2 * size_t(k) + 1] = uint8_t(h >> 8);
            }
        }
        (kv == 0 ? koff_ : voff_)[ui] = put(kv, scratch_.data(), scratch_.size());
        (kv == 0 ? kaux_ : vaux_)[ui] = kv == 0 ? kbasis_ : vbasis_;
        (kv == 0 ? kfmt_ : vfmt_)[ui] = uint8_t(f32 ? kk::RowFormat::lr32 : kk::RowFormat::lr16);
        row_bytes[kv] = int64_t(scratch_.size());
    }
    ++n_lossy_;
    store_[ui] = Store::low_rank;
    set_token_bytes(i, row_bytes[0], row_bytes[1]);
    maybe_compact();
}

}  // namespace kvs::sim
