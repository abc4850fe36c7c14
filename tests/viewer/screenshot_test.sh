#!/usr/bin/env bash
# Screenshot test of kvscope-view under Xvfb with Mesa's software OpenGL:
#   usage: screenshot_test.sh KVSCOPE_VIEW MAKE_FIXTURES CHECK_PNG OUT_DIR [KVSCOPE]
# Renders every view of a synthetic trace with two results files (two policies); checks that each
# view is drawn (it differs from the timeline) with the run's data (it differs between the two
# policies in the view's plot region), that the timeline heatmap is not blank (many colours), that
# a kmeans run's folded tokens show in the folded colour (timeline and tokens), and that a
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

# Every view with run A, then with run B (another policy): the window reports the view it drew,
# each view differs from the timeline over the content area (the view switched), and each shows
# the run's data: A and B differ inside the view's own plot region (token cells, the layer x head
# cells, the four curves). Measured at 1200x800 (Mesa llvmpipe): tokens 0.25, grid 0.86, curves
# 0.04 of the region differ between A and B; 0.80-0.84 between a view and the timeline.
for run in a b; do
  for v in timeline tokens grid curves; do
    shot "$OUT/fx/trace.h5" "$OUT/fx/$run.h5" --view $v --step 120 \
      --screenshot "$OUT/${run}_$v.png" >"$OUT/${run}_$v.out"
    cat "$OUT/${run}_$v.out"
    grep -q "(1200 x 800, $v view, 1 run)" "$OUT/${run}_$v.out"
  done
done
"$CHECK" size "$OUT/a_timeline.png" 1200 800
for v in tokens grid curves; do "$CHECK" differ "$OUT/a_timeline.png" "$OUT/a_$v.png" 345 50 1095 740 0.3; done
"$CHECK" differ "$OUT/a_tokens.png" "$OUT/b_tokens.png" 345 50 1095 240 0.1
"$CHECK" differ "$OUT/a_grid.png" "$OUT/b_grid.png" 400 100 590 195 0.3
"$CHECK" differ "$OUT/a_curves.png" "$OUT/b_curves.png" 420 120 1160 730 0.015
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
# Merged entries: a kmeans replay of the trace (km.h5, written by kvscope's own replay and
# results_io). In one unit the timeline draws folded tokens in the folded colour (#ff40c8, exact:
# one unit folds or not); the window toy run (no merges) has none of it. The token strip strikes
# folded tokens out and outlines merged entries in it.
shot "$OUT/fx/trace.h5" "$OUT/fx/km.h5" --view timeline --quantity held --layer 1 --head 0 \
  --screenshot "$OUT/km_timeline.png" >"$OUT/km_timeline.out"
grep -q "(1200 x 800, timeline view, 1 run)" "$OUT/km_timeline.out"
"$CHECK" colour "$OUT/km_timeline.png" $R ff40c8 3 0.2 1
"$CHECK" colour "$OUT/a_timeline.png" $R ff40c8 60 0 0
shot "$OUT/fx/trace.h5" "$OUT/fx/km.h5" --view timeline --quantity held \
  --screenshot "$OUT/km_timeline_all.png" >/dev/null
"$CHECK" busy "$OUT/km_timeline_all.png" $R 4
shot "$OUT/fx/trace.h5" "$OUT/fx/km.h5" --view tokens --quantity held --layer 1 --head 0 \
  --step 120 --screenshot "$OUT/km_tokens.png" >/dev/null
"$CHECK" colour "$OUT/km_tokens.png" 345 50 1095 740 ff40c8 3 0.002 1
"$CHECK" colour "$OUT/a_tokens.png" 345 50 1095 740 ff40c8 60 0 0
# Bad files: a message in the window, exit 0, a picture.
shot "$OUT/fx/bad.h5" --screenshot "$OUT/bad.png" 2>"$OUT/bad.err"
grep -q "schema_version 4 is newer than this kvscope reads (3)" "$OUT/bad.err"
echo "not hdf5" >"$OUT/notes.txt"
shot "$OUT/notes.txt" --screenshot "$OUT/notes.png" 2>"$OUT/notes.err"
grep -q "not an HDF5 file" "$OUT/notes.err"
"$CHECK" size "$OUT/notes.png" 1200 800
# The policy panel, headless: --run-policy runs a replay like the Run button (in-process: the
# simulator library, the layer on screen first), waits, then the screenshot shows the new run
# (held, not the trace's attention).
unset KVSCOPE_BIN
shot "$OUT/fx/trace.h5" --view timeline --run-policy window:budget=24 \
  --screenshot "$OUT/policy_run.png" >"$OUT/policy_run.out" 2>"$OUT/policy_run.err"
grep -q "timeline view, 1 run)" "$OUT/policy_run.out"
"$CHECK" differ "$OUT/trace_timeline.png" "$OUT/policy_run.png" $R 0.1
# With a layer on screen: that layer's results come first, then the whole run takes their place
# (still one run).
shot "$OUT/fx/trace.h5" --view timeline --layer 1 --run-policy h2o:budget=32 \
  --screenshot "$OUT/policy_layer.png" >"$OUT/policy_layer.out" 2>"$OUT/policy_layer.err"
grep -q "timeline view, 1 run)" "$OUT/policy_layer.out"
# An invalid spec: the simulator's error in the window (and on stderr), exit 0, no run.
shot "$OUT/fx/trace.h5" --view timeline --run-policy bogus:budget=3 \
  --screenshot "$OUT/policy_bad.png" >"$OUT/policy_bad.out" 2>"$OUT/policy_bad.err"
grep -q "unknown policy 'bogus'" "$OUT/policy_bad.err"
grep -q "timeline view, 0 runs)" "$OUT/policy_bad.out"
"$CHECK" differ "$OUT/trace_timeline.png" "$OUT/policy_bad.png" 0 0 1200 60 0.01
# The subprocess backend ($KVSCOPE_BIN: kvscope replay as a child process): two specs, one after
# the other, two runs.
if [[ -n "$KVS" && -x "$KVS" ]]; then
  KVSCOPE_BIN=$KVS shot "$OUT/fx/trace.h5" --view curves --run-policy window:budget=24 \
    --run-policy h2o:budget=32 --screenshot "$OUT/policy_two.png" >"$OUT/policy_two.out"
  grep -q "curves view, 2 runs)" "$OUT/policy_two.out"
else
  echo "subprocess backend case skipped: no kvscope (set KVSCOPE_BIN or build the kvscope target)"
fi
echo "viewer screenshots OK: $OUT"
