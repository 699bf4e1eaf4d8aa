#!/usr/bin/env bash
# Starts the cached llama-server with the cached SmolLM2 model (or LLAMA_MODEL) on loopback, in
# the foreground.
# usage: scripts/llama-server.sh PORT [extra llama-server args...]
set -euo pipefail
CACHE="${RAGCHAT_CACHE:-$HOME/.cache/ragchat}"
BIN="$CACHE/llama.cpp/11434.0.0-noamx/bin"
MODEL="${LLAMA_MODEL:-$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
port="${1:?usage: $0 PORT [args...]}"; shift
[[ -x "$BIN/llama-server" && -f "$MODEL" ]] || { echo "llama-server or model missing: run scripts/assets.sh" >&2; exit 1; }
export LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$BIN/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$port" --alias smollm2 \
  -c "${LLAMA_CTX:-8192}" -np "${LLAMA_SLOTS:-2}" -t "${LLAMA_THREADS:-2}" --log-disable "$@"
