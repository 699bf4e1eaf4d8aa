#!/usr/bin/env bash
# The whole test suite (what `make test` runs): lints, then every test against a real llama-server
# that this script starts on a free loopback port and stops by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
tc="$(scripts/toolchain.sh)"
if [[ -n "$tc" ]]; then export RUSTUP_TOOLCHAIN="$tc"; fi
echo "== toolchain: $(rustc --version)"

scripts/assets.sh all

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== build tests"
cargo test --locked --no-run

port="$(scripts/free-port.sh)"
log="$(mktemp -t llama-server.XXXXXX.log)"
scripts/llama-server.sh "$port" >"$log" 2>&1 &
llama_pid=$!
cleanup() { kill "$llama_pid" 2>/dev/null || true; wait "$llama_pid" 2>/dev/null || true; }
trap cleanup EXIT
if ! scripts/wait-http.sh "http://127.0.0.1:$port/health" "$llama_pid" 180; then
  tail -n 50 "$log" >&2
  exit 1
fi
echo "== llama-server ready on 127.0.0.1:$port (pid $llama_pid)"

export RAGCHAT_TEST_LLM_URL="http://127.0.0.1:$port/v1"
export RAGCHAT_EMBED_MODEL_DIR="${RAGCHAT_EMBED_MODEL_DIR:-${RAGCHAT_CACHE:-$HOME/.cache/ragchat}/models/all-MiniLM-L6-v2}"
# LLM-backed tests share one small llama-server on 2 cores: keep them few at a time.
echo "== cargo test"
cargo test --locked -- --test-threads "${RAGCHAT_TEST_THREADS:-2}"
