#!/usr/bin/env python3
"""Interrupting `kvscope capture`: SIGINT or SIGTERM during a capture leaves, at the requested
path, a readable trace with complete = false holding the tokens done so far (every field the same
length), no .partial file, and a non-zero exit (128 + the signal). SIGKILL leaves only the
.partial file, never a file at the requested path.

Usage: interrupt.py KVSCOPE MODEL FIXTURES   (exit 77 = skipped: no h5py)
"""
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

try:
    import h5py
except ImportError:
    print("h5py not available: skipped")
    sys.exit(77)

KVS, MODEL, FIX = sys.argv[1:4]
TMP = tempfile.mkdtemp(prefix="kvs_interrupt_")
fails = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)


def start_and_signal(out, sig, ctx, after):
    """Starts a long capture, sends `sig` `after` seconds after its .partial file appears."""
    p = subprocess.Popen([KVS, "capture", "-m", MODEL, "--task", "passkey", "--ctx", str(ctx),
                          "--seed", "3", "-o", out], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not os.path.exists(out + ".partial") and p.poll() is None and time.time() - t0 < 60:
        time.sleep(0.02)
    time.sleep(after)
    check(p.poll() is None, f"{sig.name}: capture still running when signalled")
    p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        check(False, f"{sig.name}: capture did not stop within 120 s")
    return p.returncode, err


for sig, ctx in ((signal.SIGINT, 4000), (signal.SIGTERM, 3000)):
    out = os.path.join(TMP, f"trace_{sig.name}.h5")
    rc, err = start_and_signal(out, sig, ctx, 2.0)
    check(rc == 128 + sig.value, f"{sig.name}: exit status {rc} (expected {128 + sig.value})")
    check("interrupted" in err and "complete = false" in err, f"{sig.name}: says it was interrupted")
    check(os.path.exists(out), f"{sig.name}: the trace is at the requested path")
    check(not os.path.exists(out + ".partial"), f"{sig.name}: no .partial left")
    with h5py.File(out, "r") as f:
        a = f.attrs
        T = int(a["n_tokens"])
        check(bool(a["complete"]) is False, f"{sig.name}: complete = false")
        check(0 < T < ctx, f"{sig.name}: holds {T} of {ctx} prompt tokens")
        check(T % 256 == 0, f"{sig.name}: whole forward calls (chunks of 256)")
        check(int(a["prompt_len"]) == T, f"{sig.name}: prompt_len clamped to what was captured")
        lengths = {f[p].shape[0] for p in ("tokens/ids", "tokens/positions", "tokens/text",
                                           "tokens/logprob", "tokens/topk_ids")}
        lengths |= {f[f"layers/{l:02d}/{n}"].shape[1] for l in a["layers"] for n in "qkvo"}
        lengths |= {f[f"layers/{l:02d}/lse"].shape[1] for l in a["layers"]}
        check(lengths == {T}, f"{sig.name}: every field holds {T} tokens ({lengths})")
        check(math.isnan(f["tokens/logprob"][-1]), f"{sig.name}: last logprob NaN")
        q = f["layers/29/q"][:, T - 1, :]
        check(abs(q).sum() > 0, f"{sig.name}: the last token's data was written")
    info = subprocess.run([KVS, "info", out], capture_output=True, text=True)
    check(info.returncode == 0 and "NO (interrupted" in info.stdout, f"{sig.name}: kvscope info")

# SIGKILL: nothing at the requested path, only the .partial.
out = os.path.join(TMP, "killed.h5")
rc, _ = start_and_signal(out, signal.SIGKILL, 3000, 1.0)
check(rc == -signal.SIGKILL, "SIGKILL: killed")
check(not os.path.exists(out), "SIGKILL: no file at the requested path")
check(os.path.exists(out + ".partial"), "SIGKILL: only the .partial is left")

shutil.rmtree(TMP)
print(f"{len(fails)} failed")
sys.exit(1 if fails else 0)
