#!/usr/bin/env python3
"""Output faults through the command line: a full disk and a read-only output directory.

Usage: test_faults.py KVSCOPE MODEL FIXTURES  (exit 77 = skipped: no model, not root, or no
permission to mount a tmpfs)

A 128 KiB tmpfs stands for a full disk, a read-only tmpfs for an unwritable directory (root
ignores file permissions, so chmod cannot make one). For capture, replay, sweep and merge: a
non-zero exit, one `kvscope: error:` line naming the file, no crash, and nothing under the
final output name (a `.partial` file is removed too).
"""
import os
import subprocess
import sys
import tempfile

import cli_check
from cli_check import bad, ok, refusal

KVS, MODEL, FIX = sys.argv[1:4]
if not os.path.isfile(MODEL):
    print(f"KVS_SKIPPED: model not found at {MODEL} (run scripts/setup.sh)")
    sys.exit(77)
if os.geteuid() != 0:
    print("KVS_SKIPPED: not root: cannot mount the small tmpfs that stands for a full disk")
    sys.exit(77)

TMP = tempfile.mkdtemp(prefix="kvs-faults-")
FULL, RO = os.path.join(TMP, "full"), os.path.join(TMP, "ro")
os.makedirs(FULL)
os.makedirs(RO)
mounted = []


def mount(where, opts):
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", where], capture_output=True,
                       text=True)
    if p.returncode != 0:
        cleanup()
        print(f"KVS_SKIPPED: cannot mount a tmpfs ({p.stderr.strip()})")
        sys.exit(77)
    mounted.append(where)


def cleanup():
    for m in mounted:
        subprocess.run(["umount", m])
    subprocess.run(["rm", "-rf", TMP])


def expect_fault(name, args, out, pattern):
    p = cli_check.run(KVS, args, model=MODEL, check=False)
    left = [f for f in os.listdir(os.path.dirname(out)) if f.startswith(os.path.basename(out))]
    line = refusal(name, p, pattern, names=[out, out + ".partial"])
    if line and left:
        bad(f"{name}: left {left} in {os.path.dirname(out)}")
    elif line:
        ok(f"{name}: {line[:160]}; nothing left")


try:
    mount(FULL, "size=128k")
    mount(RO, "ro,size=1m")
    trace = os.path.join(TMP, "t.h5")
    subprocess.run([KVS, "capture", "--model", MODEL, "--prompt", "The quick brown fox jumps over the lazy dog. " * 4,
                    "-n", "2", "--compress", "none", "-q", "-o", trace], check=True)
    res = os.path.join(TMP, "r.h5")
    subprocess.run([KVS, "replay", trace, "--policy", "h2o:budget=8", "-q", "--out", res], check=True)

    # A full disk: the trace (~1 MB uncompressed) does not fit in 128 KiB.
    out = os.path.join(FULL, "t.h5")
    expect_fault("capture to a full disk", ["capture", "--prompt", "The quick brown fox " * 8,
                                            "-n", "2", "--compress", "none", "-q", "-o", out],
                 out, "No space left on device")
    # Results: a replay with checkpoints of every step is larger than 128 KiB.
    out = os.path.join(FULL, "r.h5")
    expect_fault("replay to a full disk", ["replay", trace, "--policy", "h2o:budget=8", "--policy",
                                           "tova:budget=8", "--checkpoints", "1000", "-q", "--out", out],
                 out, "")
    out = os.path.join(FULL, "m.h5")
    expect_fault("merge to a full disk", ["merge", "-q", "-o", out] + [res] * 40, out, "")
    # A read-only directory: refused before any work (capture: when it takes its output's lock).
    for cmd, args in [("replay", ["replay", trace, "--policy", "full", "-q"]),
                      ("sweep", ["sweep", trace, "--policy", "h2o", "--budgets", "8", "-q"]),
                      ("capture", ["capture", "--prompt", "Hello there", "-q"])]:
        out = os.path.join(RO, cmd + ".h5")
        p = expect_fault(f"{cmd} to a read-only directory",
                         args + ["-o" if cmd == "capture" else "--out", out], out,
                         "Read-only file system")
finally:
    cleanup()

if cli_check.finish():
    sys.exit(1)
print("all passed")
