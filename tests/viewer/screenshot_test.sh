#!/usr/bin/env bash
# Screenshot test of kvscope-view under Xvfb with Mesa's software OpenGL:
#   usage: screenshot_test.sh KVSCOPE_VIEW MAKE_FIXTURES CHECK_PNG OUT_DIR [KVSCOPE]
# Renders every view of a synthetic trace with a results file, checks the image size, that the
# timeline heatmap is not blank (many colours), that it differs between two policies, and that a
# newer-schema or non-HDF5 file gives a message (and a picture), not a crash. With kvscope
# ($KVSCOPE_BIN, else the 5th argument): the policy panel's Run path headlessly (--run-policy) on
# the trace alone: a run joins the list and the timeline shows it; an invalid spec gives the error
# in the window.
# Exit 77 (skipped) without xvfb-run.
set -euo pipefail
VIEW=$1 FIX=$2 CHECK=$3 OUT=$4
KVS=${KVSCOPE_BIN:-${5:-}}
if ! command -v xvfb-run >/dev/null; then
  echo "KVS_SKIPPED: xvfb-run not found (Debian: apt-get install xvfb libgl1-mesa-dri xauth)"
  exit 77
fi
rm -rf "$OUT"; mkdir -p "$OUT"
"$FIX" "$OUT/fx" >/dev/null
# timeout: a hang fails the test instead of holding it for its whole TIMEOUT.
X=(timeout 90 xvfb-run -a -s "-screen 0 1920x1200x24")
shot() { "${X[@]}" "$VIEW" "$@" --size 1200x800 --frames 2; }
# The plot area of the timeline at 1200x800 (sidebar 330 px, axis margins).
R="520 140 1040 640"

for v in timeline tokens grid curves; do
  shot "$OUT/fx/trace.h5" "$OUT/fx/a.h5" --view $v --step 120 --screenshot "$OUT/a_$v.png"
  "$CHECK" size "$OUT/a_$v.png" 1200 800
done
shot "$OUT/fx/trace.h5" "$OUT/fx/b.h5" --view timeline --step 120 --screenshot "$OUT/b_timeline.png"
# Two policies: the held/evicted heatmaps differ.
"$CHECK" busy "$OUT/a_timeline.png" $R 4
"$CHECK" differ "$OUT/a_timeline.png" "$OUT/b_timeline.png" $R 0.05
# A trace alone: raw attention received, many colours.
shot "$OUT/fx/trace.h5" --view timeline --screenshot "$OUT/trace_timeline.png"
"$CHECK" busy "$OUT/trace_timeline.png" $R 30
# Compare A - B in one picture; a 2x figure.
shot "$OUT/fx/trace.h5" "$OUT/fx/a.h5" "$OUT/fx/b.h5" --a 0 --b 1 --view timeline --screenshot "$OUT/diff.png"
"$CHECK" busy "$OUT/diff.png" $R 3
shot "$OUT/fx/trace.h5" --view grid --scale 2 --screenshot "$OUT/grid_2x.png"
"$CHECK" size "$OUT/grid_2x.png" 2400 1600
# Bad files: a message in the window, exit 0, a picture.
shot "$OUT/fx/bad.h5" --screenshot "$OUT/bad.png" 2>"$OUT/bad.err"
grep -q "schema_version 2 is newer than this kvscope reads (1)" "$OUT/bad.err"
echo "not hdf5" >"$OUT/notes.txt"
shot "$OUT/notes.txt" --screenshot "$OUT/notes.png" 2>"$OUT/notes.err"
grep -q "not an HDF5 file" "$OUT/notes.err"
"$CHECK" size "$OUT/notes.png" 1200 800
# The policy panel, headless: --run-policy runs kvscope replay like the Run button, waits, then
# the screenshot shows the new run (held, not the trace's attention).
if [[ -n "$KVS" && -x "$KVS" ]]; then
  export KVSCOPE_BIN=$KVS
  shot "$OUT/fx/trace.h5" --view timeline --run-policy window:budget=24 \
    --screenshot "$OUT/policy_run.png" >"$OUT/policy_run.out" 2>"$OUT/policy_run.err"
  grep -q "timeline view, 1 run)" "$OUT/policy_run.out"
  "$CHECK" differ "$OUT/trace_timeline.png" "$OUT/policy_run.png" $R 0.1
  # Two specs, one after the other: two runs.
  shot "$OUT/fx/trace.h5" --view curves --run-policy window:budget=24 \
    --run-policy h2o:budget=32 --screenshot "$OUT/policy_two.png" >"$OUT/policy_two.out"
  grep -q "curves view, 2 runs)" "$OUT/policy_two.out"
  # An invalid spec: kvscope's error in the window (and on stderr), exit 0, no run.
  shot "$OUT/fx/trace.h5" --view timeline --run-policy bogus:budget=3 \
    --screenshot "$OUT/policy_bad.png" >"$OUT/policy_bad.out" 2>"$OUT/policy_bad.err"
  grep -q "unknown policy 'bogus'" "$OUT/policy_bad.err"
  grep -q "timeline view, 0 runs)" "$OUT/policy_bad.out"
  "$CHECK" differ "$OUT/trace_timeline.png" "$OUT/policy_bad.png" 0 0 1200 60 0.01
else
  echo "policy panel cases skipped: no kvscope (set KVSCOPE_BIN or build the kvscope target)"
fi
echo "viewer screenshots OK: $OUT"
