#!/usr/bin/env bash
# The main job, the lab's loop on the embedded model (SmolLM2-135M-Instruct):
#   1. capture: a ~2000-token passkey prompt and the model's short answer -> traces/passkey.h5
#   2. replay:  every policy at two budgets plus uniform quantization, each in the mode its paper
#               evaluates (docs/policies.md: prompt compression for snapkv / pyramidkv / adakv /
#               dynamickv, streaming for the others), all 30 layers and 9 heads
#               -> traces/results.h5 + traces/summary.csv, summary table on stdout
#   3. closed loop: the same prompt with the compressed cache inside the engine (kvscope eval):
#               does the model still answer? -> traces/closed_loop.csv, table on stdout
#   4. figures: the standard paper figures (PDF + PNG + CSV) -> traces/figures/
#   5. viewer:  opens kvscope-view on them when a display is available; otherwise writes
#               screenshots next to the results (when the viewer is built).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh release
KVS=build/release/cli/kvscope
VIEW=build/release/viewer/kvscope-view
TRACE=traces/passkey.h5 RESULTS=traces/results.h5 SUMMARY=traces/summary.csv

echo "== 1. kvscope capture: a 2048-token passkey prompt + the answer -> $TRACE" >&2
$KVS capture --task passkey --ctx 2048 --depth 0.5 --seed 7 --out "$TRACE"
$KVS info "$TRACE" | grep -E "^(tokens|storage|task|answer|generated)" || true

echo "== 2. kvscope sweep: 10 policies x budgets 64, 256 + quantization, each in its paper's mode" >&2
# Streaming methods hold the budget at every step; prompt-compression methods compress the
# prompt once (prefill mode) and then decode. The two sweeps are joined into one results file.
$KVS sweep "$TRACE" --mode stream \
  --policy full --policy window --policy h2o --policy tova --policy agd --policy agacc \
  --policy quant:bits=4 --policy quant:bits=2 --policy quant:format=q8_0,residual=0 \
  --budgets 64,256 --checkpoints 16 --out traces/results_stream.h5 >/dev/null
$KVS sweep "$TRACE" --mode prefill \
  --policy snapkv --policy pyramidkv --policy adakv --policy dynamickv \
  --budgets 64,256 --checkpoints 16 --out traces/results_prefill.h5 >/dev/null
$KVS merge -o "$RESULTS" traces/results_stream.h5 traces/results_prefill.h5 --csv "$SUMMARY"

echo "== 3. kvscope eval: the same passkey prompt with the compressed cache in the loop (prefill mode)" >&2
$KVS eval --task passkey --lengths 2048 --depths 0.5 --first-seed 7 --mode prefill \
  --policy full --policy window --policy h2o --policy snapkv --policy adakv --policy agacc \
  --policy quant:bits=4 --budgets 64,256 --csv traces/closed_loop.csv

echo "== 4. kvscope figures -> traces/figures/" >&2
$KVS figures "$RESULTS" --trace "$TRACE" --out traces/figures

echo "== 5. viewer" >&2
if [ -x "$VIEW" ]; then
  if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
    echo "opening: $VIEW $TRACE $RESULTS" >&2
    "$VIEW" "$TRACE" "$RESULTS"
  else
    # Run A = snapkv at 256 (run 15 of the merged results, from 0: 14 stream runs, then snapkv 64, 256),
    # B = window at 256.
    for v in timeline tokens grid curves; do
      if command -v xvfb-run >/dev/null; then
        timeout 120 xvfb-run -a -s "-screen 0 1920x1200x24" "$VIEW" "$TRACE" "$RESULTS" \
          --screenshot "traces/view_$v.png" --view "$v" --size 1600x1000 --a 15 --b 2 \
          --layer 14 --head 0 --no-settings >/dev/null 2>&1 &&
          echo "screenshot: traces/view_$v.png" >&2
      fi
    done
    echo "no display: open them later with  $VIEW $TRACE $RESULTS" >&2
  fi
else
  echo "the viewer is not built (needs libglfw3-dev, libimgui-dev); results: $RESULTS, $SUMMARY" >&2
fi
