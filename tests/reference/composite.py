"""Composite tokens (seed 002), prefill mode, written again from the rule in docs/policies.md (the
seed is an abstract: kvscope's reading). Plan at P over every replayed layer: each KV head's
candidates (tokens before the window) are scored as in SnapKV (window sums of the last `window`
queries' attention, mean over the group's query heads, pooled); composite token i of a layer is
the i-th best candidate of every head, scored by the mean (or max) over the heads of their i-th
scores (norm='layer': divided by the layer's sum). Every layer first gets
lo = floor(min_ratio * base) composite tokens (base = C - window), then one top-k over the
composite tokens of rank lo .. floor(max_ratio * base) - 1 of all layers (ties: higher score,
lower layer, better rank) shares out layers * base - sum(lo): n_l. Layer l keeps each head's top
n_l candidates plus the window (selection as snapkv.py)."""
import math

import numpy as np

from common import Trace, plan_setup, window_sums
from snapkv import SnapKV, pool


def plan(path, budget, window=32, kernel=5, kind="avg", agg="mean", norm="none", min_ratio=0.2,
         max_ratio=2.0):
    layers, P, C, w = plan_setup(path, budget, window)
    base = max(0, C - w)
    comp = []
    for layer in layers:
        tr = Trace(path, layer)
        heads = []
        for g in range(tr.n_kv):
            tot = window_sums(tr, g, P, w)
            heads.append(np.sort(pool(tot[: P - w], kernel, kind))[::-1])
        c = np.max(heads, axis=0) if agg == "max" else np.mean(heads, axis=0)
        if norm == "layer" and c.sum() > 0:
            c = c / c.sum()
        comp.append(c)
    lo, hi = math.floor(min_ratio * base), math.floor(max_ratio * base + 1e-9)
    n = [min(len(c), lo) for c in comp]
    rest = [(-c[i], s, i) for s, c in enumerate(comp) for i in range(n[s], min(len(c), hi))]
    k = max(0, min(base * len(layers) - sum(n), len(rest)))
    for _, s, _ in sorted(rest)[:k]:
        n[s] += 1
    return dict(zip(layers, n))


class Composite(SnapKV):
    def __init__(self, budget, tr, **kw):
        w = kw.get("window", 32)
        super().__init__(budget, tr.n_kv, window=w, kernel=kw.get("kernel", 5),
                         kind=kw.get("kind", "avg"))
        self.n = plan(tr.path, budget, **kw)[tr.layer]

    def capacity(self, P):
        return [self.n] * len(self.rows)
