"""Key-norm scoring (kvpress KnormPress, kvpress/presses/knorm_press.py:29-38; Devoto et al.
2024): score = -||k|| per KV head, the keys as the cache stores them (fp16); kvpress's
ScorerPress (scorer_press.py:76-96) keeps the top scores, no window, no sinks. KeyScore is the
rule both key scorers share (kvscope's keyscore.h, docs/policies.md): prefill mode, the prompt
[0, P) cut to its top `budget` at P (token P kept), no eviction after; stream mode, while over
budget the held tokens but the newest are scored and the lowest evicted (ties: the older
first)."""
import numpy as np

from common import Policy, budget_tokens, evict_lowest


class KeyScore(Policy):
    def __init__(self, budget, tr, mode):
        self.budget, self.mode = budget, mode
        self.k = tr.k.astype(np.float16).astype(np.float64)  # as stored: fp16

    def score(self, g, scored):
        raise NotImplementedError

    def update(self, t, held):
        P = self.P = getattr(self, "P", t)
        if self.mode == "prefill" and t != P:
            return held
        keep = budget_tokens(self.budget, t + 1) if self.mode == "stream" else \
            min(P, budget_tokens(self.budget, P)) + 1
        out = []
        for g, h in enumerate(held):
            if len(h) <= keep:
                out.append(h)
                continue
            scored = h[:-1]
            s = dict(zip(scored, self.score(g, scored)))
            out.append(evict_lowest(h, s, keep, protected=(h[-1],)))
        return out


class Knorm(KeyScore):
    def score(self, g, scored):
        return -np.linalg.norm(self.k[g, scored], axis=1)
