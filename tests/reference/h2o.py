"""H2O (Zhang et al. 2023), from FMInference/H2O h2o_hf/utils_real_drop/modify_llama.py:
scores accumulate the attention every query gave a token (_update_hh_score, :317-326); over
cache_size = hh_size + recent_size the cache keeps the top hh_size scores among the tokens older
than the newest recent_size, plus those (:269-285); eviction follows the new query's attention.
Equal halves: heavy_ratio = recent_ratio (h2o_hf/run_text_generation.py:106-107). The budget B
counts the newest token (kvscope's convention): cache_size = B - 1, recent = (B - 1) // 2.
GQA: the query heads of a KV head are averaged (KVCache-Factory gqa_score_agg='mean')."""

from common import Policy, budget_tokens


class H2O(Policy):
    def __init__(self, budget, n_kv, recent=None):
        self.budget, self.recent = budget, recent
        self.score = [dict() for _ in range(n_kv)]

    def update(self, t, held):
        B = budget_tokens(self.budget, t + 1)
        cache = B - 1
        r = cache // 2 if self.recent is None else min(self.recent, cache)
        hh = cache - r
        out = []
        for g, h in enumerate(held):
            if len(h) <= B:
                out.append(h)
                continue
            new = h[-1]  # not attended yet: kept (H2O evicts after the new query attended)
            old = h[:-1]
            recent = old[len(old) - r:] if r > 0 else []
            cand = old[: len(old) - r]
            # top hh by score; ties: the newer kept
            ranked = sorted(cand, key=lambda p: (-self.score[g].get(p, 0.0), -p))[:hh]
            out.append(sorted(ranked) + recent + [new])
        return out

    def observe(self, t, g, held, probs):
        m = probs.mean(axis=0)
        for p, x in zip(held, m):
            self.score[g][p] = self.score[g].get(p, 0.0) + x
