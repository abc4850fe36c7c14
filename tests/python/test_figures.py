#!/usr/bin/env python3
"""`kvscope figures` end to end: every figure as PDF (TrueType fonts embedded) + PNG + CSV, the
CSVs hold the numbers of the results (recomputed here with the reader), the skipped figures
say why, policy colours are stable across calls, and bad input gives one line, a non-zero exit
and no output folder (nor a temporary one left behind).
Usage: test_figures.py KVSCOPE FIXTURE_DIR FIXTURES   (exit 77 = skipped: no matplotlib)"""
import csv, json, os, shutil, struct, subprocess, sys, tempfile

try:
    import h5py, numpy as np, matplotlib  # noqa: F401
except ImportError as e:
    print(f"{e}: skipped (Debian: python3-matplotlib python3-h5py)"); sys.exit(77)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import kvscope

kvs, fx, fixtures = sys.argv[1:4]
tmp = tempfile.mkdtemp()
fails = 0
P = lambda name: os.path.join(fx, name)


def check(cond, what):
    global fails
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails += 1


def figures(*args):
    return subprocess.run([kvs, "figures", *args], capture_output=True, text=True)


def rows(path):
    return list(csv.DictReader(open(path)))


out = os.path.join(tmp, "figs")
p = figures(P("sweep.h5"), P("window.h5"), "--trace", P("pk.h5"), "--trace", P("text.h5"),
            "--out", out)
check(p.returncode == 0 and not p.stderr, f"kvscope figures: exit {p.returncode} {p.stderr.strip()[:300]}")
if p.returncode != 0:
    sys.exit(1)
made = ["quality_vs_budget", "memory_vs_quality", "layer_budget", "head_budget", "retention_map",
        "bits_over_time", "needle_heatmap", "attention_received"]
ok = all(os.path.getsize(os.path.join(out, f"{n}.{e}")) > 0 for n in made for e in ("pdf", "png", "csv"))
check(ok, f"{len(made)} figures x (pdf, png, csv)")
man = json.load(open(os.path.join(out, "manifest.json")))
check([f["figure"] for f in man["figures"]] == made and
      [s["figure"] for s in man["skipped"]] == ["agreement"] and
      "skipped agreement: no closed-loop results" in p.stdout,
      "agreement skipped with a one-line note (no closed-loop results)")
# Vector PDF, fonts embedded as TrueType (pdf.fonttype 42), no Type 3.
pdfs_ok = []
for n in made:
    b = open(os.path.join(out, f"{n}.pdf"), "rb").read()
    pdfs_ok.append(b.startswith(b"%PDF") and b"/FontFile2" in b and b"/Type3" not in b)
check(all(pdfs_ok), "every PDF embeds its fonts as TrueType (no Type 3)")
widths = []
for n in made:
    b = open(os.path.join(out, f"{n}.png"), "rb").read(24)
    widths.append(struct.unpack(">II", b[16:24]) if b[:8] == b"\x89PNG\r\n\x1a\n" else (0, 0))
check(all(0 < w <= 7.3 * 300 and 0 < h <= 9 * 300 for w, h in widths),
      f"PNGs fit a two-column page at 300 dpi (widths {sorted(w for w, _ in widths)[-1]} px max)")

# --- the CSVs hold the results' numbers -------------------------------------------------------
runs = list(kvscope.open_results(P("sweep.h5"))) + list(kvscope.open_results(P("window.h5")))
q = rows(os.path.join(out, "quality_vs_budget.csv"))
worst = 0.0
for row in q:
    if row["series"] in ("h2o", "snapkv", "window", "agd") and row["metric"] == "recall_mean":
        vals = [r.summary["recall_mean"] for r in runs if r.policy == row["series"] and r.budget == row["budget"]]
        worst = max(worst, abs(float(row["mean"]) - np.mean(vals)), abs(float(row["min"]) - min(vals)))
check(len(q) > 0 and worst < 1e-9 and {r["series"] for r in q} >= {"full", "quant bits=2", "pyramidkv"},
      f"quality_vs_budget.csv: mean / min over both traces of every policy's recall ({worst:.1e})")
m = rows(os.path.join(out, "memory_vs_quality.csv"))
pts = [(float(r["memory_pct"]), float(r["err_mean"]), r["pareto_err"] == "True") for r in m]
dominated = lambda i: any(x <= pts[i][0] and y <= pts[i][1] and (x < pts[i][0] or y < pts[i][1])
                          for k, (x, y, _) in enumerate(pts) if k != i)
check(len(pts) == 12 and all(f == (not dominated(i)) for i, (_, _, f) in enumerate(pts)),
      f"memory_vs_quality.csv: {sum(f for *_, f in pts)} of {len(pts)} on the error Pareto front, "
      "exactly the undominated ones")
lb = rows(os.path.join(out, "layer_budget.csv"))
ref = man["reference_trace"]
pyr = next(r for r in runs if r.policy == "pyramidkv" and r.budget == man["budget"] and r.trace_path == ref)
want = pyr.held[-1].mean(1)
got = [float(r["held_mean_over_kv_heads"]) for r in lb if r["series"] == "pyramidkv"]
check(np.allclose(got, want) and len(set(np.round(want))) > 1,
      f"layer_budget.csv: pyramidkv's tokens per layer at the last step {np.round(want, 1).tolist()}")
bo = rows(os.path.join(out, "bits_over_time.csv"))
agd = next(r for r in runs if r.policy == "agd" and r.budget == man["budget"] and r.trace_path == ref)
sample = [r for r in bo if r["series"] == "agd"][150]
b = agd.bits_at(int(sample["step"]))
check(abs(float(sample["mean_bits"]) - b[b > 0].mean()) < 1e-6 and float(sample["mean_bits"]) < 16,
      f"bits_over_time.csv: agd at step {sample['step']}: {float(sample['mean_bits']):.3f} bits "
      "== bits_at() over the held tokens")
nh = rows(os.path.join(out, "needle_heatmap.csv"))
full = [r for r in nh if r["series"] == "full"]
h2o = next(r for r in nh if r["series"] == "h2o")
h2o_run = next(r for r in runs if r.policy == "h2o" and r.budget == man["budget"] and r.trace_task == "passkey")
check(len(full) == 1 and float(full[0]["answer_kept"]) == 1.0 and full[0]["depth"] == "0.4" and
      abs(float(h2o["answer_kept"]) - h2o_run.summary["answer_kept"]) < 1e-9,
      "needle_heatmap.csv: answer kept per policy at the passkey trace's length and depth 0.4")
ar = rows(os.path.join(out, "attention_received.csv"))
total = sum(float(r["received_sum"]) for r in ar)
check(len(ar) == 245 and abs(total - 245) < 0.01 * 245 and sum(int(r["answer"]) for r in ar) == 5,
      f"attention_received.csv: received attention sums to the 245 queries ({total:.1f}); 5 answer tokens")
rm = rows(os.path.join(out, "retention_map.csv"))
check(len(rm) > 0 and set(rm[0]) >= {"series", "step", "token_0"}, "retention_map.csv: step x token bins")

# --- colours stable across calls; --only, --budget, --unit ------------------------------------
out2 = os.path.join(tmp, "figs2")
p2 = figures(P("window.h5"), "--only", "quality_vs_budget,retention_map", "--budget", "32",
             "--unit", "7:1", "--out", out2, "-q")
man2 = json.load(open(os.path.join(out2, "manifest.json"))) if p2.returncode == 0 else {"series": [], "figures": []}
col = lambda m, pol: next((s["colour"] for s in m["series"] if s["policy"] == pol), None)
check(p2.returncode == 0 and p2.stdout == "" and col(man, "window") == col(man2, "window") is not None and
      [f["figure"] for f in man2["figures"]] == ["quality_vs_budget", "retention_map"] and
      len(os.listdir(out2)) == 7, f"window has the same colour with other inputs ({col(man2, 'window')}); "
      "--only, --budget, --unit, -q")
# Replacing a figures folder: stale files go.
open(os.path.join(out2, "stale.png"), "w").write("x")
p3 = figures(P("window.h5"), "--only", "quality_vs_budget", "--out", out2, "-q")
check(p3.returncode == 0 and sorted(os.listdir(out2)) ==
      ["manifest.json", "quality_vs_budget.csv", "quality_vs_budget.pdf", "quality_vs_budget.png"],
      "a second call replaces the figures folder as a whole")

# Two depths: the needle heatmap becomes a depth x length map per policy (a copy of the passkey
# trace said to be at depth 0.8, and the window runs on it).
pk8, w8 = os.path.join(tmp, "pk8.h5"), os.path.join(tmp, "window8.h5")
shutil.copy(P("pk.h5"), pk8)
with h5py.File(pk8, "r+") as f:
    f["task"].attrs["depth"] = 0.8
shutil.copy(P("window.h5"), w8)
with h5py.File(w8, "r+") as f:
    for g in f["runs"].values():
        g.attrs["trace_path"] = np.bytes_(pk8 if g.attrs["trace_task"] in (b"passkey", "passkey")
                                          else "elsewhere.h5")
out3 = os.path.join(tmp, "figs3")
p4 = figures(P("window.h5"), w8, "--trace", P("pk.h5"), "--trace", pk8, "--only", "needle_heatmap",
             "--out", out3, "-q")
nh2 = rows(os.path.join(out3, "needle_heatmap.csv")) if p4.returncode == 0 else []
check(p4.returncode == 0 and sorted((r["series"], r["budget"], r["depth"]) for r in nh2) ==
      [("window", "64", "0.4"), ("window", "64", "0.8")],
      f"needle_heatmap with two depths: {[(r['series'], r['depth']) for r in nh2]} {p4.stderr.strip()[:200]}")

# --- bad input: one line, non-zero, no output folder, no temporary folder left ------------------
other = os.path.join(tmp, "other_model.h5")
shutil.copy(P("window.h5"), other)
with h5py.File(other, "r+") as f:
    f["runs/0000"].attrs["trace_model"] = np.bytes_("Another Model 7B")
foreign = os.path.join(tmp, "mine")
os.mkdir(foreign)
open(os.path.join(foreign, "notes.txt"), "w").write("keep me")
bad_cases = [
    ([], "figures: no results files given"),
    ([P("sweep.h5"), P("sweep.h5")], "is in both"),
    ([P("sweep.h5"), other], "results mix models: 'Smollm2"),
    ([P("pk.h5")], "not a kvscope results file"),
    ([P("sweep.h5"), "--trace", P("sweep.h5")], "not a kvscope trace"),
    ([P("sweep.h5"), "--budget", "48"], "--budget 48: no run has it (budgets: 33, 64)"),
    ([P("sweep.h5"), "--only", "pie_chart"], "unknown figure 'pie_chart'"),
    ([P("sweep.h5"), "--bogus"], "unrecognized arguments: --bogus"),
]
for args, want in bad_cases:
    dest = os.path.join(tmp, "bad")
    p = figures(*args, "--out", dest)
    err = p.stderr.strip()
    left = [x for x in os.listdir(tmp) if x.startswith(".bad") or x == "bad"]
    check(p.returncode == 1 and want in err and len(err.splitlines()) == 1 and "Traceback" not in err
          and not left and p.stdout == "", f"bad input -> {err[:150]}")
# A trace that matches no run: mutate the token count of a copy.
tr = os.path.join(tmp, "t300.h5")
shutil.copy(P("text.h5"), tr)
with h5py.File(tr, "r+") as f:
    f.attrs["model_name"] = np.bytes_("Another Model 7B")
p = figures(P("sweep.h5"), "--trace", tr, "--out", os.path.join(tmp, "bad"))
check(p.returncode == 1 and "matches no run of the results given" in p.stderr and
      not os.path.exists(os.path.join(tmp, "bad")), f"mismatched trace -> {p.stderr.strip()[:150]}")
p = figures(P("sweep.h5"), "--out", foreign)
check(p.returncode == 1 and "does not hold kvscope figures" in p.stderr and
      os.listdir(foreign) == ["notes.txt"], f"a folder that is not ours is kept -> {p.stderr.strip()[:120]}")
p = figures(P("sweep.h5"), "--out", os.path.join(tmp, "no", "such", "dir"))
check(p.returncode == 1 and "its parent does not exist" in p.stderr, f"no parent -> {p.stderr.strip()[:120]}")

if os.environ.get("KVS_KEEP"):
    print("kept", tmp)
else:
    shutil.rmtree(tmp, ignore_errors=True)
print(f"{fails} failed")
sys.exit(1 if fails else 0)
