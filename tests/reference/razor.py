"""RazorAttention (Tang et al. 2024, arXiv 2407.15891), as kvscope reads it (the paper
publishes no code; docs/policies.md lists the choices). Prefill mode, plan at P:
- every query head of every layer of the trace: echo = mean, over the queries t < P whose token
  occurred before, of the attention mass on the earlier occurrences (ids[j] == ids[t], j < t);
  induction = the same on the tokens after them (ids[j - 1] == ids[t], j < t) (the paper's echo
  and induction heads, section 3.2, probed here with the run's own tokens);
- a KV head's score is the max of its query heads'; the top ceil(induction * U) of the U
  (layer, KV head) units by induction score and the top ceil(echo * U) by echo score keep every
  token (ties: the lower unit index, layers in trace order);
- every other unit, at each update while over budget: the oldest tokens past the `sinks` first
  ones are folded into one compensation token (founded by the first of them, which stays held;
  Algorithm 1 and eq. 4), so that the unit holds `budget` entries (the sinks, the compensation
  token, the newest ones); with compensate=0 they are dropped and the newest take its place.
Attention in float64 from the trace's q and k (common.py)."""
import math

import h5py

from common import Policy, Trace, budget_tokens

_plans = {}


def plan(path, P, induction, echo):
    key = (path, P, induction, echo)
    if key in _plans:
        return _plans[key]
    with h5py.File(path, "r") as f:
        layers = [int(x) for x in f.attrs["layers"]]
        ids = [int(x) for x in f["tokens/ids"][...]]
    e_s, i_s = [], []
    for layer in layers:
        tr = Trace(path, layer)
        e_u, i_u = [0.0] * tr.n_kv, [0.0] * tr.n_kv
        for g in range(tr.n_kv):
            for qi in range(len(tr.groups[g])):
                echo_sum = ind_sum = 0.0
                n_e = n_i = 0
                for t in range(P):
                    p = tr.probs(t, g, list(range(t + 1)))[qi]
                    ej = [j for j in range(t) if ids[j] == ids[t]]
                    ij = [j for j in range(1, t) if ids[j - 1] == ids[t]]
                    if ej:
                        echo_sum += p[ej].sum()
                        n_e += 1
                    if ij:
                        ind_sum += p[ij].sum()
                        n_i += 1
                e_u[g] = max(e_u[g], echo_sum / n_e if n_e else 0.0)
                i_u[g] = max(i_u[g], ind_sum / n_i if n_i else 0.0)
        e_s += e_u
        i_s += i_u
    U = len(e_s)
    keep = set()
    for score, frac in ((i_s, induction), (e_s, echo)):
        k = min(U, math.ceil(frac * U - 1e-9))
        order = sorted(range(U), key=lambda u: (-score[u], u))
        keep |= set(order[:k])
    _plans[key] = (layers, keep)
    return _plans[key]


class Razor(Policy):
    def __init__(self, budget, tr, P, sinks=4, induction=0.14, echo=0.01, compensate=True):
        self.budget, self.sinks, self.compensate = budget, sinks, compensate
        layers, keep = plan(tr.path, P, induction, echo)
        slot = layers.index(tr.layer)
        self.retrieval = [slot * tr.n_kv + g in keep for g in range(tr.n_kv)]
        self.comp = [None] * tr.n_kv

    def first_observed(self, first_update):
        return 1 << 60  # the plan reads the trace itself

    def update(self, t, held):
        cap = budget_tokens(self.budget, t + 1)
        out = []
        for g, h in enumerate(held):
            if self.retrieval[g] or len(h) <= cap:
                out.append(h)
                continue
            excess = len(h) - cap + (1 if self.compensate and self.comp[g] is None else 0)
            gone = []
            for p in h:
                if excess == 0:
                    break
                if p < self.sinks or p == self.comp[g]:
                    continue
                gone.append(p)
                excess -= 1
            if self.compensate and self.comp[g] is None:
                self.comp[g] = gone.pop(0)  # founds the compensation token, stays held
            out.append([p for p in h if p not in set(gone)])
        return out
