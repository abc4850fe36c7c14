// kmeans: pruning + online k-means summarisation (seed 003, "Adaptive Attention-Guided KV Cache
// Compression for Long-Context Sub-Quadratic Inference"). Every `pruning_interval` tokens (P) the
// tokens are scored by the attention of the last `lookback_window` queries (Delta), the cache is
// pruned to `max_cache_size` tokens (B), and what is pruned is summarised into `num_clusters`
// centroids (K) by online k-means with learning rate `kmeans_learning_rate` (eta). A centroid is
// a merged entry of the unit store (unit_store.h): its key and value are the cluster's, its count
// the tokens folded into it, and attention adds log(count) to its logit. The seed's repository
// is not public beyond its README (the parameters and their defaults above come from it); where
// it is open, kvscope chooses, and says so in `kvscope policies`:
//
// - Which tokens are clustered: the pruned ones. Pruning alone would drop them; clustering them
//   keeps a summary of what the scores ranked low, while the B tokens the attention ranks
//   highest stay exact. (Clustering the kept tail instead would blur the tokens the scores say
//   matter and keep nothing of what is dropped.)
// - Scores: the attention each held token received from the last Delta queries, summed
//   (kvscope's ObservationWindow; the query heads of a KV head combined with gqa=, default mean).
//   Centroids are never pruned: they are the summary.
// - When: at the first update step (stream: t = 0; prefill: t = P_prompt, the prompt's
//   compression) and every P steps after it. The newest token (not attended yet) is kept; of
//   the other plain tokens the top B - 1 by score are kept (ties: the older one is pruned).
// - Online k-means (MacQueen, in position order of the pruned tokens, oldest first): while a
//   unit has fewer than K centroids a pruned token becomes a centroid of its own (count 1);
//   otherwise it joins the centroid nearest in key space (squared L2 over the keys as stored;
//   ties: the centroid of the lower position), whose key and value move by
//   c += eta * (x - c) and whose count grows by one. eta = 0 (the default) is 1 / count, the
//   running mean: a centroid's key and value are then exactly the mean of its tokens', and the
//   log(count) bias makes a cluster of equal keys receive exactly the attention its tokens would.
//   The centroid's rows are kept in fp32 by the policy (the running mean does not re-round) and
//   stored at full precision (fp16) in the cache.
// - A merged entry keeps the position of the token that founded it (causal masking: every
//   token folded into it is older than any later query anyway).
// - Budget: after a pruning a unit holds at most B + K entries; between prunings one token a
//   step is added: budget_tokens = B + K + (steps since the last pruning).
// Not reproduced: the seed's distillation fine-tuning (a temperature-T KL loss between the
// compressed and the full model, weight lambda), which needs training; kvscope runs the
// compression on the unchanged model.
#include <map>

#include "common.h"
#include "engine/error.h"

namespace kvs::sim {

namespace {

struct KmeansParams {
    int max_cache = 1024, clusters = 256, interval = 512, lookback = 256;
    double lr = 0;
    GqaReduce gqa = GqaReduce::mean;
};

struct Centroid {
    std::vector<float> k, v;  // [d] each, fp32
    int count = 1;
};

class KmeansLayer final : public LayerPolicy {
  public:
    KmeansLayer(const KmeansParams& p, const LayerContext& c) : p_(p), d_(c.d) {
        for (int g = 0; g < c.n_kv; ++g) win_.emplace_back(c.n_tokens, p.lookback);
        cent_.resize(size_t(c.n_kv));
    }
    int64_t budget_tokens(int64_t t, int) const override {
        if (last_ < 0) return -1;
        return int64_t(p_.max_cache) + p_.clusters + (t - last_);
    }
    int64_t first_observed_step(int64_t first_update) const override {
        return std::max<int64_t>(0, first_update - p_.lookback);
    }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        if (last_ >= 0 && t - last_ < p_.interval) return;
        last_ = t;
        for (size_t g = 0; g < units.size(); ++g) prune_and_cluster(units[g], g);
    }
    void observe(int64_t, int g, const float* probs, int n_q, UnitStore& u) override {
        const int n = u.size();
        row_.resize(size_t(n));
        reduce_gqa(probs, n_q, n, p_.gqa, row_.data());
        detail::ObservationWindow& w = win_[size_t(g)];
        w.add(u, row_.data());
        for (int i = 0; i < n; ++i) u.scores()[size_t(i)] = float(w.sum_at(u.pos(i)));
    }

  private:
    void prune_and_cluster(UnitStore& u, size_t g) {
        std::map<int32_t, Centroid>& cents = cent_[g];
        const int n = u.size();
        // Plain tokens older than the newest one: the candidates.
        std::vector<int> cand;
        for (int i = 0; i + 1 < n; ++i)
            if (!cents.count(u.pos(i))) cand.push_back(i);
        const int keep = p_.max_cache - 1;  // plus the newest token
        if (int(cand.size()) <= keep) return;
        const detail::ObservationWindow& w = win_[g];
        // Lowest score pruned first, ties: the older first (cand is in position order).
        std::stable_sort(cand.begin(), cand.end(),
                         [&](int a, int b) { return w.sum_at(u.pos(a)) < w.sum_at(u.pos(b)); });
        std::vector<int> pruned(cand.begin(), cand.begin() + ptrdiff_t(cand.size() - size_t(keep)));
        std::sort(pruned.begin(), pruned.end());  // online k-means: oldest first
        std::vector<uint8_t> drop(size_t(n), 0);
        // The centroids each pruned token joins (by representative position), in order.
        std::map<int32_t, std::vector<int32_t>> joined;
        std::vector<float> x(static_cast<size_t>(d_)), xv(static_cast<size_t>(d_));
        for (int i : pruned) {
            u.k_row(i, x.data());
            u.v_row(i, xv.data());
            if (int(cents.size()) < p_.clusters) {
                Centroid c;
                c.k = x;
                c.v = xv;
                cents.emplace(u.pos(i), std::move(c));
                continue;
            }
            if (cents.empty()) {  // num_clusters = 0: pruning only
                drop[size_t(i)] = 1;
                continue;
            }
            auto best = cents.end();
            double best_d = 0;
            for (auto it = cents.begin(); it != cents.end(); ++it) {
                double dd = 0;
                for (int c = 0; c < d_; ++c) {
                    const double e = double(x[size_t(c)]) - it->second.k[size_t(c)];
                    dd += e * e;
                }
                if (best == cents.end() || dd < best_d) best = it, best_d = dd;
            }
            Centroid& c = best->second;
            ++c.count;
            const float eta = p_.lr > 0 ? float(p_.lr) : 1.0f / float(c.count);
            for (int j = 0; j < d_; ++j) {
                c.k[size_t(j)] += eta * (x[size_t(j)] - c.k[size_t(j)]);
                c.v[size_t(j)] += eta * (xv[size_t(j)] - c.v[size_t(j)]);
            }
            joined[best->first].push_back(u.pos(i));
        }
        // Pruning only (K = 0): the pruned tokens are evicted.
        bool any_drop = false;
        for (uint8_t b : drop) any_drop |= b != 0;
        if (any_drop) u.evict_mask(drop);
        // Fold the tokens each centroid took into its entry (one merge per centroid).
        for (const auto& [rep, members] : joined) {
            const int m = u.size();
            const int ci =
                int(std::lower_bound(u.positions(), u.positions() + m, rep) - u.positions());
            KVS_ASSERT(ci < m && u.pos(ci) == rep);
            std::vector<uint8_t> fold(size_t(m), 0);
            size_t mi = 0;
            for (int j = 0; j < m && mi < members.size(); ++j)
                if (u.pos(j) == members[mi]) fold[size_t(j)] = 1, ++mi;
            KVS_ASSERT(mi == members.size());
            const Centroid& c = cents.at(rep);
            u.merge(ci, c.k.data(), c.v.data(), c.count, fold);
        }
    }

    KmeansParams p_;
    int d_;
    int64_t last_ = -1;
    std::vector<detail::ObservationWindow> win_;
    std::vector<std::map<int32_t, Centroid>> cent_;  // per KV head, by representative position
    std::vector<float> row_;
};

class Kmeans final : public Policy {
  public:
    explicit Kmeans(const Params& p) {
        p_.max_cache = p.integer("max_cache_size");
        p_.clusters = p.integer("num_clusters");
        p_.interval = p.integer("pruning_interval");
        p_.lookback = p.integer("lookback_window");
        p_.lr = p.real("kmeans_learning_rate");
        p_.gqa = p.gqa();
    }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        return std::make_unique<KmeansLayer>(p_, c);
    }

  private:
    KmeansParams p_;
};

}  // namespace

PolicyEntry policy_kmeans() {
    PolicyEntry e;
    e.info.name = "kmeans";
    e.info.summary =
        "seed 003: prune to max_cache_size by recent attention, summarise the pruned tokens "
        "into num_clusters online k-means centroids (merged entries)";
    e.info.details =
        "Paper mode: stream. At the first update step and every pruning_interval steps after it, "
        "each (layer, KV head) scores its plain tokens by the attention they received from the "
        "last lookback_window queries (summed; query heads combined with gqa=), keeps the newest "
        "token and the top max_cache_size - 1 others (ties: the older is pruned), and clusters "
        "the pruned ones (not the kept tail: the tokens attention ranks highest stay exact, what "
        "would be dropped is summarised) with online k-means in position order: while there are "
        "fewer than num_clusters centroids a pruned token founds one, else it joins the centroid "
        "nearest in key space (squared L2; ties: lower position), c += eta (x - c) for key and "
        "value, count + 1; kmeans_learning_rate=0 (default) is eta = 1/count, the exact running "
        "mean. A centroid is a merged entry: fp16 key and value plus a uint16 count (2 bytes), "
        "log(count) added to its logit, at the position of the token that founded it; centroids "
        "are never pruned. After a pruning a unit holds at most max_cache_size + num_clusters "
        "entries, then one more a step (reported budget). num_clusters=0 is pruning alone. "
        "Prefill mode: the prompt is pruned and clustered at P (its last lookback_window queries "
        "score it), then every pruning_interval steps. Not reproduced: the seed's distillation "
        "fine-tuning (KL to the full model at temperature T, weight lambda; needs training).";
    e.info.params = {
        param_int("max_cache_size", "1024", 1, 1e9,
                  "B: plain tokens kept after a pruning (the newest included)"),
        param_int("num_clusters", "256", 0, 1e9, "K: centroids the pruned tokens are folded into"),
        param_int("pruning_interval", "512", 1, 1e9, "P: steps between prunings"),
        param_int("lookback_window", "256", 1, 1e9,
                  "Delta: the last queries whose attention scores the tokens"),
        param_real("kmeans_learning_rate", "0", 0, 1,
                   "eta: centroid step c += eta (x - c); 0 = 1/count (running mean)"),
        param_gqa()};
    e.make = [](const Params& p) { return std::make_unique<Kmeans>(p); };
    return e;
}

}  // namespace kvs::sim
