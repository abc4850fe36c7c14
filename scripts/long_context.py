#!/usr/bin/env python3
"""Long contexts (issue 14): peak memory of capture, replay, eval and the viewer against the
number of tokens, fitted, and the viewer's frame rate while panning.

For each length N: capture a passkey trace of N tokens (the model's limit less the 16 generated
tokens at most), replay every policy on it at one budget (stream mode, one process per spec),
run `kvscope eval --task ppl --ctx N --max-windows 1` with one or two specs, and open the trace
in kvscope-view under Xvfb with `--bench-pan`. Peak RSS comes from `/usr/bin/time -v`. Then a
least-squares fit RSS = a + b N per command, the quadratic coefficient of a + b N + c N^2, and
the growth ratio (RSS(N4) - RSS(N3)) / (RSS(N3) - RSS(N2)) of the last three lengths: about 2
for doubling lengths when memory is linear in N, about 4 when it is quadratic.

  /usr/bin/python3 scripts/long_context.py [--lengths 1024,2048,4096,8192] [--budget 256]
      [--slow-from 8192 --slow SPEC ...] [--csv out.csv] [--scratch DIR] [--quiet]

Needs kvscope and kvscope-view (--kvscope, --viewer; default the release build), GNU time
(/usr/bin/time), xvfb-run, and Debian's python3-h5py. Traces go to --scratch (large: ~80 MB
per 1000 tokens at f16 / gzip:1; they are kept).
"""
import argparse
import csv
import os
import re
import subprocess
import sys
import time

import h5py

from studylib import KVS, ROOT, commit

VIEW = os.path.join(ROOT, "build", "release", "viewer", "kvscope-view")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
TEXT = os.path.join(ROOT, "..", "shared", "corpus", "pride_and_prejudice.txt")
N_CTX = 8192   # SmolLM2's n_ctx_train
GENERATE = 16  # capture --task passkey's default


def specs(b):
    """Every policy of `kvscope policies` at budget b (kmeans at b entries after a pruning, in
    its defaults' proportions, as scripts/seeds_study.py), full, and three quantizations."""
    budgeted = ["window", "h2o", "tova", "snapkv", "pyramidkv", "adakv", "dynamickv", "composite",
                "knorm", "keydiff", "agd", "agacc"]
    return (["full"] + [f"{p}:budget={b}" for p in budgeted] +
            [f"kmeans:max_cache_size={b * 4 // 5},num_clusters={b // 5},"
             f"pruning_interval={b * 2 // 5},lookback_window={b // 5}",
             "quant:bits=4", "quant:bits=2", "quant:format=q8_0,residual=0"])


class Runner:
    def __init__(self, quiet):
        self.quiet = quiet

    def log(self, msg):
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def timed(self, args, scratch, env=None, wrap=None):
        """Runs args under /usr/bin/time -v (inside `wrap`, e.g. xvfb-run, so that only the
        command is measured); returns (peak RSS in MiB, wall seconds, stdout)."""
        tfile = os.path.join(scratch, "time.txt")
        cmd = (wrap or []) + ["/usr/bin/time", "-v", "-o", tfile] + args
        e = dict(os.environ, OMP_NUM_THREADS="1")
        e.update(env or {})
        t0 = time.time()
        p = subprocess.run(["nice", "-n", "10"] + cmd, capture_output=True, text=True, env=e)
        wall = time.time() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
        with open(tfile) as f:
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
        return int(m.group(1)) / 1024.0, wall, p.stdout


def fit_line(xs, ys):
    """Least squares y = a + b x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def solve3(m, v):
    """Solves the 3x3 system m z = v (Cramer's rule)."""
    def det(a):
        return (a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
                a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
                a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]))
    d = det(m)
    out = []
    for j in range(3):
        mj = [[v[i] if k == j else m[i][k] for k in range(3)] for i in range(3)]
        out.append(det(mj) / d)
    return out


def fit_quad(xs, ys):
    """Least squares y = a + b x + c x^2 (x in thousands of tokens for conditioning)."""
    ks = [x / 1000.0 for x in xs]
    s = [sum(k ** p for k in ks) for p in range(5)]
    t = [sum(y * k ** p for k, y in zip(ks, ys)) for p in range(3)]
    a, b, c = solve3([[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]], t)
    return a, b / 1000.0, c / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="1024,2048,4096,8192",
                    help="token counts (a passkey capture is cut to the model's limit less the "
                    "generated tokens)")
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--eval-policy", action="append",
                    help="spec for kvscope eval (repeatable; default h2o:budget=B)")
    ap.add_argument("--eval-mode", default="stream")
    ap.add_argument("--slow", action="append", default=[],
                    help="replay spec skipped at lengths >= --slow-from (repeatable)")
    ap.add_argument("--slow-from", type=int, default=1 << 30)
    ap.add_argument("--frames", type=int, default=300, help="viewer --bench-pan frames")
    ap.add_argument("--kvscope", default=KVS)
    ap.add_argument("--viewer", default=VIEW)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--text", default=TEXT, help="eval's text")
    ap.add_argument("--scratch", default="/tmp/kvscope_long_context")
    ap.add_argument("--csv", help="also write one row per (command, N) here")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.scratch, exist_ok=True)
    r = Runner(a.quiet)
    lengths = [int(x) for x in a.lengths.split(",")]
    eval_specs = a.eval_policy or [f"h2o:budget={a.budget}"]
    rows = []  # dict(cmd, n, tokens, rss, wall, note)
    csv_f = open(a.csv, "w", newline="") if a.csv else None
    cw = csv.writer(csv_f) if csv_f else None
    if cw:
        cw.writerow(["command", "n", "tokens", "peak_rss_mib", "wall_s", "note"])

    def add(cmd, n, tokens, rss, wall, note=""):
        rows.append(dict(cmd=cmd, n=n, tokens=tokens, rss=rss, wall=wall, note=note))
        r.log(f"  {cmd} @ {n}: {rss:.0f} MiB, {wall:.1f} s {note}")
        if cw:
            cw.writerow([cmd, n, tokens, f"{rss:.1f}", f"{wall:.1f}", note])
            csv_f.flush()

    t_all = time.time()
    for n in lengths:
        ctx = min(n, N_CTX - GENERATE)
        trace = os.path.join(a.scratch, f"passkey{n}.h5")
        r.log(f"N = {n}: capture --task passkey --ctx {ctx}")
        rss, wall, _ = r.timed([a.kvscope, "capture", "-m", a.model, "--task", "passkey",
                                "--ctx", str(ctx), "--seed", "7", "-o", trace, "-q"], a.scratch)
        with h5py.File(trace, "r") as f:
            tokens = int(f.attrs["n_tokens"])
        add("capture", n, tokens, rss, wall)
        res = os.path.join(a.scratch, "replay.h5")
        for s in specs(a.budget):
            if s in a.slow and n >= a.slow_from:
                r.log(f"  replay {s} @ {n}: skipped (--slow)")
                continue
            rss, wall, _ = r.timed([a.kvscope, "replay", trace, "--policy", s, "--threads", "1",
                                    "-o", res, "-q"], a.scratch)
            add(f"replay {s}", n, tokens, rss, wall)
        for s in eval_specs:
            rss, wall, _ = r.timed([a.kvscope, "eval", "-m", a.model, "--task", "ppl", "-f",
                                    a.text, "--ctx", str(n), "--max-windows", "1", "--mode",
                                    a.eval_mode, "--policy", s, "-q"], a.scratch)
            add(f"eval {a.eval_mode} {s}", n, n, rss, wall)
        rss, wall, out = r.timed([a.viewer, trace, "--bench-pan", str(a.frames),
                                  "--no-settings"], a.scratch,
                                 wrap=["xvfb-run", "-a", "-s", "-screen 0 1920x1200x24"])
        m = re.search(r"= ([\d.]+) frames/s", out)
        add("viewer", n, tokens, rss, wall, f"{m.group(1)} frames/s" if m else "no bench line")
    if csv_f:
        csv_f.close()
    r.log(f"done in {time.time() - t_all:.0f} s")

    # Table: one row per command, one column per N, then the fits.
    cmds = list(dict.fromkeys(x["cmd"] for x in rows))
    by = {(x["cmd"], x["n"]): x for x in rows}
    toks = {x["n"]: x["tokens"] for x in rows if x["cmd"] == "capture"}
    print(f"Peak RSS (MiB) at commit {commit()}; N = "
          + ", ".join(f"{n} ({toks.get(n, n)} tokens in the trace)" for n in lengths) + "\n")
    head = ["command"] + [f"N={n}" for n in lengths] + \
        ["fit a (MiB)", "fit b (KiB/token)", "quad c (B/token^2)", "growth ratio"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for c in cmds:
        pts = [(by[(c, n)]["tokens"], by[(c, n)]["rss"]) for n in lengths if (c, n) in by]
        cells = [f"{by[(c, n)]['rss']:.0f}" if (c, n) in by else "-" for n in lengths]
        fit = ["-"] * 4
        if len(pts) >= 2:
            fa, fb = fit_line([p[0] for p in pts], [p[1] for p in pts])
            fit[0], fit[1] = f"{fa:.0f}", f"{fb * 1024:.1f}"
        if len(pts) >= 3:
            _, _, qc = fit_quad([p[0] for p in pts], [p[1] for p in pts])
            fit[2] = f"{qc * 1024 * 1024:.4f}"
            (_, y2), (_, y3), (_, y4) = pts[-3:]
            fit[3] = f"{(y4 - y3) / (y3 - y2):.2f}" if y3 != y2 else "-"
        print("| " + " | ".join([f"`{c}`"] + cells + fit) + " |")
    fps = [(n, by[("viewer", n)]["note"]) for n in lengths if ("viewer", n) in by]
    if fps:
        print("\nViewer `--bench-pan " + str(a.frames) + "`: "
              + "; ".join(f"N={n}: {v}" for n, v in fps))


if __name__ == "__main__":
    main()
