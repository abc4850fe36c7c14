#!/usr/bin/env python3
"""The transformers adapter (python/kvscope/capture_hf.py) against kvscope's own capture: the
same tokens of the same GGUF model, captured by both, give the same q, k (after the RoPE
pairing permutation), v, o, lse and log-probabilities; `kvscope info` and `kvscope replay`
read the adapter's trace and replay it to the same recall and error; bad input is one line.
The adapter runs under $KVS_TORCH_PYTHON (a Python with torch, transformers, gguf, accelerate
and h5py; PYTHONPATH is passed on); without one the test is skipped (77). CI has no torch.
Usage: test_capture_hf.py KVSCOPE MODEL FIXTURES"""
import json, os, shutil, subprocess, sys, tempfile

try:
    import h5py, numpy as np  # noqa: F401
except ImportError:
    print("h5py/numpy missing: skipped"); sys.exit(77)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "python"))
import kvscope

kvs, model, fixtures = sys.argv[1:4]
torch_py = os.environ.get("KVS_TORCH_PYTHON", "")
env = dict(os.environ)
env["PYTHONPATH"] = os.pathsep.join(x for x in (os.path.join(ROOT, "python"),
                                                os.environ.get("PYTHONPATH", "")) if x)
if not torch_py or subprocess.run([torch_py, "-c", "import torch, transformers, gguf, accelerate, h5py"],
                                  env=env, capture_output=True).returncode != 0:
    print("skipped: set KVS_TORCH_PYTHON to a Python with torch, transformers, gguf, accelerate "
          "and h5py to run the transformers adapter")
    sys.exit(77)
tmp = tempfile.mkdtemp()
fails = 0


def check(cond, what):
    global fails
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails += 1


def adapter(*args):
    return subprocess.run([torch_py, "-m", "kvscope.capture_hf", "-q", *args], env=env,
                          capture_output=True, text=True)


own, hf = os.path.join(tmp, "own.h5"), os.path.join(tmp, "hf.h5")
subprocess.run([kvs, "capture", "-m", model, "--text-file", os.path.join(fixtures, "alice_ch1.txt"),
                "--ctx", "80", "--layers", "0,17,29", "--out", own, "-q"], check=True,
               capture_output=True)
p = adapter("--model", model, "--ids-from", own, "--layers", "0,17,29", "--out", hf)
check(p.returncode == 0 and os.path.isfile(hf), f"adapter: exit {p.returncode} {p.stderr.strip()[-300:]}")
if p.returncode != 0:
    sys.exit(1)
info = subprocess.run([kvs, "info", hf, "--json"], capture_output=True, text=True)
j = json.loads(info.stdout) if info.returncode == 0 else {}
check(info.returncode == 0 and j["n_tokens"] == 80 and j["layers"] == [0, 17, 29] and
      j["rope"]["pairing"] == "half" and j["model"]["name"] == kvscope.open_trace(own).model_name,
      f"kvscope info reads the adapter's trace: {j.get('model', {}).get('name')}, pairing "
      f"{j.get('rope', {}).get('pairing')}")

a, b = kvscope.open_trace(own), kvscope.open_trace(hf)
d = a.head_dim
perm = np.r_[np.arange(0, d, 2), np.arange(1, d, 2)]  # interleaved pairs -> halves
check((a.tokens()["id"] == b.tokens()["id"]).all() and a.attn_scale == b.attn_scale and
      (a.kv_head_of_q_head == b.kv_head_of_q_head).all(), "same tokens, scale, GQA map")
worst = {}
for l in a.layers:
    for f in ("q", "k", "v", "o"):
        x, y = a.read(f, l).astype(np.float64), b.read(f, l).astype(np.float64)
        if f in ("q", "k"):
            x = x[..., perm]
        worst[f] = max(worst.get(f, 0), np.linalg.norm(x - y) / np.linalg.norm(y))
    worst["lse"] = max(worst.get("lse", 0), np.abs(a.read("lse", l) - b.read("lse", l)).max())
check(all(worst[f] < 1e-3 for f in "qkvo") and worst["lse"] < 1e-3,
      "q, k, v, o equal to rel L2 " + ", ".join(f"{f} {worst[f]:.1e}" for f in "qkvo") +
      f"; lse to {worst['lse']:.1e}")
# Without the pairing permutation q differs: the check above is not vacuous.
raw = np.linalg.norm(a.read("q", 17) - b.read("q", 17)) / np.linalg.norm(b.read("q", 17))
check(raw > 0.1, f"q without the interleaved -> half permutation differs (rel {raw:.2f})")
lp = np.abs(a.tokens()["logprob"][:-1] - b.tokens()["logprob"][:-1]).max()
check(lp < 1e-3 and (a.topk()[0][:, 0] == b.topk()[0][:, 0]).mean() > 0.95,
      f"log-probabilities equal to {lp:.1e}, top-1 tokens equal")

# Replay reads it and gets the same metrics.
def replay(trace):
    r = subprocess.run([kvs, "replay", trace, "--policy", "h2o:budget=24", "--policy", "quant:bits=2",
                        "--out", trace + ".r.h5", "--json", "-q"], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else []
ra, rb = replay(own), replay(hf)
check(len(ra) == len(rb) == 2 and all(abs(x["recall_mean"] - y["recall_mean"]) < 1e-3 and
                                      abs(x["err_mean"] - y["err_mean"]) < 1e-3
                                      for x, y in zip(ra, rb)),
      "replay of both traces: " + "; ".join(f"{x['policy']} recall {x['recall_mean']:.4f} / {y['recall_mean']:.4f}"
                                            for x, y in zip(ra, rb)))

# Bad input: one line, exit 1, nothing written.
for args, want in ((["--model", model, "--ids-from", os.path.join(tmp, "nope.h5")], "no such file"),
                   (["--model", os.path.join(tmp, "nope.gguf"), "--prompt", "hi"], "--model: no such file"),
                   (["--model", model, "--text-file", os.path.join(tmp, "nope.txt")], "--text-file")):
    out = os.path.join(tmp, "bad.h5")
    p = adapter(*args, "--out", out)
    err = p.stderr.strip()
    check(p.returncode == 1 and want in err and len(err.splitlines()) == 1 and not os.path.exists(out)
          and not os.path.exists(out + ".partial"), f"bad input -> {err[:120]}")
shutil.rmtree(tmp, ignore_errors=True)
print(f"{fails} failed")
sys.exit(1 if fails else 0)
