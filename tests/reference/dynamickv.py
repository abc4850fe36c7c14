"""DynamicKV (Zhou et al. 2024, seed 004), prefill mode: per-layer counts of scored tokens from a
plan at P, then SnapKV's selection inside each layer (snapkv.py), every layer keeping its window.

alloc="official" is written from DynamicKV's official code (DreamMr/DynamicKV,
kv_compression/token_drop/methods/dynamic_v11.py; the caller is
llama_model_impl/dynamickv_v11.py:104-131):
- each layer's scores: the last ws queries' attention summed over the queries, pooled
  (dynamic_v11.py:49-60); kvscope scores per KV head (mean over its query heads, as snapkv.py),
  the official code per query head (repeat_kv);
- budget_size = min(radio_max * base, q_len - ws), base = max_capacity_prompt - ws
  (dynamic_v11.py:26, 48): each layer first keeps its top budget_size tokens per head (:61);
- at every layer with layer_idx % 4 == 3 (dynamickv_v11.py:122; kvscope: every m layers and at
  the last), with n layers so far: one top-k of tk = base * heads * n over the scores of all n
  layers (:86-90), counts = (each layer's part) // n (:96-98), normalised to sum 1 (:104),
  fix = int(budget_size * norm) (:106), rescaled to sum base * L: ss = sum(fix) / (base * L),
  fix = int(fix // ss) (:107-109), the remainder added to the last layer so far (:110-112);
  each layer cut to min(its length, fix, q_len - ws) (:125-129; a fix above the layer's length
  would make the official slice reach into the window, kvscope keeps the length).
Ties in the top-k: the higher score first, then the lower layer (torch.topk leaves them open).
The scores are rounded to float32 before ranking, as kvscope keeps them.

alloc="capped" is kvscope's earlier rule: each layer's candidates capped at r_max * base * n_kv,
every m layers one top-k of base * n_kv * n over the candidates so far trims them; a layer keeps
floor(count * (C - ws) / (base * n_kv)) per KV head."""
import numpy as np

from common import Trace, budget_tokens, plan_setup, window_sums
from snapkv import SnapKV, pool


def layer_scores(trs, P, w, kernel, kind):
    return [np.concatenate([pool(window_sums(tr, g, P, w)[: P - w], kernel, kind)
                            for g in range(tr.n_kv)]).astype(np.float32) for tr in trs]


def topk_counts(scores, n, k):
    allc = sorted((-float(v), j) for j in range(n) for v in scores[j])
    cnt = [0] * n
    for _, j in allc[:k]:
        cnt[j] += 1
    return cnt


def plan_official(scores, base, n_pos, n_kv, m, r_max):
    L = len(scores)
    budget_size = min(int(np.floor(r_max * base)), n_pos)
    need = base * L
    length = [budget_size] * L
    for s in range(L):
        if (s + 1) % m != 0 and s + 1 != L:
            continue
        n = s + 1
        counts = [c // n for c in topk_counts(scores, n, base * n_kv * n)]
        total = sum(counts)
        if total == 0:
            continue
        fix = [int(budget_size * (c / total)) for c in counts]
        if sum(fix) > 0:
            ss = sum(fix) / need
            fix = [int(np.floor(f / ss)) for f in fix]
        fix[s] += need - sum(fix)
        for j in range(n):
            length[j] = max(0, min(length[j], fix[j], n_pos))
    return length, base


def plan_capped(scores, base, n_kv, m, r_max):
    bs = base * n_kv
    cap = int(np.floor(r_max * bs))
    cand = []
    for s, sc in enumerate(scores):
        cand.append(sorted(sc.tolist(), reverse=True)[:cap])
        if (s + 1) % m == 0 or s + 1 == len(scores):
            cnt = topk_counts(cand, s + 1, bs * (s + 1))
            for j in range(s + 1):
                cand[j] = cand[j][: min(len(cand[j]), cnt[j])]
    return [len(c) for c in cand], bs


def plan(path, budget, ws=16, kernel=7, kind="avg", m=4, r_max=5.0, alloc="official"):
    """{layer: (num, den)}: the layer keeps floor(num * (C - ws) / den) scored tokens per head."""
    layers, P, C, w = plan_setup(path, budget, ws)
    trs = [Trace(path, l) for l in layers]
    base = max(0, C - w)
    scores = layer_scores(trs, P, w, kernel, kind)
    if alloc == "official":
        num, den = plan_official(scores, base, P - w, trs[0].n_kv, m, r_max)
    else:
        num, den = plan_capped(scores, base, trs[0].n_kv, m, r_max)
    return {layers[s]: (num[s], den) for s in range(len(trs))}


class DynamicKV(SnapKV):
    def __init__(self, budget, tr, ws=16, kernel=7, m=4, r_max=5.0, alloc="official"):
        super().__init__(budget, tr.n_kv, window=ws, kernel=kernel)
        self.num, self.den = plan(tr.path, budget, ws=ws, kernel=kernel, m=m, r_max=r_max,
                                  alloc=alloc)[tr.layer]

    def capacity(self, P):
        scored = budget_tokens(self.budget, P) - self.window
        k = self.num * scored // self.den if self.den > 0 else scored
        return [k] * len(self.rows)
