#include "simulator/unit_store.h"

#include <algorithm>
#include <cmath>
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

UnitStore::UnitStore(int d, int group, Precision full) : d_(d), group_(group), prec_(full) {
    KVS_ASSERT(d > 0 && group > 0);
    tmp_.resize(size_t(d) * 2);
}

void UnitStore::set_view(int n) {
    KVS_ASSERT(n >= -1 && n <= held());
    view_ = n;
}

int64_t UnitStore::offload_bytes() const {
    return offload_ ? int64_t(n_lossy_) * 2 * full_row_bytes() : 0;
}

void UnitStore::append(int32_t pos, const float* k, const float* v) {
    KVS_ASSERT(view_ < 0);
    KVS_ASSERT(pos_.empty() || pos > pos_.back());
    pos_.push_back(pos);
    bits_.push_back(uint8_t(full_bits()));
    store_.push_back(Store::full);
    score_.push_back(0.0f);
    const size_t off = k_.size();
    k_.resize(off + size_t(d_));
    v_.resize(off + size_t(d_));
    ko_.insert(ko_.end(), k, k + d_);
    vo_.insert(vo_.end(), v, v + d_);
    for (int c = 0; c < d_; ++c) {
        k_[off + size_t(c)] = prec_ == Precision::f32 ? k[c] : fp16_round(k[c]);
        v_[off + size_t(c)] = prec_ == Precision::f32 ? v[c] : fp16_round(v[c]);
    }
    kbytes_.push_back(full_row_bytes());
    vbytes_.push_back(full_row_bytes());
    bytes_total_ += 2 * full_row_bytes();
}

void UnitStore::evict_mask(const std::vector<uint8_t>& drop) {
    KVS_ASSERT(view_ < 0 && drop.size() == pos_.size());
    size_t w = 0;
    const size_t d = size_t(d_);
    for (size_t i = 0; i < pos_.size(); ++i) {
        if (drop[i]) {
            bytes_total_ -= kbytes_[i] + vbytes_[i];
            evicted_log_.push_back(pos_[i]);
            if (store_[i] != Store::full) --n_lossy_;
            continue;
        }
        if (w != i) {
            pos_[w] = pos_[i];
            bits_[w] = bits_[i];
            store_[w] = store_[i];
            score_[w] = score_[i];
            kbytes_[w] = kbytes_[i];
            vbytes_[w] = vbytes_[i];
            std::copy_n(k_.begin() + ptrdiff_t(i * d), d, k_.begin() + ptrdiff_t(w * d));
            std::copy_n(v_.begin() + ptrdiff_t(i * d), d, v_.begin() + ptrdiff_t(w * d));
            std::copy_n(ko_.begin() + ptrdiff_t(i * d), d, ko_.begin() + ptrdiff_t(w * d));
            std::copy_n(vo_.begin() + ptrdiff_t(i * d), d, vo_.begin() + ptrdiff_t(w * d));
        }
        ++w;
    }
    pos_.resize(w);
    bits_.resize(w);
    store_.resize(w);
    score_.resize(w);
    kbytes_.resize(w);
    vbytes_.resize(w);
    k_.resize(w * d);
    v_.resize(w * d);
    ko_.resize(w * d);
    vo_.resize(w * d);
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

// Packs one row at `bits` per token and unpacks it into `row` (bits 16: full precision).
void UnitStore::requant_row(float* row, const float* src, int bits) {
    if (bits >= 16) {
        for (int c = 0; c < d_; ++c) row[c] = prec_ == Precision::f32 ? src[c] : fp16_round(src[c]);
        return;
    }
    const size_t nb = kk::quant_packed_bytes(1, d_, bits, group_, kk::Axis::per_token);
    scratch_.resize(nb);
    const kk::Status s =
        kk::quant_pack_cpu(src, 1, d_, bits, group_, kk::Axis::per_token, scratch_.data());
    KVS_ASSERT(s == kk::Status::ok || s == kk::Status::non_finite_input);
    KVS_ASSERT(kk::quant_unpack_cpu(scratch_.data(), 1, d_, bits, group_, kk::Axis::per_token,
                                    row) == kk::Status::ok);
}

void UnitStore::set_bits(int i, int bits) {
    bits = kk::snap_bits(bits);
    const size_t ui = size_t(i), d = size_t(d_);
    const bool to_full = bits >= 16;
    if (to_full && store_[ui] == Store::full) return;
    if (!to_full && bits == bits_[ui] && store_[ui] == Store::per_token) return;
    float* kr = k_.data() + ui * d;
    float* vr = v_.data() + ui * d;
    const bool lossy = store_[ui] != Store::full;
    const bool raise = to_full || bits > bits_[ui] || store_[ui] == Store::sparse;
    if (raise && lossy) {
        // Restore from the offloaded full-precision copy.
        if (!offload_)
            fail("internal error: a policy raised an entry's width without an offloaded copy");
        ++restores_;
        requant_row(kr, ko_.data() + ui * d, bits);
        requant_row(vr, vo_.data() + ui * d, bits);
    } else {
        std::copy_n(kr, d, tmp_.data());
        requant_row(kr, tmp_.data(), bits);
        std::copy_n(vr, d, tmp_.data());
        requant_row(vr, tmp_.data(), bits);
    }
    store_[ui] = to_full ? Store::full : Store::per_token;
    set_width(ui, to_full ? full_bits() : bits);
    n_lossy_ += int(store_[ui] != Store::full) - int(lossy);
    const int64_t rb =
        to_full ? full_row_bytes()
                : int64_t(kk::quant_packed_bytes(1, d_, bits, group_, kk::Axis::per_token));
    set_token_bytes(i, rb, rb);
}

void UnitStore::set_block_format(int i, Store fmt) {
    KVS_ASSERT(fmt == Store::q8_0 || fmt == Store::q4_0);
    const size_t ui = size_t(i), d = size_t(d_);
    if (store_[ui] == fmt) return;
    const kk::BlockFormat bf = fmt == Store::q8_0 ? kk::BlockFormat::q8_0 : kk::BlockFormat::q4_0;
    const size_t nb = kk::block_packed_bytes(bf, 1, d_);
    scratch_.resize(nb);
    for (float* row : {k_.data() + ui * d, v_.data() + ui * d}) {
        std::copy_n(row, d, tmp_.data());
        const kk::Status s = kk::block_pack_cpu(bf, tmp_.data(), 1, d_, scratch_.data());
        KVS_ASSERT(s == kk::Status::ok || s == kk::Status::non_finite_input);
        KVS_ASSERT(kk::block_unpack_cpu(bf, scratch_.data(), 1, d_, row) == kk::Status::ok);
    }
    if (store_[ui] == Store::full) ++n_lossy_;
    store_[ui] = fmt;
    set_width(ui, fmt == Store::q8_0 ? 8 : 4);
    set_token_bytes(i, int64_t(nb), int64_t(nb));
}

void UnitStore::prune(int i, double p, int bits) {
    bits = kk::snap_bits(bits);
    const size_t ui = size_t(i), d = size_t(d_);
    p = std::clamp(p, 0.0, 1.0);
    const int n_zero = int(std::floor(p * d_));
    if (n_zero == 0) {
        set_bits(i, bits);
        return;
    }
    int64_t row_bytes[2] = {0, 0};
    float* rows[2] = {k_.data() + ui * d, v_.data() + ui * d};
    std::vector<int> order(d);
    std::vector<float> kept;
    for (int r = 0; r < 2; ++r) {
        float* row = rows[r];
        std::iota(order.begin(), order.end(), 0);
        // Smallest magnitude first; ties by channel index so the result is deterministic.
        std::stable_sort(order.begin(), order.end(),
                         [&](int a, int b) { return std::fabs(row[a]) < std::fabs(row[b]); });
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
                const size_t nb = kk::quant_packed_bytes(1, nnz, bits, group_, kk::Axis::per_token);
                scratch_.resize(nb);
                kk::quant_pack_cpu(kept.data(), 1, nnz, bits, group_, kk::Axis::per_token,
                                   scratch_.data());
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
            int j = 0;
            for (size_t c = 0; c < d; ++c) row[c] = keep[c] ? deq[size_t(j++)] : 0.0f;
            row_bytes[r] = sparse;
        } else {
            // Dense storage of the pruned row (zeros included) is smaller.
            for (size_t c = 0; c < d; ++c) tmp_[c] = keep[c] ? row[c] : 0.0f;
            requant_row(row, tmp_.data(), bits);
            row_bytes[r] = dense;
        }
    }
    if (store_[ui] == Store::full) ++n_lossy_;
    store_[ui] = Store::sparse;
    set_width(ui, bits);
    set_token_bytes(i, row_bytes[0], row_bytes[1]);
}

void UnitStore::quantize_kivi_block(int i0, int n, int bits) {
    bits = kk::snap_bits(bits);
    KVS_ASSERT(i0 >= 0 && n > 0 && i0 + n <= size());
    if (bits == 16) return;
    const size_t d = size_t(d_);
    std::vector<float> blk(size_t(n) * d);
    std::copy_n(k_.begin() + ptrdiff_t(size_t(i0) * d), size_t(n) * d, blk.begin());
    const size_t nb = kk::quant_packed_bytes(n, d_, bits, n, kk::Axis::per_channel);
    scratch_.resize(nb);
    kk::quant_pack_cpu(blk.data(), n, d_, bits, n, kk::Axis::per_channel, scratch_.data());
    kk::quant_unpack_cpu(scratch_.data(), n, d_, bits, n, kk::Axis::per_channel,
                         k_.data() + size_t(i0) * d);
    const int64_t vb = int64_t(kk::quant_packed_bytes(1, d_, bits, group_, kk::Axis::per_token));
    for (int j = 0; j < n; ++j) {
        const size_t ui = size_t(i0 + j);
        KVS_ASSERT(store_[ui] == Store::full);
        float* vr = v_.data() + ui * d;
        std::copy_n(vr, d, tmp_.data());
        requant_row(vr, tmp_.data(), bits);
        store_[ui] = Store::kivi_block;
        set_width(ui, bits);
        ++n_lossy_;
        // The block's key bytes, spread over its tokens; the remainder goes to the first.
        const int64_t kb = int64_t(nb) / n + (j == 0 ? int64_t(nb) % n : 0);
        set_token_bytes(int(ui), kb, vb);
    }
}

}  // namespace kvs::sim
