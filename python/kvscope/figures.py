"""The standard figures of a KV-cache compression paper from kvscope results (docs/figures.md).

    kvscope figures R.h5 [R2.h5 ...] [--trace T.h5 ...] --out DIR
    python3 -m kvscope.figures R.h5 ... --out DIR            (the same, without the C++ program)

Every figure is written as vector PDF (fonts embedded as TrueType, pdf.fonttype 42), PNG
(300 dpi) and the CSV of the data it plots; DIR/manifest.json lists them and the figures
skipped (with the reason). A figure whose inputs lack what it needs is skipped with one line.
Policy names, colours and markers are the same in every figure. The output folder is built
in a temporary folder beside DIR and renamed into place: an error leaves no partial output.

Index:
  [style]    palette, sizes, series labels and colours
  [inputs]   loading and checking the results / traces, choosing the budget and trace
  [figures]  one function per figure: fig_<name>(ctx) -> (fig, csv rows) or a skip reason
  [main]     arguments, the temporary folder, errors as one line
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

from ._common import KvscopeError
from .results import open_results
from .trace import open_trace

# ===================================================================================== [style]
# Paul Tol's "muted" palette (colour-blind safe) for the known policies, in registry order;
# black for the uncompressed control. Unknown policies take Okabe-Ito colours by name.
POLICY_COLOURS = {
    "full": "#000000", "window": "#CC6677", "h2o": "#332288", "tova": "#DDCC77",
    "snapkv": "#117733", "pyramidkv": "#88CCEE", "adakv": "#882255", "dynamickv": "#44AA99",
    "agd": "#999933", "agacc": "#AA4499", "quant": "#777777",
}
POLICY_ORDER = list(POLICY_COLOURS)
EXTRA_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
LINESTYLES = ["-", "--", ":", "-."]
COL_W, FULL_W = 3.35, 6.9  # inches: one column / the full width of a two-column paper

FIGURES = ["quality_vs_budget", "memory_vs_quality", "layer_budget", "head_budget",
           "retention_map", "bits_over_time", "needle_heatmap", "agreement",
           "attention_received"]


def setup_style():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({
        "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType, embedded (no Type 3)
        "font.family": "DejaVu Sans", "font.size": 7, "axes.titlesize": 7,
        "axes.labelsize": 7, "xtick.labelsize": 6, "ytick.labelsize": 6,
        "legend.fontsize": 6, "legend.frameon": False, "lines.linewidth": 1.0,
        "lines.markersize": 3, "axes.linewidth": 0.6, "xtick.major.width": 0.6,
        "ytick.major.width": 0.6, "axes.spines.top": False, "axes.spines.right": False,
        "axes.grid": True, "grid.linewidth": 0.3, "grid.alpha": 0.5,
        "savefig.dpi": 300, "savefig.bbox": "tight", "savefig.pad_inches": 0.02,
        "pdf.compression": 9, "image.interpolation": "nearest",
    })
    return plt


def parse_spec(spec):
    """'h2o:budget=64,recent=32' -> ('h2o', {'budget': '64', 'recent': '32'}) (ordered)."""
    name, _, rest = spec.partition(":")
    params = {}
    for kv in rest.split(","):
        k, eq, v = kv.partition("=")
        if eq:
            params[k] = v
    return name, params


def budget_value(text):
    """('count', 256) / ('fraction', 0.2) / (None, None) for a run's budget text."""
    if not text:
        return None, None
    try:
        v = float(text)
    except ValueError:
        return None, None
    return ("fraction", v) if any(c in text for c in ".eE") else ("count", v)


class Series:
    """One line of a figure: a policy with its non-budget parameters (and mode when the set
    mixes modes). Colour by policy; variants of a policy differ by marker and line style."""

    def __init__(self, key, policy, label, colour, marker, linestyle):
        self.key, self.policy, self.label = key, policy, label
        self.colour, self.marker, self.linestyle = colour, marker, linestyle


def policy_defaults(kvscope_bin):
    """{policy: {param: default}} from `kvscope policies --json`, or None without it."""
    if not kvscope_bin:
        return None
    try:
        out = subprocess.run([kvscope_bin, "policies", "--json"], capture_output=True,
                             text=True, timeout=60)
        if out.returncode != 0:
            return None
        return {p["name"]: {q["name"]: q["default"] for q in p["params"]}
                for p in json.loads(out.stdout)}
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return None


def make_series(runs, defaults):
    """Series of every run (dict run id -> Series), labels from the parameters that differ
    from the policy's defaults (or, without the defaults, from the other runs of the policy)."""
    by_policy = {}
    for r in runs:
        by_policy.setdefault(r.policy, []).append(r)
    modes = {r.mode for r in runs}
    keys = {}
    for pol, rs in by_policy.items():
        parsed = [parse_spec(r.spec)[1] for r in rs]
        if defaults and pol in defaults:
            ref = defaults[pol]
            shown = lambda p: [(k, v) for k, v in p.items() if k != "budget" and
                               k in ref and ref[k] != v]
        else:  # the parameters that vary among this policy's runs
            varying = {k for p in parsed for k in p if k != "budget" and
                       len({q.get(k) for q in parsed}) > 1}
            shown = lambda p: [(k, v) for k, v in p.items() if k in varying]
        for r, p in zip(rs, parsed):
            extra = ",".join(f"{k}={v}" for k, v in shown(p))
            label = pol + (" " + extra if extra else "")
            if len(modes) > 1:
                label += f" ({r.mode})"
            keys[id(r)] = (pol, label)
    # Stable order: registry order, then label; colours by policy, variants by marker/style.
    uniq = sorted(set(keys.values()), key=lambda k: (
        POLICY_ORDER.index(k[0]) if k[0] in POLICY_ORDER else len(POLICY_ORDER), k[0], k[1]))
    series, variant = {}, {}
    for pol, label in uniq:
        n = variant.get(pol, 0)
        variant[pol] = n + 1
        colour = POLICY_COLOURS.get(pol) or EXTRA_COLOURS[
            sum(map(ord, pol)) % len(EXTRA_COLOURS)]
        series[(pol, label)] = Series((pol, label), pol, label, colour, MARKERS[n % len(MARKERS)],
                                      LINESTYLES[n % len(LINESTYLES)])
    order = [series[k] for k in uniq]
    return {rid: series[k] for rid, k in keys.items()}, order


# ==================================================================================== [inputs]
class Context:
    """Everything the figures read: the runs, their series, the chosen budget and trace."""

    def __init__(self, args):
        self.args = args
        if not args.results:
            raise KvscopeError("figures: no results files given")
        self.files, self.runs = [], []
        for p in args.results:
            r = open_results(p)
            if not r.runs:
                raise KvscopeError(f"results '{p}': holds no runs")
            self.files.append(r)
            self.runs.extend(r.runs)
        self._check_consistent()
        self.series_of, self.series = make_series(self.runs, policy_defaults(args.kvscope_bin))
        self.traces = [open_trace(p) for p in args.trace]
        for t in self.traces:
            if not any(self._matches(t, r) for r in self.runs):
                raise KvscopeError(
                    f"trace '{t.path}' ({t.model_name}, {t.n_tokens} tokens) matches no run of "
                    "the results given (model and token count differ)")
        self.ref_trace_path = self._reference_trace()
        self.budget = self._budget()
        self._trace_cache = {}

    @staticmethod
    def _matches(trace, run):
        return trace.model_name == run.trace_model and trace.n_tokens == run.n_tokens

    def _check_consistent(self):
        first = self.runs[0]
        seen = {}
        for r in self.runs:
            if r.trace_model != first.trace_model:
                raise KvscopeError(
                    f"results mix models: '{first.trace_model}' ({first.results.path}) and "
                    f"'{r.trace_model}' ({r.results.path}); make one set of figures per model")
            key = (r.trace_path, r.spec, r.mode, r.prefill_len)
            if key in seen:
                raise KvscopeError(
                    f"results: run '{r.spec}' on '{r.trace_path}' is in both "
                    f"{seen[key].results.path} (run {seen[key].index}) and {r.results.path} "
                    f"(run {r.index}); each run once, please")
            seen[key] = r
        by_trace = {}
        for r in self.runs:
            prev = by_trace.setdefault(r.trace_path, r)
            if (prev.n_tokens, prev.n_head_kv) != (r.n_tokens, r.n_head_kv):
                raise KvscopeError(
                    f"results: trace '{r.trace_path}' has {prev.n_tokens} tokens in "
                    f"{prev.results.path} but {r.n_tokens} in {r.results.path}: not the same "
                    "trace")

    def _reference_trace(self):
        """The trace of the per-trace figures: the first --trace, else the trace with the
        most runs (then the longest)."""
        if self.traces:
            t = self.traces[0]
            cands = [r.trace_path for r in self.runs if self._matches(t, r)]
            return max(set(cands), key=cands.count)
        count = {}
        for r in self.runs:
            count[r.trace_path] = count.get(r.trace_path, 0) + 1
        return max(count, key=lambda p: (count[p], self.run_of(p).n_tokens, p))

    def run_of(self, trace_path):
        return next(r for r in self.runs if r.trace_path == trace_path)

    def _budget(self):
        """The budget of the per-budget figures: --budget, else the one most series ran at
        (ties: the largest)."""
        budgets = {}
        for r in self.runs:
            if r.budget:
                budgets.setdefault(r.budget, set()).add(self.series_of[id(r)].key)
        if self.args.budget:
            if self.args.budget not in budgets:
                raise KvscopeError(
                    f"--budget {self.args.budget}: no run has it (budgets: "
                    f"{', '.join(sorted(budgets, key=lambda b: budget_value(b)[1])) or 'none'})")
            return self.args.budget
        if not budgets:
            return None
        return max(budgets, key=lambda b: (len(budgets[b]), budget_value(b)[1] or 0))

    def trace_for(self, trace_path):
        """An open trace for a run's trace: a --trace that matches, else the recorded path
        (as given, or relative to the results file); None when none can be opened."""
        if trace_path in self._trace_cache:
            return self._trace_cache[trace_path]
        run = self.run_of(trace_path)
        found = next((t for t in self.traces if self._matches(t, run) and
                      (len(self.traces) == 1 or
                       os.path.basename(t.path) == os.path.basename(trace_path))), None)
        if found is None:
            for p in (trace_path, os.path.join(os.path.dirname(run.results.path), trace_path)):
                if os.path.isfile(p):
                    try:
                        t = open_trace(p)
                    except KvscopeError:
                        continue
                    if self._matches(t, run):
                        found = t
                        break
        self._trace_cache[trace_path] = found
        return found

    def ref_runs(self, budget=True):
        """Runs on the reference trace at the chosen budget (and, with budget=True, the runs
        without one), one per series, in series order."""
        out = []
        for s in self.series:
            for r in self.runs:
                if (self.series_of[id(r)] is s and r.trace_path == self.ref_trace_path and
                        (r.budget == self.budget or (budget and not r.budget))):
                    out.append(r)
                    break
        return out


# =================================================================================== [figures]
class Skip(Exception):
    """A figure the inputs cannot make: the message says what is missing (one line)."""


def _legend_handles(plt, series, flat=(), points=False):
    """Legend entries: marker and line style per series; `flat` series (no budget: drawn as
    horizontal lines) dashed without a marker; `points`: markers only."""
    from matplotlib.lines import Line2D
    out = []
    for s in series:
        if s.key in flat:
            out.append(Line2D([], [], color=s.colour, linestyle=_flat_style(s), label=s.label))
        else:
            out.append(Line2D([], [], color=s.colour, marker=s.marker,
                              linestyle="none" if points else s.linestyle, label=s.label))
    return out


FLAT_STYLES = ["--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]


def _flat_style(s):
    """Line style of a series drawn as a horizontal line (no budget): dashed variants."""
    return FLAT_STYLES[LINESTYLES.index(s.linestyle) % len(FLAT_STYLES)]


def _percent_axis(ax):
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _colour_map(name="held"):
    """White (0: not held) to indigo (16 bits): lightness falls monotonically, so the map
    reads the same in grey and to colour-blind readers."""
    from matplotlib.colors import LinearSegmentedColormap
    cm = LinearSegmentedColormap.from_list(name, ["#FFFFFF", "#88CCEE", "#44AA99", "#332288",
                                                  "#1A1144"])
    cm.set_bad("0.85")
    return cm


def _grid(plt, n, ncol, panel_h, sharex=True, sharey=True):
    """n small panels in rows of ncol (constrained layout: titles and ticks never collide);
    the unused cells are hidden. Returns (fig, [ax for each panel], all axes)."""
    width = max(COL_W, FULL_W * min(ncol, n) / ncol)  # a few panels: a narrower figure
    ncol = min(ncol, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(width, 0.6 + nrow * panel_h), squeeze=False,
                             sharex=sharex, sharey=sharey, layout="constrained")
    flat = [axes[i // ncol][i % ncol] for i in range(nrow * ncol)]
    for ax in flat[n:]:
        ax.axis("off")
    for i, ax in enumerate(flat[:n]):
        if i + ncol < n:  # a panel below shows the x ticks
            ax.tick_params(labelbottom=False)
        elif sharex:
            ax.xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n], axes


def _panel_title(ax, s, extra=""):
    import textwrap
    text = s.label + extra
    ax.set_title("\n".join(textwrap.wrap(text, 26)) or text, color=s.colour, fontsize=6,
                 pad=2)


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))  # exact: the CSV is the data
    return str(v)


def fig_quality_vs_budget(ctx, plt):
    """Recall and output error against the budget, one line per policy; the band spans the
    traces (min to max), the line is their mean; policies without a budget are dashed lines."""
    kinds = {budget_value(r.budget)[0] for r in ctx.runs if r.budget}
    if not kinds:
        raise Skip("no run has a budget")
    xkind = kinds.pop() if len(kinds) == 1 else "held"
    xlabel = {"count": "KV budget (tokens per head)", "fraction": "KV budget (share of tokens)",
              "held": "tokens held per head (mean over steps)"}[xkind]
    groups = {}  # (series, budget) -> runs over traces
    for r in ctx.runs:
        groups.setdefault((ctx.series_of[id(r)].key, r.budget), []).append(r)
    metrics = [("recall_mean", "attention recall (mean)"), ("err_mean", "output error (mean)")]
    fig, axes = plt.subplots(1, 2, figsize=(FULL_W, 2.2))
    rows = []
    for s in ctx.series:
        pts = []
        for (key, b), rs in groups.items():
            if key != s.key:
                continue
            vals = {m: np.array([r.summary.get(m, np.nan) for r in rs]) for m, _ in metrics}
            x = (budget_value(b)[1] if xkind != "held" else
                 float(np.mean([r.summary.get("held_mean", np.nan) for r in rs]))) if b else None
            pts.append((x, b, rs, vals))
            for m, _ in metrics:
                rows.append({"series": s.label, "policy": s.policy, "budget": b, "x": x,
                             "metric": m, "mean": float(np.nanmean(vals[m])),
                             "min": float(np.nanmin(vals[m])), "max": float(np.nanmax(vals[m])),
                             "n_traces": len(rs)})
        for ax, (m, _) in zip(axes, metrics):
            line = sorted([p for p in pts if p[0] is not None], key=lambda p: p[0])
            flat = [p for p in pts if p[0] is None]
            if line:
                xs = [p[0] for p in line]
                mean = [np.nanmean(p[3][m]) for p in line]
                ax.plot(xs, mean, color=s.colour, marker=s.marker, linestyle=s.linestyle)
                if any(len(p[2]) > 1 for p in line):
                    ax.fill_between(xs, [np.nanmin(p[3][m]) for p in line],
                                    [np.nanmax(p[3][m]) for p in line], color=s.colour,
                                    alpha=0.18, linewidth=0)
            for p in flat:
                ax.axhline(np.nanmean(p[3][m]), color=s.colour, linestyle=_flat_style(s),
                           linewidth=0.8)
    xs_all = sorted({budget_value(r.budget)[1] for r in ctx.runs if r.budget})
    for ax, (m, yl) in zip(axes, metrics):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(yl)
        if xkind == "count":
            from matplotlib.ticker import NullFormatter
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs_all)
            ax.set_xticklabels([f"{x:g}" for x in xs_all])
            ax.xaxis.set_minor_formatter(NullFormatter())
        elif xkind == "fraction":
            ax.set_xticks(xs_all)
            ax.set_xticklabels([f"{x:.0%}" for x in xs_all])
    axes[1].set_yscale("log")
    n_tr = len({r.trace_path for r in ctx.runs})
    flat = {ctx.series_of[id(r)].key for r in ctx.runs if not r.budget} - \
        {ctx.series_of[id(r)].key for r in ctx.runs if r.budget}
    fig.legend(handles=_legend_handles(plt, ctx.series, flat), loc="upper center",
               ncol=min(6, len(ctx.series)), bbox_to_anchor=(0.5, 1.0 + 0.06 *
                                                           math.ceil(len(ctx.series) / 6)))
    fig.suptitle(f"mean over {n_tr} trace{'s' if n_tr > 1 else ''}"
                 + ("; band: min-max over traces" if n_tr > 1 else ""), y=-0.02, va="top",
                 fontsize=6)
    fig.tight_layout()
    return fig, rows


def _pareto(points, better_high):
    """Indices of the Pareto-optimal points of (memory, quality): less memory and better
    quality; a point is kept when no other is at least as good in both and better in one."""
    idx = sorted(range(len(points)), key=lambda i: (points[i][0],
                                                   -points[i][1] if better_high else points[i][1]))
    front, best = [], None
    for i in idx:
        q = points[i][1]
        if best is None or (q > best if better_high else q < best):
            front.append(i)
            best = q
    return front


def fig_memory_vs_quality(ctx, plt):
    """KV memory (share of the fp16 full cache the formats really store) against recall and
    output error, one point per configuration (mean over traces); the Pareto front dashed."""
    groups = {}
    for r in ctx.runs:
        groups.setdefault((ctx.series_of[id(r)].key, r.budget), []).append(r)
    pts = []
    for (key, b), rs in groups.items():
        ratio = np.array([r.summary.get("ratio_mean", np.nan) for r in rs])
        if not np.isfinite(ratio).any():
            continue
        mem = float(np.nanmean(100.0 / ratio))
        pts.append({"key": key, "budget": b, "memory_pct": mem,
                    "recall_mean": float(np.nanmean([r.summary.get("recall_mean", np.nan)
                                                     for r in rs])),
                    "err_mean": float(np.nanmean([r.summary.get("err_mean", np.nan)
                                                  for r in rs])),
                    "n_traces": len(rs)})
    if not pts:
        raise Skip("no run records its memory (ratio_mean)")
    by_key = {s.key: s for s in ctx.series}
    fig, axes = plt.subplots(1, 2, figsize=(FULL_W, 2.2))
    for ax, (m, yl, high) in zip(axes, [("recall_mean", "attention recall (mean)", True),
                                        ("err_mean", "output error (mean)", False)]):
        xy = [(p["memory_pct"], p[m]) for p in pts]
        front = _pareto(xy, high)
        for i, p in enumerate(pts):
            p["front_" + m] = i in front
        for p in pts:
            s = by_key[p["key"]]
            ax.plot(p["memory_pct"], p[m], marker=s.marker, color=s.colour, linestyle="none")
        fx = [xy[i][0] for i in front]
        fy = [xy[i][1] for i in front]
        ax.step(fx, fy, where="post", color="0.3", linestyle="--", linewidth=0.7, zorder=0)
        ax.set_xscale("log")
        _percent_axis(ax)
        ax.set_xlabel("KV memory (% of the fp16 full cache, mean over steps)")
        ax.set_ylabel(yl)
    axes[1].set_yscale("log")
    fig.legend(handles=_legend_handles(plt, ctx.series, points=True) + [
        plt.Line2D([], [], color="0.3", linestyle="--", label="Pareto front")],
        loc="upper center", ncol=min(6, len(ctx.series) + 1),
        bbox_to_anchor=(0.5, 1.0 + 0.06 * math.ceil((len(ctx.series) + 1) / 6)))
    fig.tight_layout()
    rows = [{"series": by_key[p["key"]].label, "budget": p["budget"],
             "memory_pct": p["memory_pct"], "recall_mean": p["recall_mean"],
             "err_mean": p["err_mean"], "pareto_recall": p["front_recall_mean"],
             "pareto_err": p["front_err_mean"], "n_traces": p["n_traces"]} for p in pts]
    return fig, rows


def _final_held(run):
    return run.held[-1].astype(np.float64)  # [layer, kv_head] at the last step


def fig_layer_budget(ctx, plt):
    """Tokens each layer holds at the last step (mean over its KV heads), at one budget, one
    line per policy: how a policy allocates its budget over depth."""
    runs = [r for r in ctx.ref_runs(budget=False) if r.budget]
    if not runs:
        raise Skip("no run has a budget")
    fig, ax = plt.subplots(figsize=(COL_W, 2.2))
    rows = []
    for r in runs:
        s = ctx.series_of[id(r)]
        h = _final_held(r)
        ax.plot(r.layers, h.mean(1), color=s.colour, marker=s.marker, linestyle=s.linestyle,
                label=s.label)
        for li, l in enumerate(r.layers):
            rows.append({"series": s.label, "budget": r.budget, "layer": int(l),
                         "held_mean_over_kv_heads": float(h[li].mean()),
                         "held_min": float(h[li].min()), "held_max": float(h[li].max()),
                         "step": int(r.steps[-1])})
    ax.set_xlabel("layer")
    ax.set_ylabel(f"tokens held per KV head at step {int(runs[0].steps[-1])}")
    ax.set_title(f"budget {ctx.budget}; {os.path.basename(ctx.ref_trace_path)}")
    ax.legend(ncol=2)
    fig.tight_layout()
    return fig, rows


def fig_head_budget(ctx, plt):
    """Tokens held by every (layer, KV head) at the last step, at one budget: one small map
    per policy (rows: KV heads, columns: layers), one colour scale."""
    runs = [r for r in ctx.ref_runs(budget=False) if r.budget]
    if not runs:
        raise Skip("no run has a budget")
    n = len(runs)
    ncol = 4
    H = runs[0].n_head_kv
    same_layers = all(np.array_equal(r.layers, runs[0].layers) for r in runs)
    fig, panels, axes = _grid(plt, n, ncol, 0.3 + 0.12 * H, sharex=same_layers)
    vmax = max(float(_final_held(r).max()) for r in runs)
    rows = []
    im = None
    for i, r in enumerate(runs):
        ax = panels[i]
        h = _final_held(r)
        im = ax.imshow(h.T, aspect="auto", cmap=_colour_map(), vmin=0, vmax=vmax,
                       extent=(-0.5, len(r.layers) - 0.5, H - 0.5, -0.5))
        _panel_title(ax, ctx.series_of[id(r)])
        ax.set_yticks(range(H))
        ax.grid(False)
        step = max(1, len(r.layers) // 6)
        ax.set_xticks(range(0, len(r.layers), step))
        ax.set_xticklabels([str(int(r.layers[k])) for k in range(0, len(r.layers), step)])
        if i % ncol == 0:
            ax.set_ylabel("KV head")
        if i + ncol >= n:
            ax.set_xlabel("layer")
        for li, l in enumerate(r.layers):
            for g in range(H):
                rows.append({"series": ctx.series_of[id(r)].label, "budget": r.budget,
                             "layer": int(l), "kv_head": g, "held": int(h[li, g]),
                             "step": int(r.steps[-1])})
    fig.colorbar(im, ax=axes, shrink=0.8, label=f"tokens held at step {int(runs[0].steps[-1])}")
    return fig, rows


def _bin_matrix(m, max_bins):
    """Mean over blocks so that neither side exceeds max_bins (NaN cells ignored); returns
    the matrix and the first index of each row / column block."""
    def edges(n):
        k = max(1, math.ceil(n / max_bins))
        return np.arange(0, n, k), k
    re, rk = edges(m.shape[0])
    ce, ck = edges(m.shape[1])
    out = np.full((len(re), len(ce)), np.nan)
    with np.errstate(invalid="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i, r0 in enumerate(re):
                block = m[r0:r0 + rk]
                pad = (-block.shape[1]) % ck
                if pad:
                    block = np.pad(block, ((0, 0), (0, pad)), constant_values=np.nan)
                out[i] = np.nanmean(block.reshape(block.shape[0], -1, ck).transpose(1, 0, 2)
                                    .reshape(len(ce), -1), axis=1)
    return out, re, ce


def fig_retention_map(ctx, plt):
    """Which tokens (x) each policy holds at each step (y), at what width: the mean over the
    units (or one unit with --unit LAYER:HEAD); white = evicted, grey = not yet seen."""
    runs = ctx.ref_runs()
    runs = [r for r in runs if r.policy != "full"][:12]
    if not runs:
        raise Skip("no compressed run on the reference trace")
    unit = ctx.args.unit
    if unit is not None:
        missing = [r.spec for r in runs if unit[0] not in r.layers.tolist()]
        if missing:
            raise Skip(f"--unit {unit[0]}:{unit[1]}: layer {unit[0]} was not replayed")
        if unit[1] >= runs[0].n_head_kv:
            raise Skip(f"--unit {unit[0]}:{unit[1]}: KV head {unit[1]} outside "
                       f"[0, {runs[0].n_head_kv})")
    n = len(runs)
    ncol = 4
    same = all(r.n_tokens == runs[0].n_tokens for r in runs)
    fig, panels, axes = _grid(plt, n, ncol, 1.55, sharex=same, sharey=same)
    cmap = _colour_map()
    rows, im = [], None
    for i, r in enumerate(runs):
        ax = panels[i]
        m = r.bits_map(*(unit if unit else (None, None)))
        b, re, ce = _bin_matrix(m, 300)
        T = r.n_tokens
        im = ax.imshow(b, aspect="auto", cmap=cmap, vmin=0, vmax=16, origin="upper",
                       extent=(0, T, int(r.steps[-1]) + 1, int(r.steps[0])))
        s = ctx.series_of[id(r)]
        _panel_title(ax, s, f" @ {r.budget}" if r.budget else "")
        ax.grid(False)
        if i + ncol >= n:
            ax.set_xlabel("token")
        if i % ncol == 0:
            ax.set_ylabel("step")
        for k, r0 in enumerate(re):
            rows.append([s.label, r.budget, int(r.steps[r0])] +
                        [_fmt(round(float(v), 3)) if np.isfinite(v) else "" for v in b[k]])
    what = (f"layer {unit[0]}, KV head {unit[1]}" if unit else
            f"mean over {runs[0].n_layers_replayed * runs[0].n_head_kv} units")
    fig.colorbar(im, ax=axes, shrink=0.6, label=f"bits held, {what}\n(0 = evicted; grey: not yet seen)")
    # CSV: one row per (series, step bin), one column per token bin (its first token).
    header = ["series", "budget", "step"] + [f"token_{int(c)}" for c in ce]
    return fig, (header, rows)


def fig_bits_over_time(ctx, plt):
    """Mean width of the held tokens (exact per step, from bit_events) and the KV bytes the
    formats store, over the steps of the reference trace, at one budget."""
    runs = ctx.ref_runs()
    if not runs:
        raise Skip("no run on the reference trace")
    fig, axes = plt.subplots(1, 2, figsize=(FULL_W, 2.1))
    rows = []
    for r in runs:
        s = ctx.series_of[id(r)]
        mb = r.mean_bits()
        mib = r.bytes.sum(axis=(1, 2)) / 2**20
        axes[0].plot(r.steps, mb, color=s.colour, linestyle=s.linestyle, label=s.label)
        axes[1].plot(r.steps, mib, color=s.colour, linestyle=s.linestyle, label=s.label)
        stride = max(1, len(r.steps) // 1000)
        for k in range(0, len(r.steps), stride):
            rows.append({"series": s.label, "budget": r.budget, "step": int(r.steps[k]),
                         "mean_bits": float(mb[k]), "kv_mib": float(mib[k]),
                         "bits_exact": r.bits_exact})
    axes[0].set_ylabel("mean bits per held token")
    axes[0].set_ylim(0, 17)
    axes[1].set_ylabel("KV cache (MiB, all layers and heads)")
    for ax in axes:
        ax.set_xlabel("step (token)")
    fig.legend(handles=_legend_handles(plt, [ctx.series_of[id(r)] for r in runs]),
               loc="upper center", ncol=min(6, len(runs)),
               bbox_to_anchor=(0.5, 1.0 + 0.06 * math.ceil(len(runs) / 6)))
    fig.suptitle(f"budget {ctx.budget}; {os.path.basename(ctx.ref_trace_path)}", y=-0.02,
                 va="top", fontsize=6)
    fig.tight_layout()
    return fig, rows


def fig_needle_heatmap(ctx, plt):
    """Passkey / needle retrieval: the share of answer tokens still held at the last step
    (replay: answer_kept), by context length (x) and depth (y), one map per policy."""
    task_runs = [r for r in ctx.runs if r.trace_task in ("passkey", "needle") and
                 r.summary.get("answer_kept", -1) >= 0 and (r.budget == ctx.budget or
                                                            not r.budget)]
    if not task_runs:
        raise Skip("no passkey / needle runs among the results")
    depth = {}
    for p in {r.trace_path for r in task_runs}:
        t = ctx.trace_for(p)
        if t is not None and "depth" in t.task:
            depth[p] = t.task["depth"]
    task_runs = [r for r in task_runs if r.trace_path in depth]
    if not task_runs:
        raise Skip("the depth of the passkey / needle traces is unknown: their trace files "
                   "are not found (give them with --trace)")
    cells, budget_of = {}, {}
    for r in task_runs:
        s = ctx.series_of[id(r)]
        budget_of[s.key] = r.budget
        cells.setdefault(s.key, {}).setdefault((r.n_tokens, depth[r.trace_path]), []).append(
            r.summary["answer_kept"])
    lengths = sorted({k[0] for c in cells.values() for k in c})
    depths = sorted({k[1] for c in cells.values() for k in c})
    series = [s for s in ctx.series if s.key in cells]
    rows = []
    for s in series:
        for (L, d), v in sorted(cells[s.key].items()):
            rows.append({"series": s.label, "budget": budget_of[s.key], "n_tokens": L,
                         "depth": d, "answer_kept": float(np.mean(v)), "n_traces": len(v)})

    def annotate(ax, m):
        for (yy, xx), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(xx, yy, f"{v:.0%}", ha="center", va="center", fontsize=5,
                        color="white" if v > 0.5 else "black")

    if len(lengths) == 1 and len(depths) == 1:
        # One length and one depth: a map per policy would be one cell each; one strip instead.
        fig, ax = plt.subplots(figsize=(COL_W, 0.4 + 0.16 * len(series)), layout="constrained")
        m = np.array([[np.mean(next(iter(cells[s.key].values())))] for s in series])
        im = ax.imshow(m, cmap=_colour_map(), vmin=0, vmax=1, aspect="auto")
        annotate(ax, m)
        ax.set_yticks(range(len(series)))
        ax.set_yticklabels([s.label + (f" @ {budget_of[s.key]}" if budget_of[s.key] else "")
                            for s in series])
        for tick, s in zip(ax.get_yticklabels(), series):
            tick.set_color(s.colour)
        ax.set_xticks([0])
        ax.set_xticklabels([f"{lengths[0]} tokens, depth {depths[0]:.2f}"])
        ax.grid(False)
        fig.colorbar(im, ax=ax, label="answer kept (replay)")
        return fig, rows
    ncol = 6
    fig, panels, axes = _grid(plt, len(series), ncol, 0.45 + 0.16 * len(depths))
    im = None
    for i, s in enumerate(series):
        ax = panels[i]
        m = np.full((len(depths), len(lengths)), np.nan)
        for (L, d), v in cells[s.key].items():
            m[depths.index(d), lengths.index(L)] = np.mean(v)
        im = ax.imshow(m, cmap=_colour_map(), vmin=0, vmax=1, aspect="auto")
        annotate(ax, m)
        _panel_title(ax, s, f" @ {budget_of[s.key]}" if budget_of[s.key] else "")
        ax.grid(False)
        ax.set_xticks(range(len(lengths)))
        ax.set_xticklabels([str(x) for x in lengths], rotation=45)
        ax.set_yticks(range(len(depths)))
        ax.set_yticklabels([f"{d:.2f}" for d in depths])
        if i % ncol == 0:
            ax.set_ylabel("depth")
        if i + ncol >= len(series):
            ax.set_xlabel("tokens")
    fig.colorbar(im, ax=axes, shrink=1.0 if len(axes) == 1 else 0.8, label="answer kept (replay)")
    return fig, rows


def fig_agreement(ctx, plt):
    """Replay against closed loop (`kvscope eval`): the same configuration's replay metric
    and its closed-loop quality, one point per configuration."""
    raise Skip("no closed-loop results (kvscope eval) among the inputs: replay results only")


def fig_attention_received(ctx, plt):
    """Attention each token receives over the whole trace (full attention, from the trace's
    q, k, lse): summed over the queries that see it, and per query; mean over heads and the
    captured layers. Answer tokens (passkey / needle) marked."""
    t = ctx.trace_for(ctx.ref_trace_path)
    if t is None:
        raise Skip(f"the trace '{ctx.ref_trace_path}' is not found (give it with --trace)")
    layers = list(t.layers)
    if ctx.args.layers:
        want = ctx.args.layers
        bad = [l for l in want if l not in layers]
        if bad:
            raise Skip(f"--layers: layer {bad[0]} was not captured in '{t.path}'")
        layers = want
    T = t.n_tokens
    acc = np.zeros(T)
    for l in layers:
        acc += t.attention_received(l)
    acc /= len(layers)
    pos = t.positions
    seen_by = np.array([(pos >= pos[j]).sum() for j in range(T)]) if T < 20000 else \
        T - np.arange(T)
    per_q = acc / np.maximum(seen_by, 1)
    ans = set(t.task.get("answer_positions", np.zeros(0, int)).tolist())
    fig, axes = plt.subplots(1, 2, figsize=(FULL_W, 2.0))
    for ax, y, yl in ((axes[0], acc, "received (sum over queries)"),
                      (axes[1], per_q, "received (per query)")):
        ax.plot(np.arange(T), y, color="#332288", linewidth=0.5)
        ax.set_yscale("log")
        ax.set_xlabel("token")
        ax.set_ylabel("attention " + yl.replace(" (", "\n("))
        if t.prompt_len < T:
            ax.axvline(t.prompt_len, color="0.4", linestyle=":", linewidth=0.7)
        if ans:
            a = sorted(ans)
            ax.plot(a, y[a], linestyle="none", marker="o", color="#CC6677", markersize=2.5,
                    label=f"{t.task['kind']} answer")
            ax.legend()
    fig.suptitle(f"{os.path.basename(t.path)}: mean over {t.n_head} heads x {len(layers)} "
                 "layers" + ("; dotted: end of prompt" if t.prompt_len < T else ""),
                 y=-0.02, va="top", fontsize=6)
    fig.tight_layout()
    text = [x for x in t.tokens()["text"]]
    rows = [{"token": j, "text": text[j], "received_sum": float(acc[j]),
             "received_per_query": float(per_q[j]), "answer": int(j in ans)} for j in range(T)]
    return fig, rows


FIGURE_FUNCS = {name: globals()["fig_" + name] for name in FIGURES}


# ====================================================================================== [main]
def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if isinstance(rows, tuple):  # (header, rows)
            w.writerow(rows[0])
            w.writerows(rows[1])
            return
        if not rows:
            return
        w.writerow(list(rows[0]))
        for r in rows:
            w.writerow([_fmt(v) for v in r.values()])


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="kvscope figures",
        description="The standard figures of a KV-cache compression paper from kvscope "
                    "results: vector PDF + PNG + the CSV of the data, in DIR (docs/figures.md).")
    p.add_argument("results", nargs="*", help="results files (kvscope replay / sweep / merge)")
    p.add_argument("--trace", action="append", default=[],
                   help="trace file (repeatable) for the figures that read a trace; default: "
                        "the traces the results name, when found")
    p.add_argument("-o", "--out", required=True, help="output folder (replaced as a whole)")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(FIGURES)}")
    p.add_argument("--budget", default="",
                   help="budget of the per-budget figures (default: the one most policies ran at)")
    p.add_argument("--unit", default="", help="retention map of one unit LAYER:KV_HEAD "
                                              "(default: the mean over all units)")
    p.add_argument("--layers", default="", help="attention_received: layers to average "
                                                "(default: every captured layer), e.g. 0,7,29")
    p.add_argument("--kvscope-bin", default=os.environ.get("KVSCOPE_BIN", ""),
                   help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    def error(msg):
        raise KvscopeError(f"figures: {msg}")
    p.error = error
    a = p.parse_args(argv)
    a.only = [x for x in a.only.split(",") if x]
    for x in a.only:
        if x not in FIGURES:
            raise KvscopeError(f"figures: --only: unknown figure '{x}' (valid: "
                               f"{', '.join(FIGURES)})")
    if a.unit:
        try:
            l, h = a.unit.split(":")
            a.unit = (int(l), int(h))
        except ValueError:
            raise KvscopeError(f"figures: --unit must be LAYER:KV_HEAD (got '{a.unit}')")
    else:
        a.unit = None
    try:
        a.layers = [int(x) for x in a.layers.split(",") if x]
    except ValueError:
        raise KvscopeError(f"figures: --layers must be a list like 0,7,29 (got '{a.layers}')")
    return a


def prepare_out(out):
    """The temporary folder to write into; checks that `out` may be replaced."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise KvscopeError(f"figures: output folder '{out}': its parent does not exist")
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise KvscopeError(f"figures: output '{out}' exists and is not a folder")
        entries = os.listdir(out)
        man = os.path.join(out, "manifest.json")
        ours = False
        if os.path.isfile(man):
            try:
                ours = json.load(open(man)).get("generator") == "kvscope figures"
            except (OSError, ValueError, AttributeError):
                ours = False
        if entries and not ours:
            raise KvscopeError(f"figures: output folder '{out}' exists and does not hold "
                               "kvscope figures (no manifest.json): not replacing it")
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)
    return out, tmp


def run(argv):
    a = parse_args(argv)
    ctx = Context(a)
    out, tmp = prepare_out(a.out)
    try:
        plt = setup_style()
        written, skipped = [], []
        for name in FIGURES:
            if a.only and name not in a.only:
                continue
            try:
                fig, rows = FIGURE_FUNCS[name](ctx, plt)
            except Skip as e:
                skipped.append({"figure": name, "reason": str(e)})
                if not a.quiet:
                    print(f"skipped {name}: {e}")
                continue
            for ext in ("pdf", "png"):
                fig.savefig(os.path.join(tmp, f"{name}.{ext}"))
            plt.close(fig)
            write_csv(os.path.join(tmp, f"{name}.csv"), rows)
            written.append({"figure": name, "files": [f"{name}.pdf", f"{name}.png",
                                                      f"{name}.csv"],
                            "about": " ".join(FIGURE_FUNCS[name].__doc__.split())})
            if not a.quiet:
                print(f"figure  {os.path.join(a.out, name)}.{{pdf,png,csv}}")
        manifest = {"generator": "kvscope figures", "results": [f.path for f in ctx.files],
                    "traces": [t.path for t in ctx.traces], "budget": ctx.budget,
                    "reference_trace": ctx.ref_trace_path,
                    "series": [{"label": s.label, "policy": s.policy, "colour": s.colour,
                                "marker": s.marker} for s in ctx.series],
                    "figures": written, "skipped": skipped}
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
        old = None
        if os.path.exists(out):
            old = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.old-{os.getpid()}")
            os.rename(out, old)
        os.rename(tmp, out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not a.quiet:
        print(f"{len(written)} figures in {a.out} ({len(skipped)} skipped; see manifest.json)")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except KvscopeError as e:
        print(f"kvscope: error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"kvscope: error: figures need matplotlib, h5py and numpy for {sys.executable} "
              f"(Debian: python3-matplotlib python3-h5py): {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kvscope: error: figures: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line unless KVSCOPE_DEBUG is set
        if os.environ.get("KVSCOPE_DEBUG"):
            raise
        print(f"kvscope: error: figures: internal error: {type(e).__name__}: {e} "
              "(KVSCOPE_DEBUG=1 shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
