"""DynamicKV (Zhou et al. 2024, seed 004), prefill mode. Per-layer shares of the scored budget
from a plan at P (the paper's Algorithm 1, written again from kvscope's documented variant,
docs/policies.md): each layer's candidates (tokens before the window) are scored as in SnapKV
(window sums of the last ws queries, mean over the query heads of each KV head, pooled); going up
the replayed layers each keeps at most r_max * bs of its candidate scores (bs = (C - ws) * n_kv,
the layer's scored budget); every m layers and at the last, one top-k of bs * (layers so far) over
the candidates of all layers so far (ties: higher score, then lower layer) trims each layer to
its count. Layer s then keeps floor(count_s / bs * (C - ws)) scored tokens per KV head plus the
window (selection as snapkv.py). The official code (DreamMr/DynamicKV
kv_compression/token_drop/methods/dynamic_v11.py:86-114) normalises the counts of a global top-k
and rescales them to base x L; see docs/policies.md for the difference."""
import math


from common import Trace, budget_tokens, plan_setup, window_sums
from snapkv import SnapKV, pool


def plan(path, budget, ws=32, kernel=5, kind="avg", m=4, r_max=2.0):
    layers, P, C, w = plan_setup(path, budget, ws)
    trs = [Trace(path, l) for l in layers]
    bs = max(0, C - w) * trs[0].n_kv
    cap = math.floor(r_max * bs)
    cand = []
    for s, tr in enumerate(trs):
        scores = []
        for g in range(tr.n_kv):
            tot = window_sums(tr, g, P, w)
            scores += list(pool(tot[: P - w], kernel, kind))
        scores = sorted(scores, reverse=True)[:cap]
        cand.append(scores)
        if (s + 1) % m == 0 or s + 1 == len(trs):
            allc = sorted([(-v, j) for j in range(s + 1) for v in cand[j]])
            k = min(len(allc), bs * (s + 1))
            cnt = [0] * (s + 1)
            for _, j in allc[:k]:
                cnt[j] += 1
            for j in range(s + 1):
                cand[j] = cand[j][: min(len(cand[j]), cnt[j])]
    return {layers[s]: len(cand[s]) / bs if bs > 0 else 1.0 for s in range(len(trs))}, C, w


class DynamicKV(SnapKV):
    def __init__(self, budget, tr, ws=32, m=4, r_max=2.0):
        super().__init__(budget, tr.n_kv, window=ws)
        shares, C, w = plan(tr.path, budget, ws=ws, m=m, r_max=r_max)
        self.share = shares[tr.layer]

    def capacity(self, P):
        C = budget_tokens(self.budget, P)
        return [math.floor(self.share * (C - self.window))] * len(self.rows)
