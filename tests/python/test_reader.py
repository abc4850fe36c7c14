#!/usr/bin/env python3
"""The Python package (python/kvscope) against the C++ programs on the same files: trace
figures vs `kvscope info --json`, run summaries vs `kvscope sweep --json`, held sets and widths
at every step vs the results' held / checkpoints, attention probabilities from q, k, lse
(summing to 1 over j <= t, with GQA) and the recall they give vs the replay's; a newer schema
is refused with the C++ readers' line; `pip install` of the package works.
Usage: test_reader.py KVSCOPE FIXTURE_DIR FIXTURES   (exit 77 = skipped: no h5py/numpy)"""
import json, os, shutil, subprocess, sys, tempfile

try:
    import h5py, numpy as np
except ImportError:
    print("h5py/numpy missing: skipped"); sys.exit(77)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import kvscope
from kvscope import KvscopeError

kvs, fx, fixtures = sys.argv[1:4]
tmp = tempfile.mkdtemp()
fails = 0


def check(cond, what):
    global fails
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails += 1


def run(*args):
    return subprocess.run([kvs, *args], capture_output=True, text=True)


P = lambda name: os.path.join(fx, name)

# --- traces vs `kvscope info --json` -----------------------------------------------------------
for name in ("pk.h5", "text.h5"):
    info = json.loads(run("info", P(name), "--json").stdout)
    with kvscope.open_trace(P(name)) as t:
        mine = t.info()
        same = all(mine[k] == info[k] for k in ("n_tokens", "prompt_len", "n_layer", "n_head",
                                                "n_head_kv", "head_dim", "layers", "dtype",
                                                "compression", "schema_version", "complete"))
        same &= mine["model_name"] == info["model"]["name"]
        same &= mine["task"]["kind"] == info["task"]["kind"]
        if info["task"]["kind"] == "passkey":
            same &= all(mine["task"][k] == info["task"][k]
                        for k in ("answer", "answer_positions", "depth", "seed", "correct"))
        first = "".join(t.tokens(0, 40)["text"])
        same &= info["first_tokens"].startswith(first[:len(info["first_tokens"])][:60])
        check(same, f"{name}: shapes, layers, task and first tokens equal `kvscope info --json`")
        # Named dimensions: the writer's HDF5 dimension labels.
        f = t.h5
        g = f["layers/07"]
        labels = {n: tuple(d.label for d in g[n].dims) for n in ("q", "k", "v", "o", "lse")}
        labels["tokens/topk_ids"] = tuple(d.label for d in f["tokens/topk_ids"].dims)
        check(all(labels[n] == t.dims(n) for n in labels),
              f"{name}: named dimensions equal the file's dimension labels {labels['k']}")
        check(t.read("q", 7).shape == (t.n_head, t.n_tokens, t.head_dim) and
              t.read("k", 7, head=1, t0=5, t1=9).shape == (4, t.head_dim) and
              t.read("lse", 29).shape == (t.n_head, t.n_tokens), f"{name}: read() shapes")

# --- attention probabilities: sum to 1 over j <= t, GQA ---------------------------------------
with kvscope.open_trace(P("pk.h5")) as t:
    worst, worst_wrong_kv = 0.0, 1.0
    rng = np.random.default_rng(0)
    for layer in t.layers:
        for head in range(t.n_head):
            for step in rng.integers(0, t.n_tokens, 4):
                p = t.attention(layer, head, int(step))
                worst = max(worst, abs(p.sum() - 1.0))
    # The same rows with another KV head's keys do not sum to 1: the GQA mapping matters.
    q, k, lse = (t.read(x, 7).astype(np.float64) for x in ("q", "k", "lse"))
    h, step = 4, 150
    kv = t.kv_head_of_q_head[h]
    for other in range(t.n_head_kv):
        if other != kv:
            s = np.exp(t.attn_scale * k[other, :step + 1] @ q[h, step] - lse[h, step]).sum()
            worst_wrong_kv = min(worst_wrong_kv, abs(s - 1))
    check(worst < 5e-3, f"attention rows sum to 1 over j <= t (worst |sum - 1| {worst:.1e})")
    check(worst_wrong_kv > 0.05, f"with another KV head's keys they do not "
                                 f"(|sum - 1| >= {worst_wrong_kv:.2f}): GQA via kv_head_of_q_head")
    rows = t.attention_rows(7, 4, 100, 104)
    check(np.allclose(rows[2, :103], t.attention(7, 4, 102)) and (rows[2, 103:] == 0).all(),
          "attention_rows: causal, row t equals attention(t)")
    rec = t.attention_received(29)
    check(abs(rec.sum() - t.n_tokens) < 0.01 * t.n_tokens,
          f"attention received sums to the number of queries ({rec.sum():.1f} ~ {t.n_tokens})")

# --- results vs `kvscope sweep --json` ----------------------------------------------------------
js = json.load(open(P("sweep.json")))
r = kvscope.open_results(P("sweep.h5"))
check(len(r) == len(js) == 20, f"20 runs (2 traces x 10) in the results and the JSON ({len(r)}, {len(js)})")
worst = 0.0
for run_, j in zip(r, js):
    for k, v in run_.summary.items():
        if k in j:
            worst = max(worst, abs(v - j[k]) / max(1e-9, abs(j[k])))
    assert run_.spec == j["spec"] and run_.budget == j["budget"]
check(worst < 1e-9, f"every summary figure equals the sweep's --json (worst rel diff {worst:.1e})")
tab = r.table()
check(tab[1]["policy"] == "h2o" and tab[1]["budget"] == "33" and
      abs(tab[1]["recall_mean"] - js[1]["recall_mean"]) < 1e-12 and
      tab[0]["answer_kept"] == 1.0 and r.summary_array()["recall_mean"].shape == (20,),
      "table() / summary_array()")
check(r.runs[1].dims("recall") == ("step", "layer", "kv_head") and
      r.runs[1].recall.shape == (r.runs[1].n_steps, 3, 3), "run arrays with named dimensions")

# --- unit roles (razor's retrieval heads): a retrieval unit keeps every token, the others not --
rz = kvscope.open_results(P("razor.h5")).runs[0]
roles = np.asarray(rz.unit_role)
ev = np.asarray(rz.evicted_at)  # [L, Hkv, T]
whole = (ev < 0).all(axis=2)
check(rz.unit_role_names == ["compressed", "retrieval"] and roles.shape == whole.shape and
      roles.sum() > 0 and (whole == (roles == 1)).all(),
      f"razor's unit_role: the {int(roles.sum())} retrieval units are those that evict nothing")
check(r.runs[0].unit_role is None, "a policy without roles: unit_role is None")

# --- held set and widths at any step ---------------------------------------------------------
bad_held, bad_bits, bad_mean, bad_map, n_ck = [], [], [], [], 0
for run_ in r:
    if not (run_.held_counts() == run_.held).all():
        bad_held.append(run_.spec)
    bm_all, hm_all = run_.bits_map(), run_.held_map()
    for c, step in enumerate(run_.ckpt_steps):
        n_ck += 1
        if not (run_.bits_at(int(step)) == run_.ckpt_bits[c]).all():
            bad_bits.append((run_.spec, int(step)))
        s = int(np.searchsorted(run_.steps, step))
        hm, bm = run_.held_map(7, 1)[s], run_.bits_map(7, 1)[s]
        ref = run_.ckpt_bits[c, 1, 1].astype(float)
        ck = run_.ckpt_bits[c, :, :, :step + 1].astype(float)
        if not (np.array_equal(hm[:step + 1], (ref > 0)[:step + 1]) and
                np.array_equal(bm[:step + 1], ref[:step + 1]) and np.isnan(bm[step + 1:]).all() and
                np.allclose(bm_all[s, :step + 1], ck.mean((0, 1))) and
                np.allclose(hm_all[s, :step + 1], (ck > 0).mean((0, 1)))):
            bad_map.append((run_.spec, int(step)))
    mb = run_.mean_bits()
    for s in (0, run_.n_steps // 3, run_.n_steps - 1):
        b = run_.bits_at(int(run_.steps[s]))
        if abs(b[b > 0].mean() - mb[s]) > 1e-9:
            bad_mean.append(run_.spec)
check(not bad_held, f"held counts from evicted_at == the held dataset at every step, every run "
                    f"{bad_held[:2]}")
check(not bad_bits, f"bits_at from bit_events == ckpt_bits at all {n_ck} checkpoints "
                    f"{bad_bits[:2]}")
check(not bad_map, f"held_map / bits_map of unit (7, 1) and of all units == the checkpoints "
                   f"{bad_map[:2]}")
check(not bad_mean, f"mean_bits == bits_at averaged over the held tokens {bad_mean[:2]}")
agd = next(x for x in r if x.policy == "agd" and x.budget == "64" and x.trace_path.endswith("pk.h5"))
check(np.nanmin(agd.mean_bits()) < 15 and agd.bit_events.shape[0] > 0,
      "agd changes widths (the bits checks are not all 16 == 16)")
h2o = next(x for x in r if x.policy == "h2o" and x.budget == "33")
check(h2o.held_at(200, 7, 1).sum() == h2o.held[np.searchsorted(h2o.steps, 200), 1, 1] and
      h2o.held_at(200).shape == (3, 3, h2o.n_tokens), "held_at of one unit / of all units")

# Recall recomputed from the trace's attention over the held set == the replay's recall.
with kvscope.open_trace(P("pk.h5")) as t:
    worst = 0.0
    for step in (60, 150, 244):
        held = h2o.held_at(step, 7, 2)
        heads = np.nonzero(t.kv_head_of_q_head == 2)[0]
        mine = np.mean([t.attention(7, int(h), step)[held[:step + 1]].sum() for h in heads])
        worst = max(worst, abs(mine - h2o.recall[np.searchsorted(h2o.steps, step), 1, 2]))
    check(worst < 1e-4, f"recall from attention() over held_at() == the replay's (worst {worst:.1e})")

# --- merged entries (schema 3): kmeans folds pruned tokens into centroids ---------------------
km = kvscope.open_results(P("kmeans.h5")).runs[0]
mi, ma, ev = km.merged_into, km.merged_at, km.evicted_at
check(km.dims("merged_into") == ("layer", "kv_head", "token") and mi.shape == ev.shape and
      ma.shape == ev.shape, "merged_into / merged_at: [layer, kv_head, token]")
folded = mi >= 0
check(folded.sum() > 0 and ((ma >= 0) == folded).all() and (ev[folded] == ma[folded]).all(),
      f"kmeans folds {folded.sum()} (unit, token) pairs; each leaves as an entry at its fold step")
check((km.held_counts() == km.held).all(), "held counts from evicted_at == the held dataset (entries)")
# Recall recomputed from the trace's attention over every token the held entries stand for ==
# the replay's recall; over the held entries' own tokens alone it is smaller.
with kvscope.open_trace(P("pk.h5")) as t:
    worst, less = 0.0, True
    heads = np.nonzero(t.kv_head_of_q_head == 2)[0]
    for step in (100, 180, 244):
        members = np.concatenate(list(km.stands_for(step, 7, 2).values()))
        own = km.held_at(step, 7, 2)
        mine = np.mean([t.attention(7, int(h), step)[members].sum() for h in heads])
        alone = np.mean([t.attention(7, int(h), step)[own[:step + 1]].sum() for h in heads])
        got = km.recall[np.searchsorted(km.steps, step), 1, 2]
        worst = max(worst, abs(mine - got))
        less &= alone < got - 1e-3
    check(worst < 1e-4 and less, f"recall from attention() over stands_for() == the replay's "
                                 f"(worst {worst:.1e}), and more than the entries' own tokens'")

# A schema 2 file (the previous writer's layout: no merged_into / merged_at) still reads, in
# Python and in C++ (`kvscope merge` rewrites it as schema 3, with no merges).
old = os.path.join(tmp, "v2.h5")
shutil.copy(P("window.h5"), old)
with h5py.File(old, "r+") as f:
    f.attrs["schema_version"] = np.int64(2)
    for g in f["runs"].values():
        del g["merged_into"], g["merged_at"]
with kvscope.open_results(old) as r2:
    check(r2.schema_version == 2 and all((x.merged_into == -1).all() and (x.merged_at == -1).all()
                                         and x.merged_into.shape == x.evicted_at.shape for x in r2),
          "schema 2 file: merged_into / merged_at read as -1")
p = run("merge", "-o", os.path.join(tmp, "v2m.h5"), old, "-q")
with h5py.File(os.path.join(tmp, "v2m.h5"), "r") as f:
    ok = p.returncode == 0 and int(f.attrs["schema_version"]) == kvscope.results.SCHEMA_VERSION
    ok &= all((g["merged_into"][...] == -1).all() for g in f["runs"].values())
check(ok, f"kvscope merge reads a schema 2 file and writes schema 3 {p.stderr.strip()[-200:]}")

# --- schema versions and bad files: the C++ readers' lines ------------------------------------
def newer(src, dst, version):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        f.attrs["schema_version"] = np.int64(version)
    return dst


def py_error(fn, path):
    try:
        fn(path).close()
    except KvscopeError as e:
        return str(e)
    return ""


tr2 = newer(P("pk.h5"), os.path.join(tmp, "t2.h5"), kvscope.trace.SCHEMA_VERSION + 1)
cpp = run("info", tr2).stderr.strip()
py = py_error(kvscope.open_trace, tr2)
check(cpp == f"kvscope: error: {py}" and "schema_version 3 is newer than this kvscope reads (2)" in py,
      f"trace, newer schema: {py}")
rs2 = newer(P("window.h5"), os.path.join(tmp, "r2.h5"), kvscope.results.SCHEMA_VERSION + 1)
cpp = run("merge", "-o", os.path.join(tmp, "m.h5"), rs2, "-q").stderr.strip()
py = py_error(kvscope.open_results, rs2)
check(cpp == f"kvscope: error: {py}" and "update kvscope" in py and "\n" not in py,
      f"results, newer schema: {py}")
for fn, path, want in ((kvscope.open_trace, os.path.join(fixtures, "alice_ch1.txt"), "not an HDF5 file"),
                       (kvscope.open_trace, P("sweep.h5"), "not a kvscope trace (format is 'kvscope-results'"),
                       (kvscope.open_results, P("pk.h5"), "not a kvscope results file (format is 'kvscope-trace'"),
                       (kvscope.open_results, os.path.join(tmp, "nope.h5"), "no such file")):
    e = py_error(fn, path)
    check(want in e and "\n" not in e, f"bad file: {e}")
with h5py.File(os.path.join(tmp, "short.h5"), "w") as f:  # a damaged trace: q too short
    src = h5py.File(P("text.h5"), "r")
    for k, v in src.attrs.items():
        f.attrs[k] = v
    for name in ("kv_head_of_q_head", "tokens", "task", "layers"):
        src.copy(name, f)
    del f["layers/07/q"]
    f["layers/07/q"] = np.zeros((9, 10, 64), np.float16)
e = py_error(kvscope.open_trace, os.path.join(tmp, "short.h5"))
check("dataset 'layers/07/q' has shape [9, 10, 64], expected [9, 200, 64]" in e, f"damaged trace: {e}")

# --- pip install ./python -----------------------------------------------------------------------
src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python")
pkg = os.path.join(tmp, "pkgsrc")
shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--root-user-action=ignore", "--target", os.path.join(tmp, "site"),
                    pkg], capture_output=True, text=True)
if p.returncode != 0 and "No module named pip" in p.stderr:
    print("skip pip install: no pip for", sys.executable)
else:
    q = subprocess.run([sys.executable, "-c", "import kvscope, sys; r = kvscope.open_results(sys.argv[1]); "
                        "print(kvscope.__file__, len(r))", P("window.h5")],
                       capture_output=True, text=True, cwd=tmp,
                       env={**os.environ, "PYTHONPATH": os.path.join(tmp, "site")})
    check(p.returncode == 0 and q.returncode == 0 and q.stdout.startswith(os.path.join(tmp, "site"))
          and q.stdout.split()[-1] == "4", f"pip install ./python, then import it: {q.stdout.strip()}"
          f"{p.stderr.strip()[-200:]}{q.stderr.strip()[-200:]}")

shutil.rmtree(tmp, ignore_errors=True)
print(f"{fails} failed")
sys.exit(1 if fails else 0)
