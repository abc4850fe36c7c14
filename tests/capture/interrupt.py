#!/usr/bin/env python3
"""Interrupting `kvscope capture`: SIGINT or SIGTERM during a capture leaves, at the requested
path, a readable trace with complete = false holding the tokens done so far (every field the same
length), no .partial file, and a non-zero exit (128 + the signal). SIGKILL leaves only the
.partial file, never a file at the requested path.

Usage: interrupt.py KVSCOPE MODEL FIXTURES   (exit 77 = skipped: no h5py, or no model)
"""
import math
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

try:
    import h5py
except ImportError:
    print("KVS_SKIPPED: h5py not available to this python3 (Debian: python3-h5py)")
    sys.exit(77)

KVS, MODEL, FIX = sys.argv[1:4]
if not os.path.exists(MODEL):
    print(f"KVS_SKIPPED: model not found at {MODEL} (run scripts/setup.sh)")
    sys.exit(77)
TMP = tempfile.mkdtemp(prefix="kvs_interrupt_")
fails = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)


def start_and_signal(out, sig, ctx):
    """Starts a long capture and sends `sig` once the capture has reported progress: its stderr
    is a pseudo-terminal, so kvscope draws its progress bar ("capture [...] DONE/TOTAL tok"), and
    the signal goes when DONE > 0 (at least one forward call of 256 prompt tokens is finished).
    Waiting on progress, not on a clock, keeps the test right however loaded the machine is.
    Returns (exit status, stderr text, tokens done when signalled)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([KVS, "capture", "-m", MODEL, "--task", "passkey", "--ctx", str(ctx),
                          "--seed", "3", "-o", out], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    err = bytearray()
    lock = threading.Lock()

    def reader():
        while True:
            try:
                b = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not b:
                break
            with lock:
                err.extend(b)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    done = 0
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 300:
        with lock:
            seen = [int(m) for m in re.findall(rb"capture \[[#.]*\] (\d+)/\d+", bytes(err))]
        done = max(seen, default=0)
        if done > 0:
            break
        time.sleep(0.01)
    check(done > 0, f"{sig.name}: the capture reported progress ({done} tokens) before the signal")
    check(p.poll() is None, f"{sig.name}: capture still running when signalled")
    check(os.path.exists(out + ".partial"), f"{sig.name}: the .partial file exists while running")
    p.send_signal(sig)
    try:
        p.wait(timeout=300)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        check(False, f"{sig.name}: capture did not stop within 300 s")
    t.join(timeout=10)
    os.close(master)
    return p.returncode, err.decode(errors="replace"), done


for sig, ctx in ((signal.SIGINT, 4000), (signal.SIGTERM, 3000)):
    out = os.path.join(TMP, f"trace_{sig.name}.h5")
    rc, err, done = start_and_signal(out, sig, ctx)
    check(rc == 128 + sig.value, f"{sig.name}: exit status {rc} (expected {128 + sig.value})")
    check("interrupted" in err and "complete = false" in err, f"{sig.name}: says it was interrupted")
    check(os.path.exists(out), f"{sig.name}: the trace is at the requested path")
    check(not os.path.exists(out + ".partial"), f"{sig.name}: no .partial left")
    with h5py.File(out, "r") as f:
        a = f.attrs
        T = int(a["n_tokens"])
        check(bool(a["complete"]) is False, f"{sig.name}: complete = false")
        check(done <= T < ctx, f"{sig.name}: holds {T} of {ctx} prompt tokens ({done} done when signalled)")
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
rc, _, _ = start_and_signal(out, signal.SIGKILL, 3000)
check(rc == -signal.SIGKILL, "SIGKILL: killed")
check(not os.path.exists(out), "SIGKILL: no file at the requested path")
check(os.path.exists(out + ".partial"), "SIGKILL: only the .partial is left")

shutil.rmtree(TMP)
print(f"{len(fails)} failed")
sys.exit(1 if fails else 0)
