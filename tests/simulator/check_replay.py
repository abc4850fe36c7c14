#!/usr/bin/env python3
"""Replay end to end on the embedded model, checked with an independent reader (h5py + numpy):
capture a text trace, replay two policies, recompute recall / output error / bytes at the
checkpoints from the trace's own q, k, v, o, lse; summary CSV and JSON agree; sweep shards merge
into the unsharded sweep; bad input gives one clear line, a non-zero exit and no output file.
Usage: check_replay.py KVSCOPE MODEL FIXTURES   (exit 77 = skipped: no h5py, or no model)"""
import csv, json, os, subprocess, sys, tempfile

try:
    import h5py, numpy as np
except ImportError:
    print("KVS_SKIPPED: h5py / numpy not available to this python3 (Debian: python3-h5py)")
    sys.exit(77)

kvs, model, fix = sys.argv[1:4]
if not os.path.exists(model):
    print(f"KVS_SKIPPED: model not found at {model} (run scripts/setup.sh)")
    sys.exit(77)
tmp = tempfile.mkdtemp()
fails = 0

def run(*args, ok=True):
    p = subprocess.run([kvs, *args], capture_output=True, text=True)
    if ok and p.returncode != 0:
        print("command failed:", args, p.stderr); sys.exit(1)
    return p

def check(cond, what):
    global fails
    print(("ok   " if cond else "FAIL ") + what)
    if not cond: fails += 1

trace = os.path.join(tmp, "t.h5")
run("capture", "-m", model, "--text-file", os.path.join(fix, "alice_ch1.txt"), "--ctx", "300",
    "--layers", "0,7,29", "--out", trace, "-q")
res, summ = os.path.join(tmp, "r.h5"), os.path.join(tmp, "s.csv")
p = run("replay", trace, "--policy", "h2o:budget=64,recent=16", "--policy", "quant:bits=4,residual=32",
        "--checkpoints", "6", "--out", res, "--csv", summ, "--json", "-q")
js = json.loads(p.stdout)
check(len(js) == 2 and js[0]["policy"] == "h2o", "replay --json lists both runs")

t, r = h5py.File(trace, "r"), h5py.File(res, "r")
check(r.attrs["format"] == b"kvscope-results" or r.attrs["format"] == "kvscope-results", "format attribute")
check(int(r.attrs["n_runs"]) == 2, "n_runs = 2")
d = int(t.attrs["head_dim"]); H = int(t.attrs["n_head"]); Hkv = int(t.attrs["n_head_kv"])
scale = float(t.attrs["attn_scale"]); kvq = t["kv_head_of_q_head"][...]
worst_rec = worst_err = 0.0
for run_name in ("0000", "0001"):
    g = r["runs/" + run_name]
    layers = g["layers"][...]; steps = list(g["steps"][...]); ck = g["ckpt_steps"][...]
    bits = g["ckpt_bits"][...]
    check(bits.shape == (len(ck), len(layers), Hkv, 300), f"run {run_name}: ckpt_bits shape {bits.shape}")
    for ci, step in enumerate(ck):
        s = steps.index(step)
        for li, layer in enumerate(layers):
            L = t[f"layers/{layer:02d}"]
            q, k, v, o, lse = (L[x][...].astype(np.float64) for x in ("q", "k", "v", "o", "lse"))
            for kv in range(Hkv):
                held = np.nonzero(bits[ci, li, kv] > 0)[0]
                recs, errs = [], []
                for h in np.nonzero(kvq == kv)[0]:
                    sc = scale * k[kv, held] @ q[h, step]
                    recs.append(np.exp(sc - lse[h, step]).sum())
                    if run_name == "0000":  # h2o stores fp16: K, V are the trace's own values
                        p_ = np.exp(sc - sc.max()); p_ /= p_.sum()
                        oc = p_ @ v[kv, held]
                        errs.append(np.linalg.norm(oc - o[h, step]) / np.linalg.norm(o[h, step]))
                worst_rec = max(worst_rec, abs(np.mean(recs) - g["recall"][s, li, kv]))
                if errs:
                    worst_err = max(worst_err, abs(np.mean(errs) - g["out_rel_err"][s, li, kv]) /
                                    max(1e-6, np.mean(errs)))
                if run_name == "0000":
                    check_bytes = g["bytes"][s, li, kv] == len(held) * 2 * d * 2
                    if not check_bytes:
                        check(False, f"h2o bytes at step {step}: {g['bytes'][s, li, kv]} vs {len(held)} tokens")
check(worst_rec < 1e-4, f"recall recomputed with numpy from the trace: worst diff {worst_rec:.2e}")
check(worst_err < 1e-3, f"output error recomputed with numpy: worst relative diff {worst_err:.2e}")
h2o = r["runs/0000"]
check(int(h2o["held"][...].max()) <= 64, "h2o never holds more than 64 tokens")
check((h2o["evicted_at"][...] >= 0).sum() > 0, "h2o evicted_at records evictions")

rows = list(csv.DictReader(open(summ)))
check(len(rows) == 2 and abs(float(rows[0]["recall_mean"]) - js[0]["recall_mean"]) < 1e-6,
      "summary CSV matches the JSON")
check(abs(float(rows[1]["ratio_mean"]) - js[1]["ratio_mean"]) < 1e-3 and js[1]["ratio_mean"] > 1.5,
      f"quant 4-bit ratio {js[1]['ratio_mean']:.2f}x")

# Sweep: 2 shards merged == the whole sweep (seconds aside).
base = ["sweep", trace, "--policy", "h2o", "--policy", "window", "--policy", "quant:bits=2",
        "--budgets", "32,0.25", "-q"]
run(*base, "--out", os.path.join(tmp, "all.h5"), "--csv", os.path.join(tmp, "all.csv"))
for i in range(2):
    run(*base, "--shard", f"{i}/2", "--out", os.path.join(tmp, f"s{i}.h5"))
run("merge", "-o", os.path.join(tmp, "m.h5"), "--csv", os.path.join(tmp, "m.csv"),
    os.path.join(tmp, "s0.h5"), os.path.join(tmp, "s1.h5"), "-q")
def key(path):
    return sorted(tuple((k, v) for k, v in row.items() if k != "seconds")
                  for row in csv.DictReader(open(path)))
whole = key(os.path.join(tmp, "all.csv"))
check(len(whole) == 5, f"sweep: 2 policies x 2 budgets + 1 without = {len(whole)} runs")
check(key(os.path.join(tmp, "m.csv")) == whole, "merged shards == the unsharded sweep")

# Bad input: one line, non-zero, nothing written.
def bad(args, pattern, out=None):
    p = run(*args, ok=False)
    good = p.returncode not in (0,) and p.returncode < 128 and pattern in p.stderr and \
        len(p.stderr.strip().splitlines()) == 1 and (out is None or not os.path.exists(out))
    check(good, f"error: {' '.join(args[:3])}...: {p.stderr.strip()[:110]}")

bad(["replay", trace, "--policy", "bogus:budget=3", "--out", os.path.join(tmp, "x.h5")],
    "unknown policy 'bogus' (valid: full, window, h2o", os.path.join(tmp, "x.h5"))
bad(["replay", trace, "--policy", "h2o:budget=0", "--out", os.path.join(tmp, "x.h5")],
    "budget must be > 0", os.path.join(tmp, "x.h5"))
bad(["replay", trace, "--policy", "h2o:budget=8,alpha=1", "--out", os.path.join(tmp, "x.h5")],
    "valid: budget, recent, gqa, bits, group")
bad(["replay", trace, "--policy", "h2o:budget=8", "--out", os.path.join(tmp, "no/dir/x.h5")],
    "does not exist")
bad(["replay", os.path.join(fix, "alice_ch1.txt"), "--policy", "full", "--out", os.path.join(tmp, "x.h5")],
    "not an HDF5 file", os.path.join(tmp, "x.h5"))
bad(["replay", res, "--policy", "full", "--out", os.path.join(tmp, "x.h5")],
    "not a kvscope trace", os.path.join(tmp, "x.h5"))
bad(["merge", "-o", os.path.join(tmp, "x.h5"), trace], "not a kvscope results file", os.path.join(tmp, "x.h5"))
bad(["sweep", trace, "--policy", "h2o", "--out", os.path.join(tmp, "x.h5")], "needs a budget")
bad(["sweep", trace, "--policy", "full", "--shard", "2/2", "--out", os.path.join(tmp, "x.h5")], "--shard")
# Closed loop through the CLI: a live compressed capture's decisions file equals the replay of
# its own trace (the C++ parity test covers every policy; this is the command-line path), and
# eval's bad input is one line.
for spec, mode in (("tova:budget=48", "stream"), ("snapkv:budget=48", "prefill"),
                   ("dynamickv:budget=48", "prefill")):
    lt = os.path.join(tmp, f"live_{mode}_{spec.split(':')[0]}.h5")
    run("capture", "-m", model, "--task", "passkey", "--ctx", "160", "--generate", "8",
        "--policy", spec, "--mode", mode, "--dtype", "f32", "--out", lt, "-q")
    lr = os.path.join(tmp, f"live_{mode}_{spec.split(':')[0]}.replay.h5")
    run("replay", lt, "--policy", spec, "--mode", mode, "--checkpoints", "0", "--out", lr, "-q")
    with h5py.File(lt[:-3] + ".decisions.h5", "r") as a, h5py.File(lr, "r") as b:
        ga, gb = a["runs/0000"], b["runs/0000"]
        same = all(np.array_equal(ga[k][()], gb[k][()])
                   for k in ("evicted_at", "held", "bytes", "budget_tokens", "bit_events", "steps"))
        n_ev = int((ga["evicted_at"][()] >= 0).sum())
    check(same and n_ev > 0, f"capture --policy {spec} --mode {mode}: live decisions == replay "
          f"of its trace ({n_ev} evictions)")
bad(["eval", "-m", model, "--task", "ppl", "-f", os.path.join(fix, "alice_ch1.txt"), "--ctx", "4096",
     "--policy", "h2o:budget=64"], "shorter than one window")
bad(["eval", "-m", model, "--task", "ppl", "-f", os.path.join(fix, "alice_ch1.txt"), "--ctx", "256",
     "--policy", "dynamickv:budget=64"], "prefill mode only")
bad(["eval", "-m", model, "--task", "ppl", "-f", os.path.join(fix, "alice_ch1.txt"), "--ctx", "256",
     "--policy", "h2o:budget=300"], "not below the context")
bad(["generate", "-m", model, "-p", "Hi", "--policy", "h2o:budget=8", "--mode", "sideways"],
    "--mode 'sideways'")
bad(["capture", "-m", model, "--task", "passkey", "--ctx", "160", "--policy", "h2o:budget=300",
     "--out", os.path.join(tmp, "x.h5")], "not below the context", os.path.join(tmp, "x.h5"))
pol = json.loads(run("policies", "--json").stdout)
check(len(pol) == 20 and {p_["name"] for p_ in pol} >= {"agd", "agacc", "dynamickv", "composite", "quant", "kmeans"},
      "policies --json lists the 20 policies")
print(f"{fails} failed")
sys.exit(1 if fails else 0)
