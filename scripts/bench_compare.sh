#!/usr/bin/env bash
# Side-by-side speed of two commits on this machine: builds BASE (default: main's merge base
# with HEAD's parent, i.e. HEAD~1) in a worktree under build/compare/, then runs the same
# commands with both binaries in turn (decode at 8192 tokens of context over the dense and the
# packed caches; replay of a 2048-token passkey trace in both modes). Run it with nothing else
# on the machine: the figures are wall times.
# Usage: scripts/bench_compare.sh [BASE]      (after scripts/setup.sh release)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=${1:-HEAD~1}
NEW=$ROOT/build/release/cli/kvscope
[ -x "$NEW" ] || { echo "bench_compare: build first (scripts/setup.sh release)" >&2; exit 1; }
WT=$ROOT/build/compare/$(git rev-parse --short "$BASE")
if [ ! -x "$WT/build/release/cli/kvscope" ]; then
  rm -rf "$WT"; git worktree prune
  git worktree add -q --detach "$WT" "$BASE"
  ln -s "$ROOT/models" "$WT/models"
  echo "[compare] building $BASE (log: $WT/build.log)" >&2
  (cd "$WT" && cmake --preset release >"$WT/build.log" 2>&1 &&
     cmake --build build/release -j"$(nproc)" --target kvscope >>"$WT/build.log" 2>&1) ||
    { echo "bench_compare: the build of $BASE failed (see $WT/build.log)" >&2; exit 1; }
fi
OLD=$WT/build/release/cli/kvscope
MODEL=$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf  # a binary's default is its own tree's
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
"$NEW" capture --model "$MODEL" --task passkey --ctx 2048 --seed 7 -q -o "$TMP/passkey.h5"
for which in OLD NEW; do
  bin=${!which}
  echo "== $which ($([ $which = OLD ] && git rev-parse --short "$BASE" || git rev-parse --short HEAD))"
  "$bin" bench --model "$MODEL" --prefill 16 --decode-ctx 8192 --decode-n 24 --reps 2 \
    --policy quant:bits=4 --policy quant:bits=2 2>"$TMP/err" >"$TMP/out" ||
    { cat "$TMP/err" >&2; exit 1; }
  tail -3 "$TMP/out"
  for spec in "h2o:budget=256 --mode stream" "snapkv:budget=256 --mode stream" \
              "full --mode stream" "h2o:budget=256 --mode prefill" "snapkv:budget=256 --mode prefill"; do
    s=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$bin" replay "$TMP/passkey.h5" --policy $spec -q --out "$TMP/r.h5" >/dev/null
    e=$(date +%s.%N)
    printf 'replay %-34s %6.2f s\n' "$spec" "$(echo "$e - $s" | bc)"
  done
done
