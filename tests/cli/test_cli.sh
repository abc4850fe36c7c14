#!/usr/bin/env bash
# CLI tests of `kvscope`: real runs on the embedded model, and bad input that must give one clear
# line on stderr, a non-zero exit, and no crash (exit code < 128).
# Usage: test_cli.sh KVSCOPE MODEL FIXTURES   (exit 77 = skipped: no model)
set -uo pipefail
KVS=$1 MODEL=$2 FIX=$3
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

# expect_error NAME PATTERN CMD...: non-zero, not a crash, stderr matches PATTERN.
expect_error() {
  local name=$1 pat=$2; shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ $rc -eq 0 ]; then bad "$name: exit 0"; return; fi
  if [ $rc -ge 128 ]; then bad "$name: crashed (exit $rc)"; cat "$TMP/err"; return; fi
  if ! grep -qE -- "$pat" "$TMP/err"; then bad "$name: stderr lacks /$pat/:"; cat "$TMP/err"; return; fi
  ok "$name ($(head -c 160 "$TMP/err" | head -n 1))"
}

if [ ! -f "$MODEL" ]; then echo "KVS_SKIPPED: model not found at $MODEL (run scripts/setup.sh)"; exit 77; fi

# --- real runs ---------------------------------------------------------------------------
out1=$("$KVS" generate --prompt "The capital of France is" -n 12 --quiet 2>"$TMP/err") || bad "generate failed: $(cat "$TMP/err")"
out2=$("$KVS" generate --prompt "The capital of France is" -n 12 --quiet 2>/dev/null)
if [ -n "$out1" ] && [ "$out1" = "$out2" ] && echo "$out1" | grep -q "Paris"; then
  ok "generate greedy is deterministic and says Paris: $(echo "$out1" | tr '\n' ' ')"
else bad "generate: '$out1' vs '$out2'"; fi

# --chat: the prompt goes through the chat template. transformers' template for this message
# (fixtures/tokenizer_smollm2.json, "chats"[0]) has 37 tokens against 7 for the bare question;
# the model, seeing an assistant turn, answers and ends its turn (<|im_end|>) before -n 24.
q="What is the capital of France?"
want_ids=$(python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["chats"][0]
assert c["messages"] == [{"role": "user", "content": sys.argv[2]}] and c["add_generation_prompt"]
print(len(c["ids"]))' "$FIX/tokenizer_smollm2.json" "$q")
chat=$("$KVS" generate --chat --prompt "$q" -n 24 2>"$TMP/err")
n_prompt=$(sed -nE 's/.*prompt: ([0-9]+) tokens.*/\1/p' "$TMP/err")
n_gen=$(sed -nE 's/.*generated: ([0-9]+) tokens.*/\1/p' "$TMP/err")
first=$(printf '%s\n' "$chat" | head -n 1)
answer=$(printf '%s\n' "$chat" | tail -n +2)
if [ -n "$want_ids" ] && [ "$n_prompt" = "$want_ids" ] && [ "$first" = "$q" ] \
   && [ -n "$n_gen" ] && [ "$n_gen" -gt 0 ] && [ "$n_gen" -lt 24 ] && echo "$answer" | grep -q "Paris"; then
  ok "generate --chat: $n_prompt prompt tokens (template), ended its turn after $n_gen: $answer"
else bad "generate --chat: prompt tokens '$n_prompt' (want $want_ids), generated '$n_gen' (< 24), first line '$first', answer '$answer' / $(cat "$TMP/err")"; fi

s1=$("$KVS" generate --prompt "Once upon a time" -n 16 --temp 0.9 --top-p 0.9 --seed 7 -q 2>/dev/null)
s2=$("$KVS" generate --prompt "Once upon a time" -n 16 --temp 0.9 --top-p 0.9 --seed 7 -q 2>/dev/null)
s3=$("$KVS" generate --prompt "Once upon a time" -n 16 --temp 0.9 --top-p 0.9 --seed 8 -q 2>/dev/null)
if [ "$s1" = "$s2" ] && [ "$s1" != "$s3" ]; then ok "sampling is reproducible per seed"
else bad "sampling seeds: '$s1' '$s2' '$s3'"; fi

# Perplexity end to end (tokenizer + model) against transformers (fixtures/ref_perplexity.json).
json=$("$KVS" perplexity --text-file "$FIX/alice_ch1.txt" --ctx 256 --json --quiet 2>"$TMP/err") || bad "perplexity failed: $(cat "$TMP/err")"
if python3 - "$json" "$FIX/ref_perplexity.json" <<'PY'
import json, sys
got, ref = json.loads(sys.argv[1]), json.load(open(sys.argv[2]))
print(f"  kvscope ppl {got['perplexity']:.5f} over {got['tokens_scored']} tokens; transformers {ref['perplexity']:.5f} over {ref['tokens_scored']}")
assert got["tokens_scored"] == ref["tokens_scored"], "token count differs"
assert abs(got["perplexity"] / ref["perplexity"] - 1) < 1e-4, "perplexity differs"
assert got["tokens_per_second"] > 0
PY
then ok "perplexity --json matches transformers"; else bad "perplexity vs reference: $json"; fi

# --- bad input ----------------------------------------------------------------------------
printf 'not a model at all' >"$TMP/junk.gguf"
head -c 100000 "$MODEL" >"$TMP/truncated.gguf"
: >"$TMP/empty.txt"
python3 -c "print('word ' * 20000)" >"$TMP/long.txt"
expect_error "missing model" "model not found|cannot open" "$KVS" generate -m "$TMP/nope.gguf" -p hi
expect_error "junk model" "not a GGUF file" "$KVS" generate -m "$TMP/junk.gguf" -p hi
expect_error "truncated model" "truncated.gguf" "$KVS" generate -m "$TMP/truncated.gguf" -p hi
expect_error "model folder without config.json" "config.json" "$KVS" generate -m "$TMP" -p hi
expect_error "missing text file" "cannot open text file" "$KVS" perplexity -f "$TMP/none.txt"
expect_error "empty text file" "is empty" "$KVS" perplexity -f "$TMP/empty.txt"
expect_error "prompt longer than the context" "exceeds the context length" "$KVS" generate -p "$(cat "$TMP/long.txt")" -n 4
expect_error "ctx beyond the model" "exceeds the model's context length" "$KVS" perplexity -f "$FIX/alice_ch1.txt" --ctx 100000
expect_error "unknown flag" "--bogus|not expected|Extras" "$KVS" generate --bogus -p hi
expect_error "bad number" "n-predict|Range|not in range|could not be converted" "$KVS" generate -p hi -n 0
expect_error "no subcommand" "subcommand" "$KVS"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
