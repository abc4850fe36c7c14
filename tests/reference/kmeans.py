"""kmeans, seed 003 (Adaptive Attention-Guided KV Cache Compression, /work/shared/seeds/003: a
README without code; its parameters max_cache_size B, num_clusters K, pruning_interval P,
lookback_window Delta, kmeans_learning_rate eta) with the choices docs/policies.md states:

- at the first update step and every P steps after it, each KV head scores its plain tokens
  (not centroids, not the newest) by the attention of the last Delta queries (summed over the
  queries, mean over the query heads), keeps the top B - 1 (ties: the older is pruned) and the
  newest;
- the pruned tokens, oldest first, go through online k-means (MacQueen): while there are fewer
  than K centroids a token founds one (count 1, at its own position), else it joins the
  centroid whose key is nearest (squared L2; ties: the lower position): count + 1,
  c += eta (x - c) with eta = 1/count when eta = 0; K = 0 drops them;
- a centroid is a merged entry: the cache stores its key in fp16 and attention adds log(count)
  to its logit. So this reference has its own loop (run_merging): the attention that scores the
  tokens is computed over the held entries' keys (the tokens' own or the centroids'), with that
  bias.
Checked against kvscope: the held entries at every step and, at the end, the centroid each
folded token went into (merged_into)."""
import collections

import numpy as np

from common import Policy


class KMeans(Policy):
    def __init__(self, tr, B, K, P, delta, eta=0.0):
        self.tr, self.B, self.K, self.P, self.delta, self.eta = tr, B, K, P, delta, eta
        self.win = [collections.deque() for _ in range(tr.n_kv)]  # (positions, probs) rows
        self.cent = [dict() for _ in range(tr.n_kv)]  # position -> [key float64, count]
        self.merged_into = [dict() for _ in range(tr.n_kv)]  # token -> centroid position
        self.last = None

    def first_observed(self, first_update):
        return max(0, first_update - self.delta)

    def score(self, g):
        s = collections.defaultdict(float)
        for pos, p in self.win[g]:
            for j, x in zip(pos, p):
                s[j] += x
        return s

    def update(self, t, held):
        if self.last is not None and t - self.last < self.P:
            return held
        self.last = t
        out = []
        for g, h in enumerate(held):
            cent = self.cent[g]
            cand = [p for p in h[:-1] if p not in cent]
            if len(cand) <= self.B - 1:
                out.append(h)
                continue
            s = self.score(g)
            pruned = sorted(sorted(cand, key=lambda p: (s[p], p))[: len(cand) - (self.B - 1)])
            gone = set()
            for p in pruned:
                x = self.tr.k[g, p]
                if len(cent) < self.K:
                    cent[p] = [x.copy(), 1]
                    continue
                gone.add(p)
                if not cent:
                    continue
                best = min(cent, key=lambda r: (float(((x - cent[r][0]) ** 2).sum()), r))
                c = cent[best]
                c[1] += 1
                c[0] = c[0] + (self.eta if self.eta > 0 else 1.0 / c[1]) * (x - c[0])
                self.merged_into[g][p] = best
            out.append([p for p in h if p not in gone])
        return out

    def keys_bias(self, g, held):
        cent = self.cent[g]
        k = np.stack([cent[p][0].astype(np.float16).astype(np.float64) if p in cent
                      else self.tr.k[g, p] for p in held])
        b = np.array([np.log(cent[p][1]) if p in cent else 0.0 for p in held])
        return k, b

    def observe(self, t, g, held, probs):
        self.win[g].append((list(held), probs.mean(axis=0)))
        if len(self.win[g]) > self.delta:
            self.win[g].popleft()


def run_merging(policy, tr, first_update, steps):
    """common.run for a policy with merged entries: attention over the entries' keys + bias."""
    held = [[] for _ in range(tr.n_kv)]
    out = {}
    for t in range(tr.T):
        for g in range(tr.n_kv):
            held[g].append(t)
        if t >= first_update:
            held = policy.update(t, held)
        if t in steps:
            out[t] = [list(h) for h in held]
        if t >= policy.first_observed(first_update):
            for g in range(tr.n_kv):
                k, b = policy.keys_bias(g, held[g])
                s = tr.scale * tr.q[tr.groups[g], t] @ k.T + b
                s -= s.max(axis=1, keepdims=True)
                e = np.exp(s)
                policy.observe(t, g, held[g], e / e.sum(axis=1, keepdims=True))
    return out, {}
