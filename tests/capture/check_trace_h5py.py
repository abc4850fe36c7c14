#!/usr/bin/env python3
"""Traces are readable by plain h5py, without kvscope: every field docs/trace-format.md lists is
where it says, with the documented shape and dtype; attention recomputed with numpy from the
stored q, k, v matches o and lse; the stored log-probabilities give `kvscope perplexity`;
`kvscope info` describes a trace and rejects bad files with one line.

Usage: check_trace_h5py.py KVSCOPE MODEL FIXTURES   (exit 77 = skipped: no h5py, or no model)
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError:
    print("KVS_SKIPPED: h5py / numpy not available to this python3 (Debian: python3-h5py)")
    sys.exit(77)

KVS, MODEL, FIX = sys.argv[1:4]
if not os.path.exists(MODEL):
    print(f"KVS_SKIPPED: model not found at {MODEL} (run scripts/setup.sh)")
    sys.exit(77)
TMP = tempfile.mkdtemp(prefix="kvs_h5py_")
fails = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)


def run(*args, expect_ok=True):
    p = subprocess.run([KVS, *args], capture_output=True, text=True)
    if expect_ok and p.returncode != 0:
        print(p.stderr)
        raise SystemExit(f"kvscope {' '.join(args)} failed with {p.returncode}")
    return p


def s(x):
    """A string attribute as str (kvscope writes fixed-length UTF-8: h5py gives bytes)."""
    return x.decode() if isinstance(x, (bytes, np.bytes_)) else str(x)


# --- the schema (trace_schema.h), as h5py sees it ---------------------------------------------
STR, INT, FLOAT, BOOL = "str", "int", "float", "bool"
ROOT_ATTRS = {
    "format": STR, "schema_version": INT, "kvscope_version": STR, "model_name": STR,
    "model_arch": STR, "model_path": STR, "n_layer": INT, "n_head": INT, "n_head_kv": INT,
    "head_dim": INT, "layers": "int[]", "rope_theta": FLOAT, "rope_scaling_type": STR,
    "rope_scaling_factor": FLOAT, "rope_scaling_low_freq_factor": FLOAT,
    "rope_scaling_high_freq_factor": FLOAT, "rope_scaling_original_context": INT,
    "rope_pairing": STR, "attn_scale": FLOAT, "dtype": STR, "compression": STR,
    "prompt_len": INT, "n_tokens": INT, "created": STR, "command_line": STR, "complete": BOOL,
    "config_json": STR,
}


def attr_ok(v, kind):
    if kind == STR:
        return isinstance(v, (str, bytes, np.bytes_))
    if kind == INT:
        return isinstance(v, (int, np.integer))
    if kind == FLOAT:
        return isinstance(v, (float, np.floating))
    if kind == BOOL:
        return isinstance(v, (bool, np.bool_))
    return isinstance(v, np.ndarray) and v.dtype.kind == "i" and v.ndim == 1


def check_trace(path, kind):
    f = h5py.File(path, "r")
    a = f.attrs
    for name, k in ROOT_ATTRS.items():
        check(name in a and attr_ok(a[name], k), f"{kind}: root attribute {name} ({k})")
    check(s(a["format"]) == "kvscope-trace" and a["schema_version"] in (1, 2), f"{kind}: format, version")
    if a["schema_version"] >= 2:
        check(s(a["logits"]) in ("topk", "lse", "none"), f"{kind}: logits")
    T, H, HK, D = int(a["n_tokens"]), int(a["n_head"]), int(a["n_head_kv"]), int(a["head_dim"])
    fdt = np.float16 if s(a["dtype"]) == "f16" else np.float32
    gz = s(a["compression"]) != "none"
    json.loads(s(a["config_json"]))
    check(bool(a["complete"]) is True, f"{kind}: complete")
    check(s(a["rope_pairing"]) in ("interleaved", "half"), f"{kind}: rope_pairing")
    check(abs(a["attn_scale"] - 1 / math.sqrt(D)) < 1e-12, f"{kind}: attn_scale")

    def ds(path, shape, dtype, labels, grows=True):
        ok = path in f and isinstance(f[path], h5py.Dataset)
        if ok:
            d = f[path]
            ok = d.shape == shape and (d.dtype == dtype or (dtype == "S" and d.dtype.kind == "S"))
            ok = ok and [x.label for x in d.dims] == labels
            if grows:
                t_axis = labels.index("token")
                ok = ok and d.chunks is not None and d.maxshape[t_axis] is None
                if gz and dtype != "S":
                    ok = ok and d.compression == "gzip" and d.shuffle
        check(ok, f"{kind}: {path} {shape} {dtype} {labels}")

    ds("kv_head_of_q_head", (H,), np.int32, ["head"], grows=False)
    check(list(f["kv_head_of_q_head"][:]) == [h // (H // HK) for h in range(H)], f"{kind}: GQA map")
    ds("tokens/ids", (T,), np.int32, ["token"])
    ds("tokens/positions", (T,), np.int32, ["token"])
    ds("tokens/text", (T,), "S", ["token"])
    ds("tokens/logprob", (T,), np.float64, ["token"])
    ds("tokens/logits_lse", (T,), np.float32, ["token"])
    ds("tokens/topk_ids", (T, 16), np.int32, ["token", "rank"])
    ds("tokens/topk_logits", (T, 16), np.float32, ["token", "rank"])
    check(list(f["tokens/positions"][:]) == list(range(T)), f"{kind}: positions")
    check(math.isnan(f["tokens/logprob"][-1]), f"{kind}: last logprob is NaN")
    layers = list(a["layers"])
    check(sorted(f["layers"].keys()) == [f"{l:02d}" for l in layers], f"{kind}: layer groups")
    for l in layers:
        g = f"layers/{l:02d}/"
        ds(g + "q", (H, T, D), fdt, ["head", "token", "dim"])
        ds(g + "k", (HK, T, D), fdt, ["kv_head", "token", "dim"])
        ds(g + "v", (HK, T, D), fdt, ["kv_head", "token", "dim"])
        ds(g + "o", (H, T, D), fdt, ["head", "token", "dim"])
        ds(g + "lse", (H, T), np.float32, ["head", "token"])
        chunk_bytes = np.prod(f[g + "q"].chunks) * f[g + "q"].dtype.itemsize
        check(64 << 10 <= chunk_bytes <= 1 << 20, f"{kind}: {g}q chunk of {chunk_bytes} bytes")
    check("task" in f and s(f["task"].attrs["kind"]) == kind, f"{kind}: task kind")
    return f


# 1. A passkey trace (f16, gzip, three layers).
pk = os.path.join(TMP, "passkey.h5")
run("capture", "-m", MODEL, "--task", "passkey", "--ctx", "300", "--depth", "0.4", "--seed", "7",
    "-n", "8", "--layers", "0,3,29", "-o", pk, "-q")
f = check_trace(pk, "passkey")
t = f["task"]
for name, k in {"answer": STR, "depth": FLOAT, "seed": INT, "needle": STR, "generated": STR,
                "correct": BOOL}.items():
    check(name in t.attrs and attr_ok(t.attrs[name], k), f"passkey: task attribute {name} ({k})")
ds_ok = t["answer_positions"].dtype == np.int32 and t["needle_range"].shape == (2,)
check(ds_ok, "passkey: task/answer_positions, task/needle_range")
answer = s(t.attrs["answer"])
text = f["tokens/text"][:]
spelled = b"".join(text[i] for i in t["answer_positions"][:]).decode()
check(answer in spelled and len(answer) == 5, f"passkey: answer {answer} at its token positions")
check(s(t.attrs["generated"]) == b"".join(text[int(f.attrs["prompt_len"]):]).decode(errors="replace")
      .replace("<|im_end|>", ""), "passkey: generated text = decoded generated tokens")
check(abs(t.attrs["depth"] - 0.4) < 1e-12 and t.attrs["seed"] == 7, "passkey: depth, seed")
check(f.attrs["n_tokens"] == f.attrs["prompt_len"] + 8, "passkey: prompt + generated tokens")
f.close()
check(not os.path.exists(pk + ".partial"), "no .partial left")

# 2. A text trace (f32, uncompressed): attention recomputed with numpy; perplexity.
tx = os.path.join(TMP, "text.h5")
run("capture", "-m", MODEL, "--text-file", os.path.join(FIX, "alice_ch1.txt"), "--ctx", "200",
    "--dtype", "f32", "--compress", "none", "-o", tx, "-q")
f = check_trace(tx, "text")
T, scale = int(f.attrs["n_tokens"]), float(f.attrs["attn_scale"])
worst = 0.0
for l in (0, 17, 29):
    g = f[f"layers/{l:02d}"]
    q, k, v, o, lse = (g[n][:].astype(np.float64) for n in ("q", "k", "v", "o", "lse"))
    for h in range(q.shape[0]):
        kv = f["kv_head_of_q_head"][h]
        s_ = scale * q[h] @ k[kv].T
        s_[np.triu_indices(T, 1)] = -np.inf
        m = s_.max(axis=1, keepdims=True)
        p = np.exp(s_ - m)
        z = p.sum(axis=1, keepdims=True)
        o_ref = (p / z) @ v[kv]
        lse_ref = (m + np.log(z))[:, 0]
        worst = max(worst, np.abs(o_ref - o[h]).max() / np.abs(o_ref).max(),
                    np.abs(lse_ref - lse[h]).max() / max(1, np.abs(lse_ref).max()))
check(worst < 1e-5, f"text: numpy attention from q, k, v matches o and lse (rel err {worst:.2e})")
lp = f["tokens/logprob"][:-1]
ppl_trace = math.exp(-lp.mean())
p = run("perplexity", "-m", MODEL, "--text-file", os.path.join(FIX, "alice_ch1.txt"), "--ctx",
        "200", "--max-tokens", "200", "--json", "--quiet")
ppl = json.loads(p.stdout)["perplexity"]
check(abs(ppl_trace / ppl - 1) < 1e-7, f"text: trace perplexity {ppl_trace:.6f} = kvscope perplexity {ppl:.6f}")
lse_l = f["tokens/logits_lse"][:]
top = f["tokens/topk_logits"][:]
check(np.all(np.diff(top, axis=1) <= 0), "text: top-k logits descending")
check(np.all(top[:, 0] - lse_l <= 1e-6), "text: top-k log-probs <= 0")
f.close()

# 3. kvscope info, text and JSON.
p = run("info", pk)
check("complete:    yes" in p.stdout and "passkey" in p.stdout and "answer:" in p.stdout,
      "info: text output")
j = json.loads(run("info", pk, "--json").stdout)
check(j["layers"] == [0, 3, 29] and j["task"]["kind"] == "passkey" and j["complete"] is True
      and j["n_tokens"] == j["prompt_len"] + 8 and j["file_bytes"] == os.path.getsize(pk),
      "info --json")

# 4. Bad files: one line on stderr, non-zero exit, no crash.
def expect_reject(name, path, pattern):
    p = run("info", path, expect_ok=False)
    lines = p.stderr.strip().splitlines()
    ok = 0 < p.returncode < 128 and len(lines) == 1 and pattern in lines[0]
    check(ok, f"info rejects {name}: {lines[0] if lines else p.returncode}")


newer = os.path.join(TMP, "newer.h5")
shutil.copy(pk, newer)
with h5py.File(newer, "r+") as g:
    g.attrs["schema_version"] = 3
expect_reject("a newer schema_version", newer, "schema_version 3 is newer")
nods = os.path.join(TMP, "missing.h5")
shutil.copy(pk, nods)
with h5py.File(nods, "r+") as g:
    del g["layers/03/v"]
expect_reject("a missing dataset", nods, "missing dataset 'layers/03/v'")
trunc = os.path.join(TMP, "trunc.h5")
with open(pk, "rb") as src, open(trunc, "wb") as dst:
    dst.write(src.read(os.path.getsize(pk) // 2))
expect_reject("a truncated file", trunc, "trunc.h5")
junk = os.path.join(TMP, "junk.h5")
with open(junk, "wb") as dst:
    dst.write(b"hello" * 1000)
expect_reject("a non-HDF5 file", junk, "not an HDF5 file")
plain = os.path.join(TMP, "plain.h5")
with h5py.File(plain, "w") as g:
    g["x"] = np.arange(3)
expect_reject("an HDF5 file that is not a trace", plain, "not a kvscope trace")

# 5. Bad capture flags: one line, non-zero exit, nothing written.
bad_out = os.path.join(TMP, "bad.h5")
for args, pattern in (
        (["-p", "hi", "--task", "passkey"], "exactly one of"),
        (["-p", "hi", "--layers", "3,99"], "layer 99 does not exist"),
        (["-p", "hi", "--compress", "lz4"], "--compress 'lz4'"),
        (["-p", "hi", "--dtype", "bf16"], "--dtype 'bf16'"),
        (["--task", "needle"], "needs --haystack"),
        (["--task", "passkey", "--ctx", "10"], "too short"),
        (["-p", "hi", "-o", os.path.join(TMP, "no", "dir.h5")], "does not exist")):
    full = ["capture", "-m", MODEL, "-q", *args] + ([] if "-o" in args else ["-o", bad_out])
    p = run(*full, expect_ok=False)
    lines = p.stderr.strip().splitlines()
    ok = 0 < p.returncode < 128 and len(lines) == 1 and pattern in lines[0]
    check(ok and not os.path.exists(bad_out) and not os.path.exists(bad_out + ".partial"),
          f"capture {' '.join(args)}: {lines[0] if lines else p.returncode}")

shutil.rmtree(TMP)
print(f"{len(fails)} failed")
sys.exit(1 if fails else 0)
