"""SnapKV (Li et al. 2024), prefill mode, from FasterDecoding/SnapKV
snapkv/monkeypatch/snapkv_utils.py:45-69: the last `window` prompt queries' attention to the
tokens before the window, summed over the window (:55), pooled with F.avg_pool1d /
F.max_pool1d(kernel, padding=kernel//2, stride=1) (:56-59), top (max_capacity_prompt - window)
kept plus the window (:62-69); no eviction while decoding. GQA: query heads of a KV head
averaged (KVCache-Factory pyramidkv_utils.py:252-270, gqa_score_agg='mean'). Budget =
max_capacity_prompt; the first decoded token P is added."""
import numpy as np

from common import Policy, budget_tokens


def pool(s, kernel, kind):
    n, h = len(s), kernel // 2
    out = np.empty(n)
    for i in range(n):
        win = s[max(0, i - h): min(n, i + h + 1)]
        out[i] = win.max() if kind == "max" else win.sum() / kernel  # count_include_pad
    return out


class SnapKV(Policy):
    def __init__(self, budget, n_kv, window=32, kernel=5, kind="avg"):
        self.budget, self.window, self.kernel, self.kind = budget, window, kernel, kind
        self.rows = [[] for _ in range(n_kv)]  # the window queries' attention, per KV head

    def first_observed(self, first_update):
        return max(0, first_update - self.window)

    def observe(self, t, g, held, probs):
        self.rows[g].append((list(held), probs.mean(axis=0)))

    def candidate_scores(self, g, P):
        w = self.window
        cand = list(range(P - w))
        s = np.zeros(len(cand))
        for held, row in self.rows[g][-w:]:
            for p, x in zip(held, row):
                if p < P - w:
                    s[p] += x
        return cand, pool(s, self.kernel, self.kind)

    def capacity(self, P):
        """Scored tokens kept in each head (SnapKV: max_capacity_prompt - window)."""
        return [budget_tokens(self.budget, P) - self.window] * len(self.rows)

    def update(self, t, held):
        P = self.P = getattr(self, "P", t)
        if t != P or P <= budget_tokens(self.budget, P):
            return held  # compressed once at P (q_len < max_capacity_prompt: not at all)
        caps = self.capacity(P)
        out = []
        for g, h in enumerate(held):
            cand, sc = self.candidate_scores(g, P)
            top = sorted(cand, key=lambda p: (-sc[p], -p))[: max(0, caps[g])]
            out.append(sorted(top) + list(range(P - self.window, P + 1)))
        return out
