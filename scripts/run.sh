#!/usr/bin/env bash
# `make run`: everything a fresh machine needs, then the service on :8000 with the bundled docs.
# Starts llama-server on loopback unless RAGCHAT_LLM_URL points elsewhere; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
tc="$(scripts/toolchain.sh)"
if [[ -n "$tc" ]]; then export RUSTUP_TOOLCHAIN="$tc"; fi
if [[ -f .env ]]; then set -a; source .env; set +a; fi

if [[ -z "${RAGCHAT_LLM_URL:-}" ]]; then scripts/assets.sh all; else scripts/assets.sh models; fi
echo "== building ragchat (release)"
cargo build --release --locked
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/ragchat"
export RAGCHAT_LOG_FORMAT="${RAGCHAT_LOG_FORMAT:-pretty}"

echo "== ingesting docs/"
"$bin" ingest docs README.md ARCHITECTURE.md

llama_pid=""
cleanup() {
  if [[ -n "$llama_pid" ]]; then kill "$llama_pid" 2>/dev/null || true; wait "$llama_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM
if [[ -z "${RAGCHAT_LLM_URL:-}" ]]; then
  port="${LLAMA_PORT:-8080}"
  echo "== starting llama-server on 127.0.0.1:$port"
  LLAMA_SLOTS="${LLAMA_SLOTS:-4}" scripts/llama-server.sh "$port" > "${TMPDIR:-/tmp}/ragchat-llama-server.log" 2>&1 &
  llama_pid=$!
  scripts/wait-http.sh "http://127.0.0.1:$port/health" "$llama_pid" 180
  export RAGCHAT_LLM_URL="http://127.0.0.1:$port/v1"
fi
echo "== ragchat on http://${RAGCHAT_ADDR:-127.0.0.1:8000}  (Ctrl-C stops)"
"$bin" serve
