"""Pieces the study scripts share (agreement.py, seeds_study.py, orderings.py)."""
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# KVS_BIN: another build (a copy, so that rebuilding during a long study does not change it).
KVS = os.environ.get("KVS_BIN") or os.path.join(ROOT, "build", "release", "cli", "kvscope")
# The three corpus texts the studies run on (../shared/corpus, public domain).
TEXTS = [os.path.join(ROOT, "..", "shared", "corpus", n) for n in
         ("alice_in_wonderland.txt", "pride_and_prejudice.txt", "adventures_of_sherlock_holmes.txt")]


def run(args):
    """Runs a command; returns its stdout and the seconds it took."""
    t0 = time.time()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return out, time.time() - t0


def write_window(text, n_chars, path):
    """Writes n_chars of corpus file `text` to `path`, starting at the first paragraph after its
    first 2000 characters (past the Project Gutenberg header)."""
    with open(text, encoding="utf-8", errors="replace") as f:
        body = f.read()
    start = body.find("\n\n", 2000)
    with open(path, "w", encoding="utf-8") as f:
        f.write(body[start + 2:start + 2 + n_chars])


def commit():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()


def policy_args(specs):
    out = []
    for p in specs:
        out += ["--policy", p]
    return out
