#!/usr/bin/env python3
"""`kvscope bench` on the real model: the text report and --json are well-formed, hold the lengths
that were asked for, and their numbers are consistent with each other (tokens/s = tokens / seconds
as printed, the thread count is OMP_NUM_THREADS, peak memory holds at least the weights, the
capture's writer time is part of the capture time).

Usage: test_bench.py KVSCOPE MODEL   (exit 77 = skipped: no model)
"""
import json
import math
import os
import re
import subprocess
import sys

KVS, MODEL = sys.argv[1:3]
if not os.path.exists(MODEL):
    print(f"KVS_SKIPPED: model not found at {MODEL} (run scripts/setup.sh)")
    sys.exit(77)
fails = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)


def bench(*args, ctx="64"):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    p = subprocess.run([KVS, "bench", "-m", MODEL, "--decode-ctx", ctx, "--decode-n", "8",
                        "--reps", "1", *args], capture_output=True, text=True, env=env)
    check(p.returncode == 0, f"bench {' '.join(args)} exits 0 ({p.stderr.strip()[:200]})")
    return p.stdout


# The weights alone (a lower bound on what the process holds at its peak).
model_mib = os.path.getsize(os.path.realpath(MODEL)) / 2**20

# --- text ------------------------------------------------------------------------------------
out = bench("--prefill", "96", "160", ctx="64,24")
lines = out.strip().splitlines()
print("\n".join("  | " + l for l in lines))
pre = [re.fullmatch(r"prefill +(\d+) tokens: +([\d.]+) tokens/s \(([\d.]+) s\)", l) for l in lines]
pre = [m for m in pre if m]
check([int(m[1]) for m in pre] == [96, 160], "one prefill line per length asked, in order")
for m in pre:
    n, rate, s = int(m[1]), float(m[2]), float(m[3])
    # The seconds are printed to 0.01 s and the rate to 0.1 token/s: the rate must lie within
    # what n / seconds allows for those roundings.
    lo, hi = n / (s + 0.005) - 0.05, (n / (s - 0.005) + 0.05) if s > 0.005 else math.inf
    check(s > 0 and lo <= rate <= hi,
          f"prefill {n}: {rate} tokens/s is {n} tokens / {s} s (allowed {lo:.1f} .. {hi:.1f})")
dec = [re.fullmatch(r"decode at (\d+) tokens of context: ([\d.]+) tokens/s", l) for l in lines]
dec = [m for m in dec if m]
check([int(m[1]) for m in dec] == [64, 24] and all(float(m[2]) > 0 for m in dec),
      "one decode line per context asked for, in order, positive rates")
rss = [re.fullmatch(r"peak RSS: (\d+) MiB, threads: (\d+)", l) for l in lines]
rss = [m for m in rss if m]
check(len(rss) == 1, "one peak RSS line")
if rss:
    check(int(rss[0][2]) == 2, f"threads {rss[0][2]} = OMP_NUM_THREADS (2)")
    check(int(rss[0][1]) >= model_mib,
          f"peak RSS {rss[0][1]} MiB >= the model file ({model_mib:.0f} MiB)")
check(len(lines) == len(pre) + len(dec) + len(rss), "no other lines")

# --- JSON, with the capture timing -------------------------------------------------------------
out = bench("--prefill", "128", "--capture", "--json")
try:
    j = json.loads(out)
except json.JSONDecodeError as e:
    j = {}
    check(False, f"--json prints one JSON object ({e}): {out[:200]}")
print("  | " + json.dumps(j))
check(set(j) == {"model", "threads", "load_seconds", "prefill", "capture", "decode",
                 "peak_rss_mib"}, f"JSON keys {sorted(j)}")
if j:
    check(isinstance(j["model"], str) and j["model"] != "", "model described")
    check(j["threads"] == 2, f"threads {j['threads']} = OMP_NUM_THREADS")
    check(0 <= j["load_seconds"] < 600, f"load_seconds {j['load_seconds']}")
    check(list(j["prefill"]) == ["128"] and j["prefill"]["128"] > 0, f"prefill {j['prefill']}")
    check(len(j["decode"]) == 1 and j["decode"][0].get("context") == 64 and
          j["decode"][0].get("tokens_per_second", 0) > 0, f"decode {j['decode']}")
    check(j["peak_rss_mib"] >= model_mib, f"peak_rss_mib {j['peak_rss_mib']:.0f} >= model")
    c = j["capture"].get("128", {})
    check(set(c) == {"prefill_last_logits_s", "prefill_all_logits_s", "capture_s",
                     "capture_writer_s", "kb_per_token", "capture_logits_lse_s",
                     "capture_logits_none_s"}, f"capture fields {sorted(c)}")
    if c:
        check(all(v > 0 for v in c.values()), "capture timings and size positive")
        check(c["capture_writer_s"] <= c["capture_s"], "writer time is part of the capture time")
        # Every layer's q, k, v, o at f16 for 128 tokens alone exceed this many KB per token:
        # 30 layers x (9 + 3 + 3 + 9 heads) x 64 x 2 bytes, before compression (gzip:1 does not
        # shrink noisy f16 data tenfold).
        raw_kb = 30 * 24 * 64 * 2 / 1e3
        check(raw_kb / 10 < c["kb_per_token"] < raw_kb * 2,
              f"{c['kb_per_token']:.1f} KB/token vs {raw_kb:.1f} KB raw q/k/v/o")

# --- decode over compressed caches (--policy) ---------------------------------------------------
out = bench("--prefill", "16", "--json", "--policy", "quant:bits=4,residual=16",
            "--policy", "quant:bits=2,residual=16")
try:
    j = json.loads(out)
except json.JSONDecodeError as e:
    j = {}
    check(False, f"--policy --json prints one JSON object ({e}): {out[:200]}")
rows = j.get("decode_caches", [])
check([r.get("cache") for r in rows] == ["dense", "quant:bits=4,residual=16",
                                         "quant:bits=2,residual=16"],
      f"one decode row per cache, dense first: {[r.get('cache') for r in rows]}")
if len(rows) == 3:
    d, q4, q2 = rows
    # Dense fp32: every one of the 72 held tokens (64 + the 8 decoded - the last) in 30 layers x
    # 3 KV heads, K and V at 4 bytes x 64 plus a 4-byte position.
    check(d["kv_bytes"] == 72 * 30 * 3 * (2 * 64 * 4 + 4), f"dense bytes {d['kv_bytes']}")
    check(d["kv_bytes"] > q4["kv_bytes"] > q2["kv_bytes"] > 0,
          f"bytes dense {d['kv_bytes']} > 4-bit {q4['kv_bytes']} > 2-bit {q2['kv_bytes']}")
    for r in rows:
        check(abs(r["ms_per_token"] * r["tokens_per_second"] - 1e3) < 1e-6 * 1e3,
              f"{r['cache']}: ms/token x tokens/s = 1000")
        check(abs(r["speedup_vs_dense"] - d["ms_per_token"] / r["ms_per_token"]) < 1e-9,
              f"{r['cache']}: speedup is the ratio of the times")
        check(0 < r["floor_ms_per_token"], f"{r['cache']}: floor positive")
    # The floor counts the bytes read: less for the smaller caches.
    check(d["floor_ms_per_token"] > q4["floor_ms_per_token"] > q2["floor_ms_per_token"],
          "floors ordered by bytes")
    check(j.get("read_bandwidth_gbs", 0) > 0, "read bandwidth measured")

print(f"{len(fails)} failed")
sys.exit(1 if fails else 0)
