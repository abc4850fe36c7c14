// Dense fp32 KV cache; attention is kernels/attend.h's, through attend_groups.
#include "engine/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.h"
#include "engine/parallel.h"
#include "kernels/attend.h"

namespace kvs {

DenseKvCache::DenseKvCache(const KvShape& shape, int capacity)
    : shape_(shape), capacity_(capacity), slots_(size_t(shape.n_layer) * shape.n_head_kv) {
    KVS_ASSERT(capacity > 0 && shape.n_head_kv > 0 && shape.n_head % shape.n_head_kv == 0);
    for (auto& s : slots_) {
        s.k.resize(size_t(capacity) * shape.head_dim);
        s.v.resize(size_t(capacity) * shape.head_dim);
        s.pos.resize(size_t(capacity));
    }
}

void DenseKvCache::append(int il, int n_tok, const int32_t* pos, const float* k, const float* v) {
    const int d = shape_.head_dim;
    for (int h = 0; h < shape_.n_head_kv; ++h)
        if (slot(il, h).n + n_tok > capacity_)
            fail("KV cache full: layer {} head {} holds {} of {} entries, cannot append {} more",
                 il, h, slot(il, h).n, capacity_, n_tok);
    for (int h = 0; h < shape_.n_head_kv; ++h) {
        Slot& s = slot(il, h);
        std::copy_n(k + size_t(h) * n_tok * d, size_t(n_tok) * d, s.k.data() + size_t(s.n) * d);
        std::copy_n(v + size_t(h) * n_tok * d, size_t(n_tok) * d, s.v.data() + size_t(s.n) * d);
        std::copy_n(pos, n_tok, s.pos.data() + s.n);
        s.n += n_tok;
    }
}

void DenseKvCache::attend(int il, int n_tok, const int32_t* pos, const float* q, float* out,
                          float* lse) const {
    attend_groups(shape_, n_tok, pos, q, out, lse, [&](int g) {
        const Slot& s = slot(il, g);
        KvView kv;
        kv.k = s.k.data();
        kv.v = s.v.data();
        kv.pos = s.pos.data();
        kv.n = s.n;
        return kv;
    });
}

void attend_groups(const KvShape& shape, int n_tok, const int32_t* pos, const float* q, float* out,
                   float* lse, const std::function<KvView(int)>& view) {
    const int d = shape.head_dim;
    const int group = shape.n_head / shape.n_head_kv;
    const int rows = group * n_tok;  // rows of one KV head: its query heads x the chunk's tokens
    std::vector<int32_t> qpos(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) qpos[size_t(r)] = pos[r % n_tok];
    std::vector<KvView> views(static_cast<size_t>(shape.n_head_kv));
    for (int g = 0; g < shape.n_head_kv; ++g) views[size_t(g)] = view(g);
    // Work items: (KV head, slice of its rows). A row's result does not depend on the slice it
    // is computed in (kernels/attend.h), so the split only balances the threads.
    const int per =
        std::max(1, std::min(64, rows / std::max(1, 2 * parallel_threads() / shape.n_head_kv)));
    const int slices = (rows + per - 1) / per;
    const int items = shape.n_head_kv * slices;
    parallel_for_dynamic(items, [&](int64_t item) {
        const int it = int(item);
        const int g = it / slices, r0 = (it % slices) * per, nr = std::min(per, rows - r0);
        const KvView& kv = views[size_t(g)];
        const size_t row0 = size_t(g) * size_t(rows) + size_t(r0);
        const float scale = 1.0f / std::sqrt(float(d));
        const kernels::Status st =
            kv.packed ? kernels::attend_packed_cpu(q + row0 * size_t(d), qpos.data() + r0, nr,
                                                   kv.pk, kv.pv, kv.pos, kv.bias, kv.n, d, scale,
                                                   out + row0 * size_t(d), lse + row0, nullptr)
                      : kernels::attend_cpu(q + row0 * size_t(d), qpos.data() + r0, nr, kv.k, kv.v,
                                            kv.pos, kv.bias, kv.n, d, scale, out + row0 * size_t(d),
                                            lse + row0, nullptr);
        KVS_ASSERT(st == kernels::Status::ok);
    });
}

int DenseKvCache::n_held(int il, int h_kv) const {
    return slot(il, h_kv).n;
}

std::vector<int32_t> DenseKvCache::positions(int il, int h_kv) const {
    const Slot& s = slot(il, h_kv);
    return {s.pos.begin(), s.pos.begin() + s.n};
}

void DenseKvCache::evict(int il, int h_kv, const std::vector<int32_t>& drop) {
    Slot& s = slot(il, h_kv);
    std::vector<int32_t> sorted(drop);
    std::sort(sorted.begin(), sorted.end());
    const int d = shape_.head_dim;
    int w = 0;
    for (int r = 0; r < s.n; ++r) {
        if (std::binary_search(sorted.begin(), sorted.end(), s.pos[r])) continue;
        if (w != r) {
            std::copy_n(s.k.data() + size_t(r) * d, d, s.k.data() + size_t(w) * d);
            std::copy_n(s.v.data() + size_t(r) * d, d, s.v.data() + size_t(w) * d);
            s.pos[w] = s.pos[r];
        }
        ++w;
    }
    s.n = w;
}

size_t DenseKvCache::bytes() const {
    size_t n = 0;
    for (const auto& s : slots_) n += size_t(s.n) * (2 * shape_.head_dim * sizeof(float) + 4);
    return n;
}

void DenseKvCache::clear() {
    for (auto& s : slots_) s.n = 0;
}

}  // namespace kvs
