"""Ada-KV (Feng et al. 2024), prefill mode, from FFY0/AdaKV
adaptive_snapkv/monkeypatch/snapkv_utils.py (GQA path): base = B - w (:303), floor =
int(base * alpha) (:305); one top-k of n_kv * base over the pooled scores of all heads (:453);
c_h = head h's share; capacity_h = round(c_h (1 - alpha) + floor) (:460, torch.round = half to
even); no compression when a head has fewer than base candidates (:439). Defaults window 32,
kernel 7, max pooling, alpha 0.2. Ties in the layer's top-k: higher score, lower head, newer."""
import numpy as np

from common import budget_tokens
from snapkv import SnapKV


class AdaKV(SnapKV):
    def __init__(self, budget, n_kv, alpha=0.2, window=32, kernel=7, kind="max"):
        super().__init__(budget, n_kv, window=window, kernel=kernel, kind=kind)
        self.alpha = alpha

    def capacity(self, P):
        base = budget_tokens(self.budget, P) - self.window
        G = len(self.rows)
        scores = [self.candidate_scores(g, P) for g in range(G)]
        if any(len(c) < base for c, _ in scores):
            return [base] * G
        flat = [(-sc[p], g, -p) for g, (cand, sc) in enumerate(scores) for p in cand]
        flat.sort()
        cnt = np.zeros(G)
        for _, g, _ in flat[: G * base]:
            cnt[g] += 1
        fl = int(base * self.alpha)
        return [int(np.round(c * (1 - self.alpha) + fl)) for c in cnt]
