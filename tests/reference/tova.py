"""TOVA (Oren et al. 2024), from schwartz-lab-NLP/TOVA src/tova_cache.py:31-51: the last
query's attention averaged over all heads of the layer (:44), top cache_size kept (:45), the same
indices in every KV head (:47-51), after the new query attended. Budget B = cache_size + 1 (the
new token, not attended yet, is kept)."""

from common import Policy, budget_tokens


class TOVA(Policy):
    def __init__(self, budget, n_head):
        self.budget, self.n_head = budget, n_head
        self.score = {}

    def update(self, t, held):
        B = budget_tokens(self.budget, t + 1)
        h = held[0]
        assert all(x == h for x in held), "TOVA holds the same tokens in every KV head"
        if len(h) <= B:
            return held
        old = h[:-1]
        keep = sorted(sorted(old, key=lambda p: (-self.score.get(p, 0.0), -p))[: B - 1])
        out = keep + [h[-1]]
        return [list(out) for _ in held]

    def observe(self, t, g, held, probs):
        if g == 0:
            self.score = {}
        s = probs.sum(axis=0) / self.n_head
        for p, x in zip(held, s):
            self.score[p] = self.score.get(p, 0.0) + x
