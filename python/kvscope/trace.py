"""Reader of kvscope attention traces (docs/trace-format.md, schema version 1).

    t = open_trace("traces/passkey.h5")
    t.n_tokens, t.layers, t.kv_head_of_q_head
    q = t.read("q", layer=5)              # float32 [head, token, dim]  (Trace.DIMS["q"])
    p = t.attention(layer=5, head=2, step=100)   # [101]: p_j for keys j = 0..100, sums to 1

Validates what the C++ reader (capture/src/trace_reader.cpp) validates: the format attribute,
the schema version (a newer one is refused with one line), the attributes and every dataset's
shape against them. Errors are KvscopeError with a one-line message.
"""
import numpy as np

from ._common import (KvscopeError, attr_bool, attr_float, attr_int, attr_str, check_format,
                      dataset, fail, open_h5)

FORMAT = "kvscope-trace"
SCHEMA_VERSION = 2  # 2 added the `logits` attribute (rows may lack logits: NaN / -1)
TOP_K = 16

# The named dimensions of every dataset (also written as HDF5 dimension labels by kvscope).
DIMS = {
    "kv_head_of_q_head": ("head",),
    "tokens/ids": ("token",),
    "tokens/positions": ("token",),
    "tokens/text": ("token",),
    "tokens/logprob": ("token",),
    "tokens/logits_lse": ("token",),
    "tokens/topk_ids": ("token", "rank"),
    "tokens/topk_logits": ("token", "rank"),
    "q": ("head", "token", "dim"),
    "k": ("kv_head", "token", "dim"),
    "v": ("kv_head", "token", "dim"),
    "o": ("head", "token", "dim"),
    "lse": ("head", "token"),
    "task/answer_positions": ("answer",),
    "task/needle_range": ("bound",),
}
LAYER_FIELDS = ("q", "k", "v", "o", "lse")


def open_trace(path):
    """Opens and validates a trace; use as a context manager or call close()."""
    return Trace(path)


class Trace:
    DIMS = DIMS

    def __init__(self, path):
        self.path = str(path)
        self._f, self.where = open_h5(self.path, "trace")
        try:
            self._validate()
        except Exception:
            self._f.close()
            raise
        self._qk_cache = (None, None)

    # --- opening -----------------------------------------------------------------------------
    def _validate(self):
        f, w = self._f, self.where
        self.schema_version = check_format(f, w, FORMAT, SCHEMA_VERSION, "trace")

        def bounded(name, lo, hi):
            v = attr_int(f, name, w)
            if v < lo or v > hi:
                fail(f"{w}: attribute '{name}' = {v} is outside [{lo}, {hi}]")
            return v

        self.logits = attr_str(f, "logits", w) if self.schema_version >= 2 else "topk"
        if self.logits not in ("topk", "lse", "none"):
            fail(f"{w}: logits '{self.logits}' is not one of topk, lse, none")
        self.kvscope_version = attr_str(f, "kvscope_version", w)
        self.model_name = attr_str(f, "model_name", w)
        self.model_arch = attr_str(f, "model_arch", w)
        self.model_path = attr_str(f, "model_path", w)
        self.n_layer = bounded("n_layer", 1, 100000)
        self.n_head = bounded("n_head", 1, 100000)
        self.n_head_kv = bounded("n_head_kv", 1, self.n_head)
        self.head_dim = bounded("head_dim", 1, 100000)
        if self.n_head % self.n_head_kv:
            fail(f"{w}: n_head {self.n_head} is not a multiple of n_head_kv {self.n_head_kv}")
        if "layers" not in f.attrs:
            fail(f"{w}: missing attribute 'layers'")
        layers = [int(x) for x in np.atleast_1d(np.asarray(f.attrs["layers"]))]
        if any(l < 0 or l >= self.n_layer for l in layers) or layers != sorted(set(layers)):
            fail(f"{w}: attribute 'layers' must list layers of [0, {self.n_layer}) in "
                 "ascending order")
        self.layers = tuple(layers)
        self.rope_theta = attr_float(f, "rope_theta", w)
        self.rope_pairing = attr_str(f, "rope_pairing", w)
        if self.rope_pairing not in ("interleaved", "half"):
            fail(f"{w}: rope_pairing '{self.rope_pairing}' is neither 'interleaved' nor 'half'")
        self.attn_scale = attr_float(f, "attn_scale", w)
        self.dtype = attr_str(f, "dtype", w)
        if self.dtype not in ("f16", "f32"):
            fail(f"{w}: dtype '{self.dtype}' is neither f16 nor f32")
        self.compression = attr_str(f, "compression", w)
        self.n_tokens = bounded("n_tokens", 0, 1 << 31)
        self.prompt_len = bounded("prompt_len", 0, self.n_tokens)
        self.created = attr_str(f, "created", w)
        self.command_line = attr_str(f, "command_line", w)
        self.complete = attr_bool(f, "complete", w)
        self.config_json = attr_str(f, "config_json", w)

        T, H, HK, D = self.n_tokens, self.n_head, self.n_head_kv, self.head_dim
        kvq = dataset(f, "kv_head_of_q_head", w, (H,), "i", "n_head")[...].astype(np.int64)
        if ((kvq < 0) | (kvq >= HK)).any():
            fail(f"{w}: kv_head_of_q_head holds {int(kvq[(kvq < 0) | (kvq >= HK)][0])}, "
                 f"outside [0, {HK})")
        self.kv_head_of_q_head = kvq
        for name, kind, shape in (("ids", "i", (T,)), ("positions", "i", (T,)),
                                  ("text", "s", (T,)), ("logprob", "f", (T,)),
                                  ("logits_lse", "f", (T,)), ("topk_ids", "i", (T, TOP_K)),
                                  ("topk_logits", "f", (T, TOP_K))):
            dataset(f, "tokens/" + name, w, shape, kind,
                    "n_tokens" + (", 16" if len(shape) == 2 else ""))
        width = max(2, len(str(max(self.n_layer - 1, 0))))
        self._group = {l: f"layers/{l:0{width}d}" for l in self.layers}
        shapes = {"q": (H, T, D), "k": (HK, T, D), "v": (HK, T, D), "o": (H, T, D), "lse": (H, T)}
        for l, g in self._group.items():
            for name, shape in shapes.items():
                dataset(f, f"{g}/{name}", w, shape, "f", ", ".join(DIMS[name]))

        if "task" not in f:
            fail(f"{w}: missing group 'task'")
        tg = f["task"]
        tw = w + " task/"
        task = {"kind": attr_str(tg, "kind", tw)}
        if task["kind"] not in ("text", "prompt", "passkey", "needle"):
            fail(f"{w}: task kind '{task['kind']}' is not text, prompt, passkey or needle")
        if task["kind"] in ("passkey", "needle"):
            task["answer"] = attr_str(tg, "answer", tw)
            task["depth"] = attr_float(tg, "depth", tw)
            task["seed"] = attr_int(tg, "seed", tw)
            task["needle"] = attr_str(tg, "needle", tw)
            if task["kind"] == "needle":
                task["needle_key"] = attr_str(tg, "needle_key", tw)
            task["generated"] = attr_str(tg, "generated", tw)
            task["correct"] = attr_bool(tg, "correct", tw)
            ap = dataset(f, "task/answer_positions", w, None, "i")
            if ap.ndim != 1 or ap.shape[0] > T:
                fail(f"{w}: 'task/answer_positions' has a bad shape")
            task["answer_positions"] = ap[...].astype(np.int64)
            nr = dataset(f, "task/needle_range", w, (2,), "i", "2")[...]
            task["needle_range"] = (int(nr[0]), int(nr[1]))
        self.task = task

    # --- basics ------------------------------------------------------------------------------
    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"<kvscope trace '{self.path}': {self.model_name}, {self.n_tokens} tokens, "
                f"{len(self.layers)} layers x {self.n_head} heads ({self.n_head_kv} KV)>")

    @property
    def h5(self):
        """The open h5py.File, for anything this reader does not wrap."""
        return self._f

    @staticmethod
    def dims(field):
        """Named dimensions of a field: dims("q") == ("head", "token", "dim")."""
        if field not in DIMS:
            fail(f"unknown trace field '{field}' (valid: {', '.join(DIMS)})")
        return DIMS[field]

    def info(self):
        """The figures `kvscope info --json` prints about the file (a dict)."""
        return {"path": self.path, "schema_version": self.schema_version,
                "model_name": self.model_name, "model_arch": self.model_arch,
                "n_layer": self.n_layer, "n_head": self.n_head, "n_head_kv": self.n_head_kv,
                "head_dim": self.head_dim, "layers": list(self.layers),
                "n_tokens": self.n_tokens, "prompt_len": self.prompt_len,
                "dtype": self.dtype, "compression": self.compression,
                "attn_scale": self.attn_scale, "complete": self.complete,
                "task": {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                         for k, v in self.task.items()}}

    # --- tokens ------------------------------------------------------------------------------
    @property
    def positions(self):
        return self._f["tokens/positions"][...].astype(np.int64)

    def tokens(self, t0=0, t1=None):
        """Structured array [token] with fields id, position, text (str), logprob, logits_lse."""
        t0, t1 = self._range(t0, t1)
        g = self._f["tokens"]
        out = np.zeros(t1 - t0, dtype=[("id", "i4"), ("position", "i4"), ("text", object),
                                       ("logprob", "f8"), ("logits_lse", "f4")])
        out["id"] = g["ids"][t0:t1]
        out["position"] = g["positions"][t0:t1]
        text = g["text"][t0:t1]
        out["text"] = [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x)
                       for x in text]
        out["logprob"] = g["logprob"][t0:t1]
        out["logits_lse"] = g["logits_lse"][t0:t1]
        return out

    def topk(self, t0=0, t1=None):
        """(ids int32 [token, rank], logits float32 [token, rank]), rank 0 = the largest."""
        t0, t1 = self._range(t0, t1)
        return (self._f["tokens/topk_ids"][t0:t1], self._f["tokens/topk_logits"][t0:t1])

    # --- per-layer tensors -------------------------------------------------------------------
    def _range(self, t0, t1):
        t1 = self.n_tokens if t1 is None else t1
        if not (0 <= t0 <= t1 <= self.n_tokens):
            fail(f"{self.where}: token range [{t0}, {t1}) outside [0, {self.n_tokens}]")
        return int(t0), int(t1)

    def _layer(self, layer):
        if layer not in self._group:
            fail(f"{self.where}: layer {layer} was not captured (captured: "
                 f"{', '.join(map(str, self.layers))})")
        return self._f[self._group[layer]]

    def read(self, field, layer, head=None, t0=0, t1=None):
        """float32 array of `field` (q, k, v, o, lse) of one layer: all heads, dims DIMS[field],
        or one head (the head dimension dropped); tokens [t0, t1)."""
        if field not in LAYER_FIELDS:
            fail(f"unknown layer field '{field}' (valid: {', '.join(LAYER_FIELDS)})")
        t0, t1 = self._range(t0, t1)
        d = self._layer(layer)[field]
        if head is None:
            return d[:, t0:t1].astype(np.float32)
        if not 0 <= head < d.shape[0]:
            fail(f"{self.where}: head {head} of '{field}' outside [0, {d.shape[0]})")
        return d[head, t0:t1].astype(np.float32)

    def _qk(self, layer):
        if self._qk_cache[0] != layer:
            g = self._layer(layer)
            self._qk_cache = (layer, (g["q"][...].astype(np.float32),
                                      g["k"][...].astype(np.float32),
                                      g["lse"][...].astype(np.float64)))
        return self._qk_cache[1]

    def attention_rows(self, layer, head, t0=0, t1=None):
        """Full attention probabilities of query head `head` for queries [t0, t1): float64
        [t1 - t0, n_tokens], p[t, j] = exp(attn_scale * q_t.k_j - lse_t) where pos[j] <= pos[t],
        else 0; the keys are those of KV head kv_head_of_q_head[head] (GQA)."""
        t0, t1 = self._range(t0, t1)
        if not 0 <= head < self.n_head:
            fail(f"{self.where}: head {head} outside [0, {self.n_head})")
        q, k, lse = self._qk(layer)
        kv = int(self.kv_head_of_q_head[head])
        s = (q[head, t0:t1] @ k[kv].T).astype(np.float64) * self.attn_scale
        pos = self.positions
        mask = pos[None, :] <= pos[t0:t1, None]
        with np.errstate(over="ignore", under="ignore"):
            p = np.exp(s - lse[head, t0:t1, None])
        p[~mask] = 0.0
        return p

    def attention(self, layer, head, step):
        """p_j for keys j = 0..step of query `step` (head `head`, layer `layer`), float64
        [step + 1]: exp(attn_scale * q_step.k_j - lse_step) (0 for a key at a later position)."""
        if not 0 <= step < self.n_tokens:
            fail(f"{self.where}: step {step} outside [0, {self.n_tokens})")
        return self.attention_rows(layer, head, step, step + 1)[0, :step + 1]

    def attention_received(self, layer, head=None, block=256):
        """Attention each token received, summed over the queries that see it: float64 [T]
        (sum_t p[t, j]), for one query head or (head=None) the mean over the layer's heads.
        Computed in float32 over the causal blocks only (the sums are exact to ~1e-6)."""
        heads = range(self.n_head) if head is None else [head]
        for h in heads:
            if not 0 <= h < self.n_head:
                fail(f"{self.where}: head {h} outside [0, {self.n_head})")
        q, k, lse = self._qk(layer)
        lse32 = lse.astype(np.float32)
        scale = np.float32(self.attn_scale)
        pos = self.positions
        T = self.n_tokens
        # Positions are usually 0..T-1: then the keys a query block sees end at the block's end.
        ordered = bool((np.diff(pos) > 0).all()) if T > 1 else True
        acc = np.zeros(T)
        for h in heads:
            kh = k[int(self.kv_head_of_q_head[h])]
            for t0 in range(0, T, block):
                t1 = min(T, t0 + block)
                n_keys = t1 if ordered else T
                s = q[h, t0:t1] @ kh[:n_keys].T
                s *= scale
                s -= lse32[h, t0:t1, None]
                with np.errstate(over="ignore", under="ignore"):
                    np.exp(s, out=s)
                s[pos[None, :n_keys] > pos[t0:t1, None]] = 0.0
                acc[:n_keys] += s.sum(0, dtype=np.float64)
        return acc / len(heads)


__all__ = ["open_trace", "Trace", "DIMS", "KvscopeError"]
