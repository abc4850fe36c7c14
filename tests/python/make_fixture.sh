#!/usr/bin/env bash
# Shared input of the Python package tests (CTest fixture kvs_py): two small traces of the
# embedded model (a passkey prompt and a text, layers 0, 7, 29), a sweep over both written as
# results + --json, a second results file (window, on both traces) and a kmeans replay of the
# passkey trace (merged entries).
# Usage: make_fixture.sh KVSCOPE MODEL FIXTURES OUTDIR
set -euo pipefail
KVS=$1 MODEL=$2 FIX=$3 OUT=$4
rm -rf "$OUT"
mkdir -p "$OUT"
cd "$OUT"
"$KVS" capture -m "$MODEL" --task passkey --ctx 240 --depth 0.4 --seed 3 --generate 8 \
  --layers 0,7,29 --out pk.h5 -q
"$KVS" capture -m "$MODEL" --text-file "$FIX/alice_ch1.txt" --ctx 200 --layers 0,7,29 \
  --out text.h5 -q
"$KVS" sweep pk.h5 text.h5 --policy full --policy h2o --policy snapkv --policy pyramidkv \
  --policy agd --policy quant:bits=2 --budgets 33,64 --checkpoints 4 -q \
  --out sweep.h5 --csv sweep.csv --json >sweep.json
"$KVS" sweep pk.h5 text.h5 --policy window --budgets 32,64 -q --out window.h5 >/dev/null
# seed 003's k-means: merged entries (merged_into / merged_at, schema 3)
"$KVS" replay pk.h5 --policy kmeans:max_cache_size=48,num_clusters=8,pruning_interval=32,lookback_window=16 \
  --checkpoints 4 -q --out kmeans.h5 >/dev/null
# RazorAttention: its retrieval heads go into the results (unit_role)
"$KVS" replay pk.h5 --mode prefill --policy razor:budget=32,induction=0.34 -q --out razor.h5 \
  >/dev/null
echo "fixture in $OUT: $(ls)"
