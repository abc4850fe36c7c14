"""Reader of kvscope replay results (docs/results-format.md, schema version 3; 1 and 2 read).

    r = open_results("traces/results.h5")
    r.table()                          # one dict per run: spec, budget, summary figures
    run = r.runs[3]
    run.recall                         # float32 [step, layer, kv_head]  (DIMS["recall"])
    held = run.held_at(500)            # bool [layer, kv_head, token]: in the cache at step 500
    bits = run.bits_at(500)            # int  [layer, kv_head, token]: width, 0 = not held
    run.mean_bits()                    # float [step]: mean width of the held tokens

A step is a token index t (the query of token t attends the cache after token t was appended
and the policy acted). Token j is held at step t when j <= t and (evicted_at[j] < 0 or
t < evicted_at[j]); its width is the bits of its last bit_events row with step <= t (16 when
it has none). Files without bit_events (written before it existed) give widths from the last
checkpoint at or before t (bits_exact is then False, unless every checkpoint holds one width).
Merged entries (schema 3): run.merged_into [layer, kv_head, token] is the position of the
representative of the merged entry token j was last folded into, run.merged_at the step (-1:
never folded; files before schema 3 read as -1 throughout); run.stands_for(t, layer, kv_head)
gives, per held entry at step t, the original tokens it stands for.

Validates what the C++ readers (simulator/src/results_io.cpp, viewer/data/src/results.cpp)
validate: format, schema version (a newer one is refused with one line), every dataset's shape.
"""
import json

import numpy as np

from ._common import (KvscopeError, attr_bool, attr_float, attr_int, attr_str, check_format,
                      dataset, fail, open_h5)

FORMAT = "kvscope-results"
SCHEMA_VERSION = 3  # 2 added offload_bytes (dataset and summary), 3 merged_into / merged_at;
# 1 and 2 still read

# Summary attributes of a run, in the order of the summary CSV (simulator/replay.h).
SUMMARY_FIELDS = ("recall_mean", "recall_p5", "err_mean", "err_p95", "cos_mean", "cos_p5",
                  "held_mean", "bytes_mean", "bytes_peak", "full_bytes_mean",
                  "full_bytes_at_peak", "ratio_mean", "ratio_at_peak", "bytes_final",
                  "full_bytes_final", "ratio_final", "restores", "answer_kept",
                  "offload_bytes_mean", "offload_bytes_peak")

# Named dimensions of every dataset of a run.
DIMS = {
    "answer_positions": ("answer",),
    "layers": ("layer",),
    "steps": ("step",),
    "recall": ("step", "layer", "kv_head"),
    "out_rel_err": ("step", "layer", "kv_head"),
    "out_cos": ("step", "layer", "kv_head"),
    "held": ("step", "layer", "kv_head"),
    "budget_tokens": ("step", "layer", "kv_head"),
    "bytes": ("step", "layer", "kv_head"),
    "full_bytes": ("step",),
    "offload_bytes": ("step", "layer", "kv_head"),  # schema 2
    "evicted_at": ("layer", "kv_head", "token"),
    "merged_into": ("layer", "kv_head", "token"),  # schema 3
    "merged_at": ("layer", "kv_head", "token"),  # schema 3
    "bit_events": ("event", "field"),  # field: unit, token, step, bits
    "unit_role": ("layer", "kv_head"),  # optional: index into Run.unit_role_names
    "ckpt_steps": ("checkpoint",),
    "ckpt_bits": ("checkpoint", "layer", "kv_head", "token"),
    "ckpt_score": ("checkpoint", "layer", "kv_head", "token"),
}


def open_results(path):
    """Opens and validates a results file; use as a context manager or call close()."""
    return Results(path)


class Results:
    DIMS = DIMS

    def __init__(self, path):
        self.path = str(path)
        self._f, self.where = open_h5(self.path, "results")
        try:
            f, w = self._f, self.where
            self.schema_version = check_format(f, w, FORMAT, SCHEMA_VERSION, "results file")
            self.kvscope_version = attr_str(f, "kvscope_version", w)
            self.created = attr_str(f, "created", w) if "created" in f.attrs else ""
            self.command_line = attr_str(f, "command_line", w) if "command_line" in f.attrs else ""
            n = attr_int(f, "n_runs", w)
            if n < 0 or n > 1000000:
                fail(f"{w}: n_runs {n} is out of range")
            self.runs = []
            for i in range(n):
                g = f"runs/{i:04d}"
                if g not in f:
                    fail(f"{w}: missing group '{g}' (n_runs = {n})")
                self.runs.append(Run(self, i, f[g]))
        except Exception:
            self._f.close()
            raise

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        return len(self.runs)

    def __iter__(self):
        return iter(self.runs)

    def __repr__(self):
        return f"<kvscope results '{self.path}': {len(self.runs)} runs>"

    def table(self):
        """One dict per run: file, run, trace, policy, spec, budget, mode, prefill_len,
        n_tokens, steps and the summary fields (answer_kept None when the trace has none)."""
        return [r.row() for r in self.runs]

    def summary_array(self):
        """The table as a numpy structured array (strings as objects)."""
        rows = self.table()
        cols = list(rows[0]) if rows else ["run"]
        dt = []
        for c in cols:
            v = rows[0][c] if rows else 0
            dt.append((c, object if isinstance(v, str) or v is None else
                       ("i8" if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                        else "f8")))
        out = np.zeros(len(rows), dtype=dt)
        for i, r in enumerate(rows):
            for c in cols:
                v = r[c]
                out[c][i] = np.nan if v is None and out.dtype[c] != object else v
        return out


class Run:
    """One run: one policy spec at one budget on one trace in one mode."""
    DIMS = DIMS

    def __init__(self, results, index, g):
        self.results, self.index, self._g = results, index, g
        w = self.where = f"{results.where} {g.name.lstrip('/')}"
        self.policy = attr_str(g, "policy", w)
        self.spec = attr_str(g, "spec", w)
        pj = attr_str(g, "params_json", w) if "params_json" in g.attrs else "{}"
        try:
            self.params = {str(k): str(v) for k, v in json.loads(pj).items()}
        except (ValueError, AttributeError):
            fail(f"{w}: params_json is not a JSON object")
        self.budget = attr_str(g, "budget", w)
        self.mode = attr_str(g, "mode", w)
        if self.mode not in ("stream", "prefill"):
            fail(f"{w}: mode '{self.mode}' is neither 'stream' nor 'prefill'")
        self.prefill_len = attr_int(g, "prefill_len", w)
        self.trace_path = attr_str(g, "trace_path", w)
        self.trace_model = attr_str(g, "trace_model", w) if "trace_model" in g.attrs else ""
        self.trace_task = attr_str(g, "trace_task", w) if "trace_task" in g.attrs else ""
        self.trace_complete = (attr_bool(g, "trace_complete", w)
                               if "trace_complete" in g.attrs else True)
        self.n_tokens = attr_int(g, "n_tokens", w)
        self.n_head = attr_int(g, "n_head", w)
        self.n_head_kv = attr_int(g, "n_head_kv", w)
        self.head_dim = attr_int(g, "head_dim", w)
        self.seconds = attr_float(g, "seconds", w) if "seconds" in g.attrs else 0.0
        if not 0 <= self.n_tokens <= (1 << 31):
            fail(f"{w}: n_tokens {self.n_tokens} is out of range")
        if self.n_head_kv < 1 or self.n_head_kv > 100000 or self.n_head < self.n_head_kv:
            fail(f"{w}: n_head {self.n_head} / n_head_kv {self.n_head_kv} are out of range")
        if not 0 <= self.prefill_len <= self.n_tokens:
            fail(f"{w}: prefill_len {self.prefill_len} is outside [0, n_tokens {self.n_tokens}]")
        self.summary = {k: attr_float(g, k, w) for k in SUMMARY_FIELDS if k in g.attrs}

        # Shapes (metadata only; the data are read on first use).
        def length(name):
            d = dataset(g, name, w, None, "i")
            if d.ndim != 1:
                fail(f"{w}: dataset '{name}' has shape {list(d.shape)}, expected one dimension")
            return d.shape[0]

        L, S, C = length("layers"), length("steps"), length("ckpt_steps")
        H, T = self.n_head_kv, self.n_tokens
        self.n_layers_replayed, self.n_steps, self.n_checkpoints = L, S, C
        slh = (S, L, H)
        for name, kind in (("recall", "f"), ("out_rel_err", "f"), ("out_cos", "f"),
                           ("held", "i"), ("budget_tokens", "i"), ("bytes", "i")):
            dataset(g, name, w, slh, kind, "steps, layers, n_head_kv")
        dataset(g, "full_bytes", w, (S,), "i", "steps")
        dataset(g, "evicted_at", w, (L, H, T), "i", "layers, n_head_kv, n_tokens")
        self.has_merges = results.schema_version >= 3
        if self.has_merges:
            for name in ("merged_into", "merged_at"):
                dataset(g, name, w, (L, H, T), "i", "layers, n_head_kv, n_tokens")
        dataset(g, "ckpt_bits", w, (C, L, H, T), "i", "checkpoints, layers, n_head_kv, n_tokens")
        dataset(g, "ckpt_score", w, (C, L, H, T), "f", "checkpoints, layers, n_head_kv, n_tokens")
        # Optional: the roles a policy's plan gave the units (razor: compressed / retrieval).
        self.unit_role_names = []
        if "unit_role" in g:
            dataset(g, "unit_role", w, (L, H), "i", "layers, n_head_kv")
            names = attr_str(g, "unit_role_names", w)
            self.unit_role_names = names.split(",")
        self.has_bit_events = "bit_events" in g
        if self.has_bit_events:
            d = dataset(g, "bit_events", w, None, "i")
            if d.ndim != 2 or d.shape[1] != 4:
                fail(f"{w}: dataset 'bit_events' has shape {list(d.shape)}, expected [E, 4] "
                     "(unit, token, step, bits)")
        self._cache = {}

    def __repr__(self):
        return f"<kvscope run {self.index}: {self.spec} on '{self.trace_path}'>"

    # --- arrays (read once, checked like the viewer checks them) ------------------------------
    def _get(self, name):
        if name not in self._cache:
            if name in ("merged_into", "merged_at") and not self.has_merges:
                a = np.full((self.n_layers_replayed, self.n_head_kv, self.n_tokens), -1, np.int32)
                self._cache[name] = a
                return a
            a = self._g[name][...]
            if name == "ckpt_score":
                a = a.astype(np.float32)
            self._cache[name] = a
            self._check(name, a)
        return self._cache[name]

    def _check(self, name, a):
        w, T = self.where, self.n_tokens
        if name in ("steps", "ckpt_steps") and a.size:
            if (a < 0).any() or (a >= T).any() or (np.diff(a) <= 0).any():
                fail(f"{w}: '{name}' must be ascending token indices in [0, {T})")
        if name == "evicted_at" and a.size and ((a < -1).any() or (a > T).any()):
            fail(f"{w}: 'evicted_at' holds values outside [-1, {T}]")
        if name in ("merged_into", "merged_at") and a.size and ((a < -1).any() or (a >= T).any()):
            fail(f"{w}: '{name}' holds values outside [-1, {T})")
        if name == "bit_events" and a.size:
            U = self.n_layers_replayed * self.n_head_kv
            bad = ((a[:, 0] < 0) | (a[:, 0] >= U) | (a[:, 1] < 0) | (a[:, 1] >= T) |
                   (a[:, 2] < 0) | (a[:, 2] >= T) | (a[:, 3] < 0) | (a[:, 3] > 64))
            if bad.any() or (np.diff(a[:, 2]) < 0).any():
                fail(f"{w}: 'bit_events' rows must be (unit in [0, {U}), token and step in "
                     f"[0, {T}), bits in [0, 64]) with steps ascending")

    def __getattr__(self, name):
        if name == "unit_role" and not self.unit_role_names:
            return None  # the policy gave the units no roles
        if name in DIMS and name != "bit_events":
            return self._get(name)
        raise AttributeError(name)

    @property
    def bit_events(self):
        """int32 [E, 4] (unit, token, step, bits); empty when the file has none."""
        if not self.has_bit_events:
            return np.zeros((0, 4), np.int32)
        return self._get("bit_events")

    def dims(self, name):
        return DIMS[name]

    def layer_index(self, layer):
        """Slot of model layer `layer` among the replayed layers (KvscopeError if absent)."""
        idx = np.nonzero(self.layers == layer)[0]
        if not idx.size:
            fail(f"{self.where}: layer {layer} was not replayed (replayed: "
                 f"{', '.join(map(str, self.layers.tolist()))})")
        return int(idx[0])

    def row(self):
        r = {"file": self.results.path, "run": self.index, "trace": self.trace_path,
             "trace_model": self.trace_model, "trace_task": self.trace_task,
             "policy": self.policy, "spec": self.spec, "budget": self.budget, "mode": self.mode,
             "prefill_len": self.prefill_len, "n_tokens": self.n_tokens, "steps": self.n_steps}
        for k in SUMMARY_FIELDS:
            v = self.summary.get(k)
            r[k] = None if v is None or (k == "answer_kept" and v < 0) else v
        r["seconds"] = self.seconds
        return r

    # --- held set and widths at any step --------------------------------------------------------
    def _units(self, layer, kv_head):
        """Unit slots (layer slot * Hkv + KV head) selected by a model layer and a KV head
        (None = all)."""
        L, H = self.n_layers_replayed, self.n_head_kv
        ls = range(L) if layer is None else [self.layer_index(layer)]
        if kv_head is not None and not 0 <= kv_head < H:
            fail(f"{self.where}: KV head {kv_head} outside [0, {H})")
        hs = range(H) if kv_head is None else [kv_head]
        return [l * H + h for l in ls for h in hs]

    def _step(self, t):
        if not 0 <= t < self.n_tokens:
            fail(f"{self.where}: step {t} outside [0, {self.n_tokens})")
        return int(t)

    def held_at(self, t, layer=None, kv_head=None):
        """bool [layer, kv_head, token] (or [token] for one unit): token j is in the cache of
        the unit when the query of step t attends."""
        t = self._step(t)
        e = self.evicted_at
        j = np.arange(self.n_tokens)
        held = (j <= t) & ((e < 0) | (t < e))
        return self._select(held, layer, kv_head)

    def stands_for(self, t, layer, kv_head):
        """The entries of one unit held at step t: {representative position: sorted array of
        the original tokens it stands for (itself included)}. A token folded at step s stands
        in its representative's entry from s on (merged_into, merged_at). merged_into records
        a token's last fold only: a token folded twice (an entry folded into another) shows its
        last representative from the last fold on and its own entry, if held, before."""
        t = self._step(t)
        held = np.nonzero(self.held_at(t, layer, kv_head))[0]
        mi = self._select(self.merged_into, layer, kv_head)
        ma = self._select(self.merged_at, layer, kv_head)
        out = {int(p): [int(p)] for p in held}
        for j in np.nonzero((ma >= 0) & (ma <= t))[0]:
            if int(mi[j]) in out:
                out[int(mi[j])].append(int(j))
        return {p: np.array(sorted(v), np.int64) for p, v in out.items()}

    def _select(self, a, layer, kv_head):
        if layer is not None:
            a = a[self.layer_index(layer)]
            if kv_head is not None:
                a = a[kv_head]
        elif kv_head is not None:
            a = a[:, kv_head]
        return a

    @property
    def bits_exact(self):
        """True when bits_at is exact at every step (bit_events, or one width throughout)."""
        return self.has_bit_events or self._uniform_bits() > 0

    def _uniform_bits(self):
        b = np.unique(self.ckpt_bits)
        b = b[b > 0]
        return int(b[0]) if b.size == 1 else 0

    def _widths_at(self, t):
        """Width of every token of every unit at step t as the events say: int [L*H, T]."""
        U, T = self.n_layers_replayed * self.n_head_kv, self.n_tokens
        w = np.full(U * T, 16, np.int32)
        ev = self.bit_events
        ev = ev[ev[:, 2] <= t]
        if ev.size:
            key = ev[:, 0].astype(np.int64) * T + ev[:, 1]
            # the last event per (unit, token): events are in step order
            rk = key[::-1]
            uk, first = np.unique(rk, return_index=True)
            w[uk] = ev[::-1][first, 3]
        return w.reshape(U, T)

    def bits_at(self, t, layer=None, kv_head=None):
        """int [layer, kv_head, token] (or [token]): the width token j is held at when the
        query of step t attends; 0 = not held. Without bit_events and with several widths in
        the checkpoints, the widths of the last checkpoint at or before t (-1 for a held token
        it does not know)."""
        t = self._step(t)
        held = self.held_at(t)
        L, H, T = self.n_layers_replayed, self.n_head_kv, self.n_tokens
        if self.has_bit_events:
            w = self._widths_at(t).reshape(L, H, T)
        elif self._uniform_bits():
            w = np.full((L, H, T), self._uniform_bits(), np.int32)
        else:
            c = np.searchsorted(self.ckpt_steps, t, side="right") - 1
            w = np.full((L, H, T), -1, np.int32)
            if c >= 0:
                cb = self.ckpt_bits[c].astype(np.int32)
                known = np.arange(T) <= self.ckpt_steps[c]
                w[:, :, known] = cb[:, :, known]
        return self._select(np.where(held, w, 0), layer, kv_head)

    # --- per-step aggregates, exact at every evaluated step --------------------------------------
    def _rows(self, x):
        """Row index of the first evaluated step >= token index x (S when none)."""
        return np.searchsorted(self.steps, x, side="left")

    def _deltas(self, units):
        """The changes of every selected unit's cache as (slot, token, row, d_count, d_bits):
        a token enters at the first evaluated step >= its index (+1, +16 bits), changes width
        at its bit_events (while held), and leaves at its eviction (-1, -its width then).
        slot indexes `units`; row S means "after the last evaluated step" (dropped)."""
        S, T = self.n_steps, self.n_tokens
        nu = len(units)
        e = self.evicted_at.reshape(-1, T)[units]                       # [nu, T]
        slot = np.repeat(np.arange(nu), T)
        tok = np.tile(np.arange(T), nu)
        enter = np.tile(self._rows(np.arange(T)), nu)
        ev_flat = e.reshape(-1)
        gone = ev_flat >= 0
        width = np.full(nu * T, 16.0)
        parts = []
        ev = self.bit_events
        if ev.size:
            where = np.full(self.n_layers_replayed * self.n_head_kv, -1)
            where[units] = np.arange(nu)
            ev = ev[where[ev[:, 0]] >= 0]
            u, j, st, b = where[ev[:, 0]], ev[:, 1], ev[:, 2], ev[:, 3].astype(np.float64)
            ej = e[u, j]
            keep = (ej < 0) | (st < ej)               # a change while held
            u, j, st, b = u[keep], j[keep], st[keep], b[keep]
            key = u.astype(np.int64) * T + j
            order = np.argsort(key, kind="stable")    # per token, in step order
            key, u, j, st, b = key[order], u[order], j[order], st[order], b[order]
            prev = np.full(b.shape, 16.0)
            same = np.r_[False, key[1:] == key[:-1]]
            prev[same] = b[:-1][same[1:]]
            parts.append((u, j, self._rows(st), np.zeros(b.shape), b - prev))
            last = np.r_[key[1:] != key[:-1], True]
            width[key[last]] = b[last]
        elif self._uniform_bits():
            width[:] = self._uniform_bits()
        parts.append((slot, tok, enter, np.ones(nu * T), width if not ev.size and
                      self._uniform_bits() else np.full(nu * T, 16.0)))
        leave = self._rows(np.maximum(ev_flat, 0))
        parts.append((slot[gone], tok[gone], leave[gone], -np.ones(gone.sum()), -width[gone]))
        return [np.concatenate(x) for x in zip(*parts)]

    def _unit_diffs(self, units):
        """Per selected unit, difference arrays over the evaluated steps of the held count and
        of the sum of held widths: ([U, S+1], [U, S+1])."""
        slot, _, row, dc, db = self._deltas(units)
        cnt = np.zeros((len(units), self.n_steps + 1))
        bsum = np.zeros((len(units), self.n_steps + 1))
        np.add.at(cnt, (slot, row), dc)
        np.add.at(bsum, (slot, row), db)
        return cnt, bsum

    def held_counts(self):
        """int [step, layer, kv_head]: tokens held at each evaluated step, from evicted_at
        (what the `held` dataset records)."""
        units = list(range(self.n_layers_replayed * self.n_head_kv))
        cnt, _ = self._unit_diffs(units)
        c = np.cumsum(cnt, axis=1)[:, :self.n_steps].round().astype(np.int64)
        return c.T.reshape(self.n_steps, self.n_layers_replayed, self.n_head_kv)

    def _staircase(self):
        """Widths come from the checkpoints only (no bit_events, several widths)."""
        return not self.has_bit_events and not self._uniform_bits()

    def mean_bits(self, layer=None, kv_head=None):
        """float [step]: mean width of the held tokens over the selected units (exact with
        bit_events or a single width; otherwise the widths of the last checkpoint)."""
        units = self._units(layer, kv_head)
        cnt, bsum = self._unit_diffs(units)
        n = np.cumsum(cnt.sum(0))[:self.n_steps]
        if not self._staircase():
            tot = np.cumsum(bsum.sum(0))[:self.n_steps]
        else:
            tot = np.array([self.bits_at(int(t)).reshape(-1, self.n_tokens)[units].clip(0).sum()
                            for t in self.steps], dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, tot / np.maximum(n, 1), np.nan)

    def held_map(self, layer=None, kv_head=None):
        """float [step, token]: the share of the selected units holding token j at each
        evaluated step (NaN for j > step). One unit gives 0 / 1."""
        return self._map(layer, kv_head, bits=False)

    def bits_map(self, layer=None, kv_head=None):
        """float [step, token]: the mean width of token j over the selected units at each
        evaluated step, 0 counted where it is not held (NaN for j > step)."""
        return self._map(layer, kv_head, bits=True)

    def _map(self, layer, kv_head, bits):
        units = self._units(layer, kv_head)
        S, T = self.n_steps, self.n_tokens
        t = self.steps.astype(np.int64)
        if bits and self._staircase():
            acc = np.stack([self.bits_at(int(x)).reshape(-1, T)[units].clip(0).sum(0)
                            for x in t]).astype(np.float64)
        else:
            _, tok, row, dc, db = self._deltas(units)
            d = np.zeros((S + 1, T))
            np.add.at(d, (row, tok), db if bits else dc)
            acc = np.cumsum(d, axis=0)[:S]
        acc /= len(units)
        acc[np.arange(T)[None, :] > t[:, None]] = np.nan
        return acc


__all__ = ["open_results", "Results", "Run", "DIMS", "SUMMARY_FIELDS", "KvscopeError"]
