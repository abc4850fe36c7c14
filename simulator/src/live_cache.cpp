// The live driver (live_cache.h): policies on the engine's real cache.
#include "simulator/live_cache.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <tuple>

#include "engine/error.h"
#include "engine/parallel.h"
#include "kernels/attend.h"

namespace kvs::sim {

struct LiveCache::Layer {
    std::unique_ptr<LayerPolicy> policy;
    std::vector<UnitStore> units;
    bool observes = true;
    int64_t first_observed = 0;
    std::vector<float> probs, rows;  // scratch of attend
    std::vector<float> q_saved;      // [n_head, P - save_from, d] (deferred plans)
};

LiveCache::LiveCache(const KvShape& shape, const PolicySpec& spec, const LiveOptions& opt)
    : shape_(shape), spec_(spec), opt_(opt) {
    KVS_ASSERT(spec.entry && shape.n_layer > 0 && shape.n_head_kv > 0 &&
               shape.n_head % shape.n_head_kv == 0);
    if (opt.capacity < 1) fail("live cache: capacity {} must be >= 1", opt.capacity);
    if (opt.mode == Mode::prefill && (opt.prefill_len < 1 || opt.prefill_len >= opt.capacity))
        fail("live cache: prefill mode needs a prompt length in [1, {}) (got {})", opt.capacity,
             opt.prefill_len);
    policy_ = spec.entry->make(spec.params);
    if (const std::string why = policy_->live_refusal(); !why.empty()) fail("{}", why);
    auto git = spec.params.values.find("group");
    if (git != spec.params.values.end()) group_ = std::stoi(git->second);
    first_update_ = opt.mode == Mode::prefill ? opt.prefill_len : 0;
    first_eval_ = first_update_;
    reset();
}

LiveCache::~LiveCache() = default;

PlanContext LiveCache::plan_context() const {
    PlanContext pc;
    pc.n_layer = shape_.n_layer;
    pc.n_head = shape_.n_head;
    pc.n_kv = shape_.n_head_kv;
    pc.d = shape_.head_dim;
    for (int h = 0; h < shape_.n_head; ++h)
        pc.kv_of_q.push_back(h / (shape_.n_head / shape_.n_head_kv));
    pc.n_tokens = opt_.capacity;
    pc.prefill_len = opt_.mode == Mode::prefill ? opt_.prefill_len : 0;
    pc.mode = opt_.mode;
    pc.tokens = opt_.tokens;
    pc.rope = opt_.rope;
    pc.attn_scale = 1.0f / std::sqrt(float(shape_.head_dim));
    for (int l = 0; l < shape_.n_layer; ++l) pc.layers.push_back(l);
    return pc;
}

void LiveCache::reset() {
    // A policy that plans from rows (DynamicKV's layer budgets) plans live once the prompt has
    // been through every layer: in prefill mode, at P. Until then its layers run without a plan
    // (they only observe the prompt's last queries, which are re-shown after planning).
    deferred_plan_ = policy_->plans_from_rows();
    planned_ = false;
    if (deferred_plan_ && opt_.mode != Mode::prefill)
        fail(
            "{} plans from the whole prompt (per-layer budgets, retrieval heads, query "
            "statistics): live, "
            "prefill mode only (--mode prefill)",
            spec_.entry->info.name);
    const PlanContext pc = plan_context();
    std::shared_ptr<const void> plan = deferred_plan_ ? nullptr : policy_->plan(pc);
    layers_.clear();
    save_from_ = first_update_;
    for (int il = 0; il < shape_.n_layer; ++il) {
        auto L = std::make_unique<Layer>();
        const LayerContext lc = layer_context(pc, il, plan.get());
        L->policy = policy_->make_layer(lc);
        L->observes = L->policy->observes();
        L->first_observed =
            L->observes ? L->policy->first_observed_step(first_update_) : opt_.capacity;
        save_from_ = std::min(save_from_, std::max<int64_t>(0, L->first_observed));
        for (int g = 0; g < shape_.n_head_kv; ++g) {
            L->units.emplace_back(shape_.head_dim, group_, opt_.precision);
            // The originals are the restore source of policies that offload, and the keys a
            // deferred plan reads; nothing else live reads them.
            L->units.back().set_keep_originals(L->policy->offloads() || deferred_plan_);
            L->units.back().set_offload(L->policy->offloads());
        }
        layers_.push_back(std::move(L));
    }
    if (deferred_plan_ && policy_->plan_reads_all_queries()) save_from_ = 0;
    if (deferred_plan_)
        for (auto& L : layers_)
            L->q_saved.assign(size_t(shape_.n_head) * size_t(first_update_ - save_from_) *
                                  size_t(shape_.head_dim),
                              0.0f);
    // The plan is owned by the layers' policies only through the raw pointer: keep it alive.
    plan_keepalive_ = std::move(plan);
    rec_ = LiveRecord{};
    rec_.first_step = first_eval_;
    if (opt_.record) {
        const size_t n = size_t(shape_.n_layer) * size_t(shape_.n_head_kv) * size_t(opt_.capacity);
        rec_.evicted_at.assign(n, -1);
        rec_.merged_into.assign(n, -1);
        rec_.merged_at.assign(n, -1);
    }
}

void LiveCache::make_deferred_plan() {
    const int64_t P = first_update_, n_save = P - save_from_;
    const int d = shape_.head_dim, Hkv = shape_.n_head_kv, group = shape_.n_head / Hkv;
    PlanContext pc = plan_context();
    pc.read = [&](PlanField f, int layer, int head, int64_t t0, int64_t t1) {
        KVS_ASSERT(layer >= 0 && layer < shape_.n_layer && t0 >= 0 && t0 <= t1);
        const Layer& L = *layers_[size_t(layer)];
        std::vector<float> out(size_t(t1 - t0) * size_t(d));
        if (f == PlanField::q) {
            KVS_ASSERT(head >= 0 && head < shape_.n_head && t0 >= save_from_ && t1 <= P);
            std::copy_n(L.q_saved.data() +
                            (size_t(head) * size_t(n_save) + size_t(t0 - save_from_)) * size_t(d),
                        out.size(), out.data());
        } else {
            // Nothing is evicted before P in prefill mode: entry i is position i.
            const UnitStore& u = L.units[size_t(head)];
            KVS_ASSERT(head >= 0 && head < Hkv && t1 <= u.held() && u.pos(int(t1) - 1) == t1 - 1);
            std::copy_n(u.k_orig_rows() + size_t(t0) * size_t(d), out.size(), out.data());
        }
        return out;
    };
    std::shared_ptr<const void> plan = policy_->plan(pc);
    const float scale = 1.0f / std::sqrt(float(d));
    for (int il = 0; il < shape_.n_layer; ++il) {
        Layer& L = *layers_[size_t(il)];
        L.policy = policy_->make_layer(layer_context(pc, il, plan.get()));
        L.observes = L.policy->observes();
        L.first_observed = L.observes ? L.policy->first_observed_step(P) : opt_.capacity;
        // The discarded layer's scores go with it (a fresh store starts at 0, as in replay).
        for (UnitStore& u : L.units) std::fill(u.scores().begin(), u.scores().end(), 0.0f);
        // What the layer had been shown of the prompt, again: the attention of each saved query
        // at position t over the entries at or before t, KV head by KV head (the same bits as
        // during the prompt's forward: kernels/attend.h's contract).
        for (int64_t t = std::max(L.first_observed, save_from_); L.observes && t < P; ++t) {
            for (int g = 0; g < Hkv; ++g) {
                UnitStore& u = L.units[size_t(g)];
                const int n = u.held();
                std::vector<float> q(static_cast<size_t>(group) * size_t(d));
                std::vector<float> lse(static_cast<size_t>(group));
                std::vector<int32_t> qpos(static_cast<size_t>(group), int32_t(t));
                for (int h = 0; h < group; ++h)
                    std::copy_n(L.q_saved.data() + (size_t(g * group + h) * size_t(n_save) +
                                                    size_t(t - save_from_)) *
                                                       size_t(d),
                                d, q.data() + size_t(h) * size_t(d));
                L.probs.resize(size_t(group) * size_t(n));
                KVS_ASSERT(kernels::attend_packed_cpu(q.data(), qpos.data(), group, u.packed_k(),
                                                      u.packed_v(), u.positions(), u.bias(), n, d,
                                                      scale, nullptr, lse.data(),
                                                      L.probs.data()) == kernels::Status::ok);
                show(il, t, g, L.probs.data(), size_t(n));
            }
        }
        std::vector<float>().swap(L.q_saved);
    }
    plan_keepalive_ = std::move(plan);
    planned_ = true;
}

void LiveCache::clear() {
    reset();
}

int LiveCache::max_chunk(int64_t first_pos) const {
    if (first_pos >= first_update_) return 1;
    return int(std::min<int64_t>(first_update_ - first_pos, 1 << 30));
}

void LiveCache::append(int il, int n_tok, const int32_t* pos, const float* k, const float* v) {
    KVS_ASSERT(il >= 0 && il < shape_.n_layer && n_tok >= 0);
    Layer& L = *layers_[size_t(il)];
    const int d = shape_.head_dim, Hkv = shape_.n_head_kv;
    if (n_tok > 1 && pos[n_tok - 1] >= first_update_)
        fail(
            "live cache: a chunk of {} tokens reaches position {}, where the policy acts after "
            "every token; split chunks with max_chunk()",
            n_tok, pos[n_tok - 1]);
    for (int i = 0; i < n_tok; ++i) {
        const int64_t t = pos[i];
        if (t < 0 || t >= opt_.capacity)
            fail("KV cache full: position {} is outside the context of {} tokens", t,
                 opt_.capacity);
        for (int g = 0; g < Hkv; ++g) {
            const size_t row = (size_t(g) * size_t(n_tok) + size_t(i)) * size_t(d);
            L.units[size_t(g)].append(int32_t(t), k + row, v + row);
        }
        if (t < first_update_) continue;
        if (deferred_plan_ && !planned_) make_deferred_plan();
        L.policy->update(t, L.units);
        for (int g = 0; g < Hkv; ++g) {
            UnitStore& u = L.units[size_t(g)];
            const int64_t bt = L.policy->budget_tokens(t, g);
            if (bt >= 0 && u.held() > bt)
                fail(
                    "internal error: policy '{}' holds {} tokens with a budget of {} (layer {}, "
                    "KV head {}, step {})",
                    spec_.entry->info.name, u.held(), bt, il, g, t);
            const size_t unit = size_t(il) * size_t(Hkv) + size_t(g);
            if (opt_.record) {
                for (int32_t p : u.evicted_log())
                    rec_.evicted_at[unit * size_t(opt_.capacity) + size_t(p)] = int32_t(t);
                for (const auto& [p, b] : u.bits_log())
                    rec_.bit_events.insert(rec_.bit_events.end(),
                                           {int32_t(unit), p, int32_t(t), b});
                for (const auto& [p, into] : u.merged_log()) {
                    rec_.merged_into[unit * size_t(opt_.capacity) + size_t(p)] = into;
                    rec_.merged_at[unit * size_t(opt_.capacity) + size_t(p)] = int32_t(t);
                }
            }
            u.evicted_log().clear();
            u.merged_log().clear();
            u.bits_log().clear();
        }
    }
}

void LiveCache::record_step(int il, int64_t t) const {
    const int Hkv = shape_.n_head_kv;
    const int64_t s = t - first_eval_;
    const size_t per_step = size_t(shape_.n_layer) * size_t(Hkv);
    if (s >= rec_.n_steps) {
        rec_.n_steps = s + 1;
        const size_t n = size_t(rec_.n_steps) * per_step;
        rec_.held.resize(n, 0);
        rec_.budget_tokens.resize(n, -1);
        rec_.bytes.resize(n, 0);
        rec_.offload_bytes.resize(n, 0);
    }
    const Layer& L = *layers_[size_t(il)];
    for (int g = 0; g < Hkv; ++g) {
        const UnitStore& u = L.units[size_t(g)];
        const size_t idx = size_t(s) * per_step + size_t(il) * size_t(Hkv) + size_t(g);
        rec_.held[idx] = u.held();
        rec_.budget_tokens[idx] = int32_t(L.policy->budget_tokens(t, g));
        rec_.bytes[idx] = u.bytes();
        rec_.offload_bytes[idx] = u.offload_bytes();
    }
}

void LiveCache::attend(int il, int n_tok, const int32_t* pos, const float* q, float* out,
                       float* lse) const {
    Layer& L = *layers_[size_t(il)];
    const int d = shape_.head_dim, Hkv = shape_.n_head_kv, group = shape_.n_head / Hkv;
    if (deferred_plan_ && !planned_) {
        // The prompt's queries a deferred plan reads (q: [n_head, n_tok, d]).
        const int64_t n_save = first_update_ - save_from_;
        for (int i = 0; i < n_tok; ++i) {
            if (pos[i] < save_from_ || pos[i] >= first_update_) continue;
            for (int h = 0; h < shape_.n_head; ++h)
                std::copy_n(
                    q + (size_t(h) * size_t(n_tok) + size_t(i)) * size_t(d), d,
                    L.q_saved.data() +
                        (size_t(h) * size_t(n_save) + size_t(pos[i] - save_from_)) * size_t(d));
        }
    }
    // Rows of the chunk whose probabilities the policy observes (replay's rule: evaluated steps,
    // and earlier ones from first_observed_step on).
    bool any_observed = false;
    for (int i = 0; i < n_tok && L.observes; ++i)
        any_observed |= pos[i] >= first_eval_ || pos[i] >= L.first_observed;
    if (!any_observed) {
        attend_groups(shape_, n_tok, pos, q, out, lse, [&](int g) {
            const UnitStore& u = L.units[size_t(g)];
            KvView kv;
            kv.pos = u.positions();
            kv.bias = u.bias();
            kv.n = u.held();
            kv.packed = true;
            kv.pk = u.packed_k();
            kv.pv = u.packed_v();
            return kv;
        });
    } else {
        // Every KV head's rows in one call each, with the probabilities kept for observe().
        const int rows = group * n_tok;
        size_t total = 0;
        for (int g = 0; g < Hkv; ++g) total += size_t(rows) * size_t(L.units[size_t(g)].held());
        L.probs.resize(total);
        std::vector<int32_t> qpos(static_cast<size_t>(rows));
        for (int r = 0; r < rows; ++r) qpos[size_t(r)] = pos[r % n_tok];
        std::vector<size_t> off(static_cast<size_t>(Hkv) + 1, 0);
        for (int g = 0; g < Hkv; ++g)
            off[size_t(g) + 1] = off[size_t(g)] + size_t(rows) * size_t(L.units[size_t(g)].held());
        const float scale = 1.0f / std::sqrt(float(d));
        auto attend_one = [&](int64_t gi) {
            const int g = int(gi);
            const UnitStore& u = L.units[size_t(g)];
            const size_t row0 = size_t(g) * size_t(rows);
            const kernels::Status st = kernels::attend_packed_cpu(
                q + row0 * size_t(d), qpos.data(), rows, u.packed_k(), u.packed_v(), u.positions(),
                u.bias(), u.held(), d, scale, out + row0 * size_t(d), lse + row0,
                L.probs.data() + off[size_t(g)]);
            KVS_ASSERT(st == kernels::Status::ok);
        };
        if (Hkv > 1 && rows * 64 > 256)
            parallel_for_dynamic(Hkv, attend_one);
        else
            for (int g = 0; g < Hkv; ++g) attend_one(g);
        // observe(), in replay's order: token by token, KV head by KV head, each query shown
        // only the entries at or before its position.
        for (int i = 0; i < n_tok; ++i) {
            const int64_t t = pos[i];
            if (!(t >= first_eval_ || t >= L.first_observed)) continue;
            for (int g = 0; g < Hkv; ++g) {
                const size_t n = size_t(L.units[size_t(g)].held());
                show(il, t, g, L.probs.data() + off[size_t(g)] + size_t(i) * n, size_t(n_tok) * n);
            }
        }
    }
    if (opt_.record && n_tok == 1 && pos[0] >= first_eval_) record_step(il, pos[0]);
}

void LiveCache::show(int il, int64_t t, int g, const float* probs, size_t stride) const {
    Layer& L = *layers_[size_t(il)];
    UnitStore& u = L.units[size_t(g)];
    const int group = shape_.n_head / shape_.n_head_kv, n = u.held();
    const int n_vis =
        int(std::upper_bound(u.positions(), u.positions() + n, int32_t(t)) - u.positions());
    L.rows.resize(size_t(group) * size_t(n_vis));
    for (int h = 0; h < group; ++h)
        std::copy_n(probs + size_t(h) * stride, n_vis, L.rows.data() + size_t(h) * size_t(n_vis));
    u.set_view(n_vis < n ? n_vis : -1);
    L.policy->observe(t, g, L.rows.data(), group, u);
    u.set_view(-1);
}

int LiveCache::n_held(int il, int h_kv) const {
    return layers_[size_t(il)]->units[size_t(h_kv)].held();
}

std::vector<int32_t> LiveCache::positions(int il, int h_kv) const {
    const UnitStore& u = layers_[size_t(il)]->units[size_t(h_kv)];
    return {u.positions(), u.positions() + u.held()};
}

void LiveCache::evict(int il, int h_kv, const std::vector<int32_t>& drop) {
    UnitStore& u = layers_[size_t(il)]->units[size_t(h_kv)];
    std::vector<uint8_t> mask(size_t(u.held()), 0);
    for (int i = 0; i < u.held(); ++i)
        mask[size_t(i)] = std::find(drop.begin(), drop.end(), u.pos(i)) != drop.end();
    u.evict_mask(mask);
    u.evicted_log().clear();
}

size_t LiveCache::bytes() const {
    size_t n = 0;
    for (const auto& L : layers_)
        for (const auto& u : L->units) n += size_t(u.bytes());
    return n;
}

int64_t LiveCache::offload_bytes() const {
    int64_t n = 0;
    for (const auto& L : layers_)
        for (const auto& u : L->units) n += u.offload_bytes();
    return n;
}

int64_t LiveCache::restores() const {
    int64_t n = 0;
    for (const auto& L : layers_)
        for (const auto& u : L->units) n += u.restores();
    return n;
}

RunResult live_run_result(const LiveCache& c, int64_t n_tokens) {
    const LiveRecord& rec = c.record();
    const KvShape& sh = c.shape();
    KVS_ASSERT(c.options().record && n_tokens <= c.options().capacity);
    RunResult r;
    r.policy = c.spec().entry->info.name;
    r.spec = c.spec().canonical;
    r.params_json = params_json(c.spec());
    auto bit = c.spec().params.values.find("budget");
    r.budget = bit != c.spec().params.values.end() ? bit->second : "";
    r.mode = c.options().mode;
    r.prefill_len = r.mode == Mode::prefill ? c.options().prefill_len : 0;
    r.n_tokens = n_tokens;
    r.n_head = sh.n_head;
    r.n_kv = sh.n_head_kv;
    r.d = sh.head_dim;
    for (int l = 0; l < sh.n_layer; ++l) r.layers.push_back(l);
    const size_t U = size_t(sh.n_layer) * size_t(sh.n_head_kv);
    const int64_t S =
        std::min<int64_t>(rec.n_steps, std::max<int64_t>(0, n_tokens - rec.first_step));
    for (int64_t s = 0; s < S; ++s) {
        r.steps.push_back(int32_t(rec.first_step + s));
        r.full_bytes.push_back((rec.first_step + s + 1) * 2 * int64_t(sh.head_dim) * 2);
    }
    const size_t n = size_t(S) * U;
    r.held.assign(rec.held.begin(), rec.held.begin() + ptrdiff_t(n));
    r.budget_tokens.assign(rec.budget_tokens.begin(), rec.budget_tokens.begin() + ptrdiff_t(n));
    r.bytes.assign(rec.bytes.begin(), rec.bytes.begin() + ptrdiff_t(n));
    r.offload_bytes.assign(rec.offload_bytes.begin(), rec.offload_bytes.begin() + ptrdiff_t(n));
    const float nan = std::numeric_limits<float>::quiet_NaN();
    r.recall.assign(n, nan);
    r.err.assign(n, nan);
    r.cos.assign(n, nan);
    r.evicted_at.resize(U * size_t(n_tokens));
    const UnitRoles roles = c.unit_roles();
    r.unit_role_names = roles.names;
    r.unit_role = roles.role;
    r.merged_into.resize(U * size_t(n_tokens));
    r.merged_at.resize(U * size_t(n_tokens));
    for (size_t u = 0; u < U; ++u) {
        const ptrdiff_t src = ptrdiff_t(u * size_t(c.options().capacity)),
                        dst = ptrdiff_t(u * size_t(n_tokens));
        std::copy_n(rec.evicted_at.begin() + src, n_tokens, r.evicted_at.begin() + dst);
        std::copy_n(rec.merged_into.begin() + src, n_tokens, r.merged_into.begin() + dst);
        std::copy_n(rec.merged_at.begin() + src, n_tokens, r.merged_at.begin() + dst);
    }
    for (size_t i = 0; i + 3 < rec.bit_events.size(); i += 4)
        if (rec.bit_events[i + 2] < n_tokens)
            r.bit_events.insert(r.bit_events.end(), rec.bit_events.begin() + ptrdiff_t(i),
                                rec.bit_events.begin() + ptrdiff_t(i + 4));
    // Replay's order: (step, unit, token).
    std::vector<std::array<int32_t, 4>> ev;
    for (size_t i = 0; i + 3 < r.bit_events.size(); i += 4)
        ev.push_back(
            {r.bit_events[i], r.bit_events[i + 1], r.bit_events[i + 2], r.bit_events[i + 3]});
    std::stable_sort(ev.begin(), ev.end(), [](const auto& a, const auto& b) {
        return std::tie(a[2], a[0], a[1]) < std::tie(b[2], b[0], b[1]);
    });
    r.bit_events.clear();
    for (const auto& e : ev) r.bit_events.insert(r.bit_events.end(), e.begin(), e.end());
    r.summary.restores = c.restores();
    return r;
}

}  // namespace kvs::sim
