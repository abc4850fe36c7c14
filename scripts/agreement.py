#!/usr/bin/env python3
"""Does replay (open loop) predict the closed loop? Regenerates docs/agreement.md.

For each text: capture its uncompressed trace, replay every policy x budget on it (kvscope
sweep, prefill mode), run the same specs with the compressed cache in the loop (kvscope eval
--task ppl, same window, same prompt length), then compute Spearman rank correlations between
replay's metrics and the closed loop's (KL to the full model, delta perplexity, top-1
disagreement), per text and pooled, and draw the scatter plots.

  /usr/bin/python3 scripts/agreement.py [--ctx 1024] [--prefill-len 512] [--texts A B C]

Needs a release build (scripts/setup.sh) and Debian's python3-numpy, -h5py, -matplotlib.
"""
import argparse
import json
import os
import sys
import time

import h5py
import numpy as np

from studylib import KVS, ROOT, TEXTS, policy_args, run, write_window
from studylib import commit as git_commit

POLICIES = ["window", "h2o", "tova", "snapkv", "pyramidkv", "adakv", "agd", "agacc"]
QUANT = ["quant:bits=4", "quant:bits=2", "quant:format=q8_0,residual=0"]


def ranks(x):
    x = np.asarray(x, float)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):  # average ranks of ties
        m = x == v
        r[m] = r[m].mean()
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    d = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / d) if d > 0 else float("nan")


def layer_errors(results_path):
    """Per run spec: out_rel_err mean over steps and heads, per replayed layer."""
    out = {}
    with h5py.File(results_path, "r") as f:
        for k in sorted(f["runs"].keys()):
            g = f["runs"][k]
            spec = g.attrs["spec"]
            spec = spec.decode() if isinstance(spec, bytes) else str(spec)
            e = np.asarray(g["out_rel_err"], np.float64)  # [S, L, Hkv]
            out[spec] = e.mean(axis=(0, 2))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--prefill-len", type=int, default=512)
    ap.add_argument("--budgets", default="64,128,256")
    ap.add_argument("--texts", nargs="*", default=TEXTS)
    ap.add_argument("--work", default=os.path.join(ROOT, "out", "agreement"))
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "agreement.md"))
    ap.add_argument("--replot", action="store_true",
                    help="rewrite the page and plot from WORK/agreement.json (no runs)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    specs = policy_args(POLICIES + QUANT)
    rows = []  # one per (text, spec)
    timing = []
    if a.replot:
        with open(os.path.join(a.work, "agreement.json")) as f:
            saved = json.load(f)
        rows, timing = saved["rows"], saved["timing"]
        commit, date = saved["commit"], saved["date"]
    else:
        commit = git_commit()
        date = time.strftime("%Y-%m-%d")
    for text in ([] if a.replot else a.texts):
        name = os.path.splitext(os.path.basename(text))[0]
        # The window the closed loop scores: the text's first ctx tokens.
        snippet = os.path.join(a.work, name + ".txt")
        write_window(text, 12 * a.ctx, snippet)  # the same text goes to both sides
        trace = os.path.join(a.work, name + ".h5")
        res = os.path.join(a.work, name + ".results.h5")
        print(f"[agreement] {name}: capture, replay, closed loop", file=sys.stderr)
        _, t_cap = run([KVS, "capture", "--text-file", snippet, "--ctx", str(a.ctx), "--out", trace,
                        "--quiet"])
        rep, t_rep = run([KVS, "sweep", trace, "--mode", "prefill", "--prefill-len",
                          str(a.prefill_len), "--budgets", a.budgets, "--checkpoints", "0",
                          "--out", res, "--json", "--quiet", "--policy", "full"] + specs)
        ev, t_ev = run([KVS, "eval", "--task", "ppl", "--text-file", snippet, "--ctx", str(a.ctx),
                        "--max-windows", "1", "--mode", "prefill", "--prefill-len",
                        str(a.prefill_len), "--budgets", a.budgets, "--json", "--quiet"] + specs)
        timing.append((name, t_cap, t_rep, t_ev))
        rep = {r["spec"]: r for r in json.loads(rep)}
        ev = {r["spec"]: r for r in json.loads(ev)}
        lerr = layer_errors(res)
        for spec, e in ev.items():
            if spec not in rep:
                raise SystemExit(f"agreement: spec {spec} missing from the replay")
            r = rep[spec]
            le = lerr[spec]
            rows.append({"text": name, "spec": spec, "policy": e["policy"], "budget": e["budget"],
                         "recall": r["recall_mean"], "err": r["err_mean"],
                         "err_last": float(le[-1]), "err_late": float(le[len(le) * 2 // 3:].mean()),
                         "err_max_layer": float(le.max()),
                         "kl": e["kl_mean"], "dppl": e["delta_ppl"],
                         "top1_miss": 1 - e["top1_agree"], "ppl": e["ppl"],
                         "rep_s": r["seconds"], "ev_s": e["seconds"]})
    with open(os.path.join(a.work, "agreement.json"), "w") as f:
        json.dump({"rows": rows, "timing": timing, "commit": commit, "date": date}, f, indent=1)

    replay_metrics = [("1 - recall", lambda r: 1 - r["recall"]), ("out err (mean)", lambda r: r["err"]),
                      ("out err, last layer", lambda r: r["err_last"]),
                      ("out err, last third of layers", lambda r: r["err_late"]),
                      ("out err, worst layer", lambda r: r["err_max_layer"])]
    loop_metrics = [("KL(full || compressed)", "kl"), ("delta ppl", "dppl"),
                    ("top-1 disagreement", "top1_miss")]
    comp = [r for r in rows if r["policy"] != "full"]
    texts = sorted({r["text"] for r in comp})

    def table():
        lines = ["| replay metric | closed-loop metric | " + " | ".join(texts) + " | pooled |",
                 "|---|---|" + "---|" * (len(texts) + 1)]
        best = {}
        for rn, rf in replay_metrics:
            for ln, lk in loop_metrics:
                per = [spearman([rf(r) for r in comp if r["text"] == t],
                                [r[lk] for r in comp if r["text"] == t]) for t in texts]
                pooled = spearman([rf(r) for r in comp], [r[lk] for r in comp])
                lines.append(f"| {rn} | {ln} | " + " | ".join(f"{x:.3f}" for x in per) +
                             f" | {pooled:.3f} |")
                best[(rn, ln)] = (np.mean(per), pooled)
        return lines, best

    lines, best = table()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.4))
    marks = {"window": "o", "h2o": "s", "tova": "^", "snapkv": "v", "pyramidkv": "<",
             "adakv": ">", "agd": "D", "agacc": "P", "quant": "X"}
    colors = dict(zip(texts, ["#0072B2", "#D55E00", "#009E73"]))
    for ax, (xn, xf) in zip(axes, [replay_metrics[1], replay_metrics[0], replay_metrics[3]]):
        for r in comp:
            ax.scatter(xf(r), max(r["kl"], 1e-5), marker=marks.get(r["policy"], "o"),
                       color=colors[r["text"]], s=22, alpha=0.8)
        ax.set_xlabel(f"replay: {xn}")
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("closed loop: KL(full || compressed)")
    handles = [axes[2].scatter([], [], color=colors[t], label=t.replace("_", " ")) for t in texts]
    handles += [axes[2].scatter([], [], color="gray", marker=m, label=p) for p, m in marks.items()]
    fig.legend(handles=handles, fontsize=7, loc="center right", frameon=False)
    axes[1].set_title("(quant: recall 1, not drawn)", fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    img = os.path.join(ROOT, "docs", "img", "agreement.png")
    fig.savefig(img, dpi=130)

    # The report.
    rho_err_kl = best[("out err (mean)", "KL(full || compressed)")]
    top = max(best.items(), key=lambda kv: kv[1][1] if kv[0][1].startswith("KL") else -9)
    ev_total = sum(r["ev_s"] for r in comp)
    rep_total = sum(r["rep_s"] for r in comp)
    doc = [
        "# Does replay predict the closed loop?",
        "",
        f"Regenerate: `/usr/bin/python3 scripts/agreement.py` (~20 min on 2 cores with nothing "
        f"else running; measured {date} at commit `{commit}`, 2-core Debian 12 VM, "
        "SmolLM2-135M-Instruct Q4_1, policies at their published defaults, docs/policies.md).",
        "",
        f"Setup: {len(texts)} corpus texts (public domain, `shared/corpus`), one window of "
        f"{a.ctx} tokens each; prefill mode, prompt = the first {a.prefill_len} tokens, "
        f"compressed once, then the remaining {a.ctx - a.prefill_len} tokens decoded one at a time "
        f"with the compressed cache. {len(POLICIES)} policies x budgets {a.budgets} + "
        f"{len(QUANT)} quantizations = {len(comp) // max(1, len(texts))} runs per text.",
        "",
        "- **Replay (open loop)**: `kvscope sweep` on the uncompressed trace of the same window, "
        "every layer and KV head; each layer as if the layers below were exact.",
        "- **Closed loop**: `kvscope eval --task ppl`: the same policy objects on the engine's "
        "compressed cache; the errors compound through the layers. Scored: the predictions made "
        "after the compression (positions P .. ctx-2). KL(full || compressed) of the next-token "
        "distributions, mean over scored tokens; delta ppl = ppl(compressed) - ppl(full).",
        "",
        "## Spearman rank correlation (per text, and pooled over all runs)",
        "",
    ] + lines + [
        "",
        f"Headline: replay's mean output error vs closed-loop KL: mean over texts "
        f"{rho_err_kl[0]:.3f}, pooled {rho_err_kl[1]:.3f} (target 0.9). Best replay predictor "
        f"of KL (pooled): **{top[0][0]}** ({top[1][1]:.3f}).",
        "",
        "![replay vs closed loop](img/agreement.png)",
        "",
        "Where they disagree, and why:",
        "",
        "- **Recall is blind to quantization.** The quant runs keep every token (recall 1) and "
        "the seeds' mixed-precision policies keep most of the attention mass (agd 0.81-0.93, "
        "agacc 0.70-0.88), yet agd has the largest KL of all (1.15-1.32) and agacc a large one "
        "(0.38-0.71): their 2-bit tokens. Recall ranks the eviction policies sensibly but cannot "
        "place a lossy store; output error, which sees both the missing mass and the "
        "quantization noise, can (agd's replay error, ~0.8, is the largest too).",
        "- **Compounding.** Errors grow through the layers in the closed loop; the layers that "
        "feed the logits matter most: the output error of the last third of the layers predicts "
        "KL better than the mean over all layers, while the last layer alone or the worst layer "
        "predicts worse (one layer is a noisy sample; the worst layer is often an early one "
        "whose error the model absorbs).",
        "- **Budget direction of agacc.** agacc's KL grows with its budget (it holds more "
        "tokens, more of them at 2 bits); replay's output error grows with it too, so the "
        "ranking holds.",
        "",
        "## The runs",
        "",
        "| text | spec | replay recall | replay err | err last layer | KL | delta ppl | top-1 miss |",
        "|---|---|---|---|---|---|---|---|",
    ] + [f"| {r['text']} | `{r['spec']}` | {r['recall']:.4f} | {r['err']:.4f} | {r['err_last']:.4f} | "
         f"{r['kl']:.4f} | {r['dppl']:+.3f} | {r['top1_miss']:.3f} |" for r in rows] + [
        "",
        "## Time",
        "",
        f"Replay of all {len(comp)} compressed runs: {rep_total:.1f} s; the same runs in the closed "
        f"loop: {ev_total:.1f} s ({ev_total / max(rep_total, 1e-9):.1f}x). Per text (capture, "
        "sweep, eval, wall seconds): " + "; ".join(f"{n} {c:.1f} / {r:.1f} / {e:.1f}"
                                                  for n, c, r, e in timing) + ".",
        "",
    ]
    with open(a.doc, "w") as f:
        f.write("\n".join(doc))
    print(f"[agreement] wrote {a.doc} and {img}", file=sys.stderr)


if __name__ == "__main__":
    main()
