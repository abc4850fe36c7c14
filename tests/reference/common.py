"""Shared pieces of the independent reference implementations (tests/reference/*.py).

Nothing here imports kvscope: the trace is read with h5py, attention is computed in float64
with numpy from the trace's q and k, and each policy is written again from its paper and its
official code (the file and line of that code are cited next to each rule).

The driver loop is the contract every kvscope policy runs under (simulator/README.md):

    for t in 0 .. T-1:
        token t joins every KV head's cache
        if t >= first_update (0 in stream mode, P in prefill mode): policy.update(t, held)
        each query head h of KV head g attends over held[g] (softmax of scale * q.k over the
        held keys only)
        policy.observe(t, g, probs[n_q, n]) with those probabilities

held[g] is the list of positions KV head g holds, ascending. The reference's held sets (and
widths, for the policies that set them) after each update are what the comparison checks.

Tie rule (the same in kvscope): among equal scores the older token is evicted first; a "top-k"
keeps the higher score, and among equal scores the newer token.
"""
import h5py
import numpy as np


class Trace:
    def __init__(self, path, layer):
        with h5py.File(path, "r") as f:
            g = f["layers/%02d" % layer]
            self.q = g["q"][...].astype(np.float64)  # [n_head, T, d]
            self.k = g["k"][...].astype(np.float64)  # [n_kv, T, d]
            self.kv_of_q = f["kv_head_of_q_head"][...]
            self.scale = float(f.attrs["attn_scale"])
            self.n_layer = int(f.attrs["n_layer"])
        self.layer, self.path = layer, path
        self.n_head, self.T, self.d = self.q.shape
        self.n_kv = self.k.shape[0]
        self.groups = [np.nonzero(self.kv_of_q == g)[0] for g in range(self.n_kv)]

    def probs(self, t, g, held):
        """Attention of KV head g's query heads at step t over the held positions [n_q, n]."""
        qs = self.q[self.groups[g], t]  # [n_q, d]
        s = self.scale * qs @ self.k[g, held].T
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)


def evict_lowest(held, score, keep, protected=()):
    """Keeps `keep` of `held` (positions, ascending): drops the lowest scores, ties the older
    first; positions in `protected` go last (oldest first among them)."""
    n = len(held)
    if n <= keep:
        return list(held)
    prot = set(protected)
    key = [(1 if p in prot else 0, 0.0 if p in prot else float(score[p]), p) for p in held]
    drop = set(p for _, _, p in sorted(key)[: n - keep])
    return [p for p in held if p not in drop]


def run(policy, tr, first_update, steps=None):
    """Runs `policy` on layer trace `tr`; returns {t: [held positions per KV head]} (and the
    policy's widths {t: {g: {pos: bits}}} when it has them) at the steps asked (all: None)."""
    held = [[] for _ in range(tr.n_kv)]
    out, widths = {}, {}
    for t in range(tr.T):
        for g in range(tr.n_kv):
            held[g].append(t)
        if t >= first_update:
            held = policy.update(t, held)
        if steps is None or t in steps:
            out[t] = [list(h) for h in held]
            if hasattr(policy, "widths"):
                widths[t] = [dict(policy.widths[g]) for g in range(tr.n_kv)]
        if t >= policy.first_observed(first_update):
            for g in range(tr.n_kv):
                policy.observe(t, g, held[g], tr.probs(t, g, held[g]))
    return out, widths


class Policy:
    """Defaults: observes every step."""

    def first_observed(self, first_update):
        return 0

    def observe(self, t, g, held, probs):
        pass


def budget_tokens(budget, n):
    """kvscope's budget rule (simulator/policy.h): a count, or a fraction of the n tokens so
    far rounded up, at least 16 (or n)."""
    if isinstance(budget, int):
        return budget
    return max(int(np.ceil(budget * n - 1e-9)), min(n, 16))


def plan_setup(path, budget, window):
    """What a plan over every layer starts from (dynamickv.py, composite.py): the trace's replayed
    layers, the plan step P (the prompt length; 3T/4 for a trace that is all prompt), SnapKV's
    capacity C there and the window w."""
    with h5py.File(path, "r") as f:
        layers = [int(x) for x in f.attrs["layers"]]
        P = int(f.attrs["prompt_len"])
        T = int(f.attrs["n_tokens"])
    if P >= T:
        P = T * 3 // 4
    C = budget_tokens(budget, P)
    return layers, P, C, min(window, P, C)


def window_sums(tr, g, P, w):
    """The last w queries' attention over the keys [0, P) of KV head g (mean over the group's
    query heads), summed over the queries."""
    tot = np.zeros(P)
    for t in range(P - w, P):
        tot[: t + 1] += tr.probs(t, g, list(range(t + 1))).mean(axis=0)
    return tot
