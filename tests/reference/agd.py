"""agd, seed 000 (Attention-Guided Dynamic KV Cache Compression, /work/shared/seeds/000):
A_i <- gamma A_i + (1 - gamma) (1/N) sum_j a_ij (section 2.1: N = the query heads of the KV
head); after every k decoding steps (2.3): evict the lowest A down to the budget (2.2, pruning),
then b_i = round(b_min + (b_max - b_min) (A_i - A_min) / (A_max - A_min)) with min/max over the
cache (2.2, quantization), snapped to the packed widths {2, 4, 8, 16} (3 -> 4, 5 -> 4, 6..11 ->
8, 12+ -> 16), bits only going down. The update follows the query of the step before, so the
newest token (not attended yet) is kept at 16 bits and out of the min/max; the budget counts it.
With quantized keys the later attention depends on the dequantized values: the comparison
checks the first update (prefill mode, P) for widths, and held sets over a whole stream run with
b_min = b_max = 16."""
import math

from common import Policy, budget_tokens


def snap_bits(b):
    return 2 if b <= 2 else 4 if b <= 5 else 8 if b <= 11 else 16


class AGD(Policy):
    def __init__(self, budget, n_kv, gamma=0.9, k=16, b_min=2, b_max=16):
        self.budget, self.gamma, self.k, self.b_min, self.b_max = budget, gamma, k, b_min, b_max
        self.A = [dict() for _ in range(n_kv)]
        self.widths = [dict() for _ in range(n_kv)]
        self.last = None

    def update(self, t, held):
        if self.last is not None and t - self.last < self.k:
            return held
        self.last = t
        out = []
        for g, h in enumerate(held):
            A = self.A[g]
            if self.budget is not None:
                keep = budget_tokens(self.budget, t + 1)
                if len(h) > keep:
                    old = sorted(sorted(h[:-1], key=lambda p: (-A.get(p, 0.0), -p))[: keep - 1])
                    h = old + [h[-1]]
            old = h[:-1]
            if old:
                lo, hi = min(A.get(p, 0.0) for p in old), max(A.get(p, 0.0) for p in old)
                for p in old:
                    f = (A.get(p, 0.0) - lo) / (hi - lo) if hi > lo else 1.0
                    b = snap_bits(math.floor(self.b_min + (self.b_max - self.b_min) * f + 0.5))
                    self.widths[g][p] = min(self.widths[g].get(p, 16), b)
            self.widths[g] = {p: self.widths[g].get(p, 16) for p in h}
            out.append(h)
        return out

    def observe(self, t, g, held, probs):
        m = probs.mean(axis=0)
        A = self.A[g]
        for p, x in zip(held, m):
            A[p] = self.gamma * A.get(p, 0.0) + (1 - self.gamma) * x
