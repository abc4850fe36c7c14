"""Shared by the command-line checks (test_edges.py, test_faults.py): running kvscope, and the
rule every refused input must follow (a non-zero exit that is not a crash, exactly one
`error:` line on stderr, matching what the check expects)."""
import os
import subprocess

failures = []


def ok(msg):
    print("ok   " + msg)


def bad(msg):
    failures.append(msg)
    print("FAIL " + msg)


def run(kvs, args, model=None, threads=None, check=True):
    """kvscope ARGS (with --model MODEL first for the commands that load one)."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if model is not None and args[0] in ("capture", "eval", "perplexity"):
        args = [args[0], "--model", model] + args[1:]
    p = subprocess.run([kvs] + args, capture_output=True, text=True, env=env, errors="replace")
    if check and p.returncode != 0:
        raise SystemExit(f"FAIL kvscope {' '.join(args)}: exit {p.returncode}\n{p.stderr}")
    return p


def refusal(name, p, pattern, names=None):
    """None when p was refused by the rule above (the error line containing `pattern` and, when
    given, one of `names`); else what was wrong, recorded as a failure."""
    errs = [l for l in p.stderr.splitlines() if "error:" in l]
    if p.returncode == 0:
        why = "exit 0"
    elif p.returncode < 0 or p.returncode >= 128:
        why = f"crashed (exit {p.returncode}): {p.stderr[-500:]}"
    elif len(errs) != 1 or pattern not in errs[0] or (names and not any(n in errs[0] for n in names)):
        want = f"one error line containing {pattern!r}" + (f" naming {names[0]}" if names else "")
        why = f"expected {want}, got: {p.stderr[-800:]!r}"
    else:
        return errs[0]
    bad(f"{name}: {why}")
    return None


def finish():
    """Exit status of the check: 1 when anything failed."""
    if failures:
        print(f"{len(failures)} failed")
        return 1
    return 0
