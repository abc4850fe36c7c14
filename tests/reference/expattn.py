"""Expected attention (kvpress ExpectedAttentionPress, kvpress/presses/expected_attention_press.py),
written again from that file: get_query_statistics (the mean and covariance of the pre-RoPE
queries of tokens [n_sink, q_len), divided by the count; R = the mean of cos * Id + sin * P over
positions q_len .. q_len + n_future_positions - 1, with P the rotate_half matrix
(P[d/2:, :d/2] = I, P[:d/2, d/2:] = -I); mu <- mu R^T, cov <- R cov R^T) and score (keys but the
sinks: mu.k / sqrt(d) + k^T cov k / d / 2, softmax over them, mean over the KV head's query
heads, times ||v||; sinks get the maximum), then ScorerPress's top-k at P (kvscope's keyscore
rule: the top `budget` prompt entries, token P kept).

The pre-RoPE queries come from the trace's post-RoPE q, rotated back by each row's position with
frequencies computed here from the trace's rope_theta (theta^(-2i/d), no scaling: the fixture's
model has none) and its rope_pairing; kvscope reads its own (the trace's rope_inv_freq, or the
same formula) and rotates in C++."""
import h5py
import numpy as np

from common import Policy, budget_tokens, evict_lowest


class ExpAttn(Policy):
    def __init__(self, budget, tr, n_future=512, n_sink=4, use_cov=True, use_vnorm=True):
        self.budget, self.tr = budget, tr
        self.n_future, self.n_sink, self.use_cov, self.use_vnorm = n_future, n_sink, use_cov, use_vnorm
        with h5py.File(tr.path, "r") as f:
            self.v = f["layers/%02d/v" % tr.layer][...].astype(np.float64)  # [n_kv, T, d]
            theta = float(f.attrs["rope_theta"])
            pairing = f.attrs["rope_pairing"]
            pairing = pairing.decode() if isinstance(pairing, bytes) else str(pairing)
        d = tr.d
        self.freq = np.float32(1.0 / theta ** (2.0 * np.arange(d // 2) / d)).astype(np.float64)
        half = np.arange(d // 2)
        self.a, self.b = (half, half + d // 2) if pairing == "half" else (2 * half, 2 * half + 1)
        self.k = tr.k.astype(np.float16).astype(np.float64)  # as stored: fp16

    def first_observed(self, first_update):
        return 1 << 60  # needs no attention

    def rotation(self, pos):
        """The d x d RoPE rotation at position pos (the engine's / HF's, in this pairing)."""
        d = self.tr.d
        R = np.zeros((d, d))
        c, s = np.cos(pos * self.freq), np.sin(pos * self.freq)
        R[self.a, self.a], R[self.a, self.b] = c, -s
        R[self.b, self.b], R[self.b, self.a] = c, s
        return R

    def stats(self, h, P):
        q = self.tr.q[h, self.n_sink:P]  # post-RoPE rows of tokens n_sink .. P-1
        pre = np.stack([self.rotation(t).T @ q[i] for i, t in enumerate(range(self.n_sink, P))])
        mu = pre.mean(axis=0)
        c = pre - mu
        cov = c.T @ c / len(pre)
        R = np.mean([self.rotation(p) for p in range(P, P + self.n_future)], axis=0)
        return mu @ R.T, R @ cov @ R.T

    def update(self, t, held):
        P = self.P = getattr(self, "P", t)
        if t != P:
            return held
        keep = min(P, budget_tokens(self.budget, P)) + 1
        d = self.tr.d
        out = []
        for g, h in enumerate(held):
            if len(h) <= keep:
                out.append(h)
                continue
            scored = [p for p in h[:-1] if p >= self.n_sink]
            K = self.k[g, scored]
            sc = np.zeros(len(scored))
            heads = self.tr.groups[g]
            for qh in heads:
                mu, cov = self.stats(qh, P)
                x = K @ mu / np.sqrt(d)
                if self.use_cov:
                    x = x + np.einsum("ni,ij,nj->n", K, cov, K) / d / 2
                e = np.exp(x - x.max())
                sc += e / e.sum()
            sc /= len(heads)
            if self.use_vnorm:
                sc = sc * np.linalg.norm(self.v[g, scored], axis=1)
            s = dict(zip(scored, sc))
            prot = [p for p in h if p < self.n_sink] + [h[-1]]
            out.append(evict_lowest(h, s, keep, protected=prot))
        return out
