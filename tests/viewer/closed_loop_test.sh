#!/usr/bin/env bash
# Screenshot test of kvscope-view's closed-loop view on real files made here with the embedded
# model: a 192-token trace of a text (kvscope capture), a sweep of it (replay: h2o and window at
# budget 64, and full; prefill mode, P = 128), and kvscope eval --task ppl on the same text
# (--ctx 192, one window, prefill mode, P = 128) of the same three specs plus tova (closed loop
# only: a row without a match).
#   usage: closed_loop_test.sh KVSCOPE_VIEW CHECK_PNG OUT_DIR KVSCOPE MODEL TEXT
# Checks: the view is drawn with every run; its CSV export (--csv) has one row per spec, matches
# replay and closed loop where both exist, and its numbers equal the ones kvscope wrote (the
# sweep's and eval's own --csv); the picture differs from the view with the replay alone (which
# says no closed-loop run is open) in the table and in the scatter, whose plot holds the points'
# colours. Exit 77 (skipped) without xvfb-run, kvscope or the model.
set -euo pipefail
VIEW=$1 CHECK=$2 OUT=$3 KVS=${4:-} MODEL=${5:-} TEXT=${6:-}
if ! command -v xvfb-run >/dev/null; then
  echo "KVS_SKIPPED: xvfb-run not found (Debian: apt-get install xvfb libgl1-mesa-dri xauth)"
  exit 77
fi
if [[ -z "$KVS" || ! -x "$KVS" ]]; then echo "KVS_SKIPPED: no kvscope binary"; exit 77; fi
if [[ ! -f "$MODEL" ]]; then echo "KVS_SKIPPED: model not found at $MODEL"; exit 77; fi
rm -rf "$OUT"; mkdir -p "$OUT"
# One thread: on a loaded machine (ctest -j2 beside other builds) libgomp's spinning threads made
# this eval take minutes instead of ~20 s.
export OMP_NUM_THREADS=1
t0=$SECONDS
"$KVS" capture -m "$MODEL" -f "$TEXT" --ctx 192 -o "$OUT/trace.h5" -q
P=(--mode prefill --prefill-len 128)
"$KVS" sweep "$OUT/trace.h5" --policy h2o --policy window --policy full --budgets 64 "${P[@]}" \
  -o "$OUT/replay.h5" --csv "$OUT/replay.csv" -q >/dev/null
"$KVS" eval -m "$MODEL" --task ppl -f "$TEXT" --ctx 192 --max-windows 1 "${P[@]}" --policy h2o \
  --policy window --policy full --policy tova --budgets 64 -o "$OUT/eval.h5" \
  --csv "$OUT/eval.csv" -q >/dev/null
echo "kvscope capture + sweep + eval: $((SECONDS - t0)) s"

X=(timeout 90 xvfb-run -a -s "-screen 0 1920x1200x24")
shot() { "${X[@]}" "$VIEW" "$@" --view closed-loop --size 1200x800 --frames 2; }
# The replay alone: the view says that no closed-loop run is open.
shot "$OUT/replay.h5" --screenshot "$OUT/replay_only.png" --csv "$OUT/replay_only.csv" \
  >"$OUT/replay_only.out"
cat "$OUT/replay_only.out"
grep -q "(1200 x 800, closed-loop view, 3 runs)" "$OUT/replay_only.out"
# Both files (several files at once), and the trace: 7 runs.
shot "$OUT/trace.h5" "$OUT/replay.h5" "$OUT/eval.h5" --screenshot "$OUT/closed_loop.png" \
  --csv "$OUT/closed_loop.csv" >"$OUT/closed_loop.out"
cat "$OUT/closed_loop.out"
grep -q "(1200 x 800, closed-loop view, 7 runs)" "$OUT/closed_loop.out"
"$CHECK" size "$OUT/closed_loop.png" 1200 800
# The table (top of the panel) and the scatter (below it) differ from the replay-only view.
"$CHECK" differ "$OUT/replay_only.png" "$OUT/closed_loop.png" 345 60 1195 240 0.05
"$CHECK" differ "$OUT/replay_only.png" "$OUT/closed_loop.png" 420 330 1190 740 0.01
"$CHECK" busy "$OUT/closed_loop.png" 420 330 1190 740 12

# The CSV rows are the files' numbers.
python3 - "$OUT" <<'PY'
import csv, math, sys
out = sys.argv[1]
rows = {r["spec"]: r for r in csv.DictReader(open(f"{out}/closed_loop.csv"))}
rep = {r["spec"]: r for r in csv.DictReader(open(f"{out}/replay.csv"))}
ev = {r["spec"]: r for r in csv.DictReader(open(f"{out}/eval.csv"))}
only = list(csv.DictReader(open(f"{out}/replay_only.csv")))
assert len(rep) == 3 and len(ev) == 4, (rep.keys(), ev.keys())
assert set(rows) == set(rep) | set(ev), (rows.keys(), rep.keys(), ev.keys())
assert len(only) == 3 and all(r["eval_runs"] == "0" and r["eval_kl_mean"] == "" for r in only), only
def close(a, b, rel=2e-5, abs_=1e-6):
    a, b = float(a), float(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
matched = 0
for spec, r in rows.items():
    assert r["mode"] == "prefill" and r["prefill_len"] == "128", r
    if spec in rep:
        assert r["replay_runs"] == "1", r
        assert close(r["replay_recall_mean"], rep[spec]["recall_mean"]), (spec, r, rep[spec])
        assert close(r["replay_err_mean"], rep[spec]["err_mean"]), (spec, r, rep[spec])
        assert close(r["replay_bytes_mean"], rep[spec]["bytes_mean"], abs_=0.51), (spec, r)
    else:
        assert r["replay_runs"] == "0" and r["replay_err_mean"] == "", r
    if spec in ev:
        assert r["eval_runs"] == "1" and r["task"] == "ppl", r
        for k in ("kl_mean", "kl_p95", "delta_ppl", "ppl", "top1_agree", "kv_bytes_mean",
                  "offload_bytes_mean"):
            assert close(r["eval_" + k], ev[spec][k], rel=1e-9), (spec, k, r, ev[spec])
    matched += spec in rep and spec in ev
assert matched == 3, matched
# Compression costs the closed loop something: h2o, window, tova keep 64 of the 128-token prompt.
assert all(float(rows[s]["eval_kl_mean"]) > 0 for s in rows if not s.startswith("full")), rows
print(f"closed-loop CSV: {len(rows)} specs, {matched} matched, values equal the files'")
PY
echo "closed-loop view OK: $OUT ($((SECONDS - t0)) s)"
