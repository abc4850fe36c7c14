#!/usr/bin/env bash
# The main job on the embedded model: set up, generate text from a prompt, measure
# perplexity on a text the set-up installs (the GPL-3 text from Debian's base-files), and
# capture an attention trace of a passkey prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh release
KVS=build/release/cli/kvscope
TEXT=/usr/share/common-licenses/GPL-3
echo "== kvscope generate --chat" >&2
$KVS generate --chat -n 48 --prompt "What is a KV cache in a transformer? Answer in two sentences."
echo "== kvscope perplexity on $TEXT (first 2048 tokens, windows of 512)" >&2
$KVS perplexity --text-file "$TEXT" --ctx 512 --max-tokens 2048
echo "== kvscope capture: a 1024-token passkey prompt into traces/passkey.h5" >&2
$KVS capture --task passkey --ctx 1024 --depth 0.5 --out traces/passkey.h5
$KVS info traces/passkey.h5
