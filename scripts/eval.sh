#!/usr/bin/env bash
# `make eval`: retrieval quality on the labelled question sets in eval/. Each set is ingested into
# its own fresh index with the local MiniLM embedder, then `ragchat eval` reports recall@k and MRR
# by document. Release build (the p50 column is per question: embed + search). The follow-up set
# is scored with the query rewrite off and on; the rewrite needs a chat model: RAGCHAT_LLM_URL,
# else the cached llama-server with SmolLM2 is started here (LLAMA_MODEL=path.gguf for another).
#   EVAL_JSON=path   also write the reports as JSON lines
set -euo pipefail
cd "$(dirname "$0")/.."
tc="$(scripts/toolchain.sh)"
if [[ -n "$tc" ]]; then export RUSTUP_TOOLCHAIN="$tc"; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ragchat/target}"
scripts/assets.sh embedder
cargo build --release --locked --package ragchat --quiet
bin="$CARGO_TARGET_DIR/release/ragchat"

work="$(mktemp -d "${TMPDIR:-/tmp}/ragchat-eval.XXXXXX")"
llm_pid=""
trap '[[ -n "$llm_pid" ]] && kill "$llm_pid" 2>/dev/null; rm -rf "$work"' EXIT
if [[ -z "${RAGCHAT_LLM_URL:-}" ]]; then
  port="$(scripts/free-port.sh)"
  scripts/llama-server.sh "$port" >"$work/llama-server.log" 2>&1 &
  llm_pid=$!
  scripts/wait-http.sh "http://127.0.0.1:$port/health" "$llm_pid" 120
  export RAGCHAT_LLM_URL="http://127.0.0.1:$port/v1"
fi
export RAGCHAT_EMBEDDER=local RAGCHAT_LOG_FORMAT=json RAGCHAT_LOG=warn,qdrant_edge=error
export RAGCHAT_EMBED_MODEL_DIR="${RAGCHAT_EMBED_MODEL_DIR:-${RAGCHAT_CACHE:-$HOME/.cache/ragchat}/models/all-MiniLM-L6-v2}"

# set file → what to ingest for it
declare -A corpus=(
  [eval/docs.jsonl]="README.md ARCHITECTURE.md docs"
  [eval/rare-terms.jsonl]="eval/corpus/rare-terms"
  [eval/follow-ups.jsonl]="eval/corpus/rare-terms"
)
for set in eval/docs.jsonl eval/rare-terms.jsonl eval/follow-ups.jsonl; do
  data="$work/$(basename "$set" .jsonl)"
  # shellcheck disable=SC2086 # the corpus list is word-split on purpose
  RAGCHAT_DATA_DIR="$data" "$bin" ingest ${corpus[$set]} >/dev/null
  RAGCHAT_DATA_DIR="$data" "$bin" eval "$set"
  if [[ -n "${EVAL_JSON:-}" ]]; then
    RAGCHAT_DATA_DIR="$data" "$bin" eval --json "$set" >>"$EVAL_JSON"
  fi
done
