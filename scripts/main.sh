#!/usr/bin/env bash
# The main job on the embedded model: set up, generate text from a prompt, and measure
# perplexity on a text the set-up installs (the GPL-3 text from Debian's base-files).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh release
KVS=build/release/cli/kvscope
TEXT=/usr/share/common-licenses/GPL-3
echo "== kvscope generate --chat" >&2
$KVS generate --chat -n 48 --prompt "What is a KV cache in a transformer? Answer in two sentences."
echo "== kvscope perplexity on $TEXT (first 2048 tokens, windows of 512)" >&2
$KVS perplexity --text-file "$TEXT" --ctx 512 --max-tokens 2048
