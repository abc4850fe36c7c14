"""UNComp (Xiong et al. 2024), prefill mode, from menik1126/UNComp. Truncated matrix entropy
(uncomp/utils/entropy_utils.py: normalize, cal_cov_4, cal_entropy_no_group_svd): rows minus
their mean, divided by their norm, A = Z^T Z / N, singular values of A / trace(A) + 1e-10 I,
-sum over the largest svdn of s log s, over log d. The official head search takes the query
states; a KV head's entropy here is the mean of its query heads' (kvscope's GQA rule; source=k:
its keys'). Per layer the floor(n_kv / 2) lowest-entropy heads (ties: lower head) keep
C' // 2 entries, the others C' = C * 3 // 2 (uncomp_utils.py:272-343; [P // 2, P] when
P <= C'), window included; alloc=equal: scored counts 1 : 2 with the layer's mean C - window.
Selection as SnapKV (window 8, kernel 7, max pooling: run_longbench.py:244-249)."""
import math

import numpy as np

from common import budget_tokens
from snapkv import SnapKV


def entropy(x, svdn):
    r = x - x.mean(axis=0, keepdims=True)
    r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    z = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    a = z.T @ z / z.shape[0]
    s = np.linalg.svd(a / np.trace(a) + 1e-10 * np.eye(a.shape[0]), compute_uv=False)
    s = s[:svdn]
    return -np.nansum(s * np.log(s)) / math.log(a.shape[0])


class UNComp(SnapKV):
    def __init__(self, budget, tr, window=8, kernel=7, kind="max", svdn=32, source="q",
                 alloc="official"):
        super().__init__(budget, tr.n_kv, window=window, kernel=kernel, kind=kind)
        self.tr, self.svdn, self.source, self.alloc = tr, svdn, source, alloc

    def capacity(self, P):
        tr, G, w = self.tr, self.tr.n_kv, self.window
        if self.source == "q":
            e = [np.mean([entropy(tr.q[h, :P], self.svdn) for h in tr.groups[g]])
                 for g in range(G)]
        else:
            e = [entropy(tr.k[g, :P], self.svdn) for g in range(G)]
        low = set(sorted(range(G), key=lambda g: (e[g], g))[: G // 2])
        C = budget_tokens(self.budget, P)
        if self.alloc == "equal":
            lo = (C - w) * G // ((G - len(low)) * 2 + len(low))
            hi = 2 * lo
        else:
            c_hi = C * 3 // 2
            c_lo = c_hi // 2
            if P <= c_hi:
                c_lo, c_hi = P // 2, P
            lo, hi = max(0, c_lo - w), max(0, c_hi - w)
        return [lo if g in low else hi for g in range(G)]
