"""agacc, seed 001 (Attention-Guided Adaptive KV Cache Compression, /work/shared/seeds/001), at
its first update (prefill mode, step P, before any lossy entry changes the attention):
  I_i <- alpha S_i + (1 - alpha) I_i (2.3; S_i: the current query's attention, mean over the
  query heads of the KV head), I^_i = I_i / P(t - i) with P(x) = (1 + x)^-pos_beta (2.3),
  r_i = I^_i / mean(I^) over the held tokens outside the newest `recent` (thresholds relative to
  the mean, kvscope's choice), block max over blocks of `block` positions (2.5);
  tiers (2.4) among the tokens outside the newest `recent`: r < tau_e evicted; r > tau_h fp16;
  tau_l < r <= tau_h: b_min + floor((r - r_min)(b_max - b_min)/(r_max - r_min)) bits (2.4.1),
  min/max over the tokens left, snapped to 2/4/8/16; r <= tau_l: b_min bits and pruning (2.4.2).
scope="global" (AGACCGlobal): S_i is the seed's cross-layer score (2.2) with N_q = 1, query t's
attention to token i averaged over every layer of the trace and every query head, computed here
from the trace's q and k in float64 (the same for every KV head)."""
import math

import h5py
import numpy as np

from common import Policy, Trace
from agd import snap_bits


class AGACC(Policy):
    def __init__(self, n_kv, alpha=0.2, pos_beta=0.5, tau_h=2.0, tau_l=0.5, tau_e=0.05,
                 b_min=2, b_max=8, block=16, recent=32):
        self.a, self.beta, self.th, self.tl, self.te = alpha, pos_beta, tau_h, tau_l, tau_e
        self.b_min, self.b_max, self.block, self.recent = b_min, b_max, block, recent
        self.I = [dict() for _ in range(n_kv)]
        self.widths = [dict() for _ in range(n_kv)]
        self.done = False

    def relative(self, t, g, h):
        n = len(h)
        r = [self.I[g].get(p, 0.0) * (1.0 + t - p) ** self.beta for p in h]
        old = r[: max(0, n - self.recent)]
        mean = sum(old) / len(old) if old else 0.0
        r = [x / mean if mean > 0 else 1.0 for x in r]
        blk = {}
        for p, x in zip(h, r):
            blk[p // self.block] = max(blk.get(p // self.block, 0.0), x)
        return [blk[p // self.block] for p in h]

    def update(self, t, held):
        if self.done:
            return held
        self.done = True
        out = []
        for g, h in enumerate(held):
            r = self.relative(t, g, h)
            n_old = len(h) - self.recent
            keep = [(p, x) for i, (p, x) in enumerate(zip(h, r)) if i >= n_old or x >= self.te]
            h2 = [p for p, _ in keep]
            old = keep[: len(h2) - self.recent]
            rmin = min([x for _, x in old], default=math.inf)
            rmax = max([x for _, x in old], default=0.0)
            w = {p: 16 for p in h2}
            for p, x in old:
                if x > self.th:
                    w[p] = 16
                elif x > self.tl:
                    f = (x - rmin) / (rmax - rmin) if rmax > rmin else 1.0
                    w[p] = snap_bits(self.b_min + math.floor(f * (self.b_max - self.b_min)))
                else:
                    w[p] = snap_bits(self.b_min)
            self.widths[g] = w
            out.append(h2)
        return out

    def observe(self, t, g, held, probs):
        m = probs.mean(axis=0)
        for p, x in zip(held, m):
            self.I[g][p] = self.a * x + (1 - self.a) * self.I[g].get(p, 0.0)


class AGACCGlobal(AGACC):
    def __init__(self, path, n_kv, **kw):
        super().__init__(n_kv, **kw)
        with h5py.File(path, "r") as f:
            layers = [int(x) for x in f.attrs["layers"]]
        trs = [Trace(path, l) for l in layers]
        T = trs[0].T
        self.G = [np.zeros(t + 1) for t in range(T)]
        n = len(trs) * trs[0].n_head
        for tr in trs:
            for t in range(T):
                for g in range(tr.n_kv):
                    self.G[t] += tr.probs(t, g, list(range(t + 1))).sum(axis=0) / n

    def observe(self, t, g, held, probs):
        for p in held:
            self.I[g][p] = self.a * self.G[t][p] + (1 - self.a) * self.I[g].get(p, 0.0)
