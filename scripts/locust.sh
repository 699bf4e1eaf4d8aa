#!/usr/bin/env bash
# `make locust`: the checked-in locustfile, headless, for a bounded time, over wss through Caddy
# (deploy/vm/Caddyfile with `tls internal`, as scripts/caddy-front.sh runs it) in front of a
# release ragchat that wants API keys, whose chat model and embeddings are the bench's simulator
# (llm-sim: a fixed pace, so what is measured is ragchat and the proxy). Writes Locust's CSV and
# HTML report to LOCUST_OUT and prints the summary.
#
#   LOCUST_USERS=200 LOCUST_RATE=50 LOCUST_TIME=60s     users, spawn rate per second, duration
#   LOCUST_TOKENS=64 LOCUST_ITL_MS=50 LOCUST_TTFT_MS=100  the simulator's answers
#   LOCUST_OUT=target/locust                            where the report goes
#   LOCUST_SKIP_BUILD=1                                 reuse the release binaries already built
set -euo pipefail
cd "$(dirname "$0")/.."
tc="$(scripts/toolchain.sh)"
if [[ -n "$tc" ]]; then export RUSTUP_TOOLCHAIN="$tc"; fi
cache="${RAGCHAT_CACHE:-$HOME/.cache/ragchat}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
users="${LOCUST_USERS:-200}" rate="${LOCUST_RATE:-50}" duration="${LOCUST_TIME:-60s}"
out="${LOCUST_OUT:-target/locust}"

if [[ "${LOCUST_SKIP_BUILD:-}" != 1 ]]; then
  cargo build --release --locked -p ragchat -p ragchat-loadtest
fi
bin="$CARGO_TARGET_DIR/release"

venv="$cache/venv-locust"
if [[ ! -x "$venv/bin/locust" ]] || ! cmp -s loadtest/requirements.txt "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r loadtest/requirements.txt
  cp loadtest/requirements.txt "$venv/requirements.txt"
fi

work="$(mktemp -d -t ragchat-locust.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$bin/llm-sim" --ttft-ms "${LOCUST_TTFT_MS:-100}" --itl-ms "${LOCUST_ITL_MS:-50}" \
  --tokens "${LOCUST_TOKENS:-64}" >"$work/sim.json" 2>"$work/sim.log" &
pids+=($!)
for _ in $(seq 100); do [[ -s "$work/sim.json" ]] && break; sleep 0.05; done
sim="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$work/sim.json")"

key="k-locust-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
port="$(scripts/free-port.sh)"
# As on the VM (deploy/vm/ragchat.env): API keys, one trusted proxy. The per-address and
# per-principal caps are lifted: every Locust user comes from one address with one key.
env RAGCHAT_ADDR="127.0.0.1:$port" RAGCHAT_DATA_DIR="$work/data" RAGCHAT_LOG_FORMAT=json \
  RAGCHAT_AUTH=api_key RAGCHAT_API_KEYS="locust=$key" RAGCHAT_TRUSTED_PROXIES=1 \
  RAGCHAT_LLM_URL="$sim" RAGCHAT_EMBEDDER=openai RAGCHAT_EMBED_URL="$sim" RAGCHAT_EMBED_MODEL=sim \
  RAGCHAT_INGEST_ON_START=tests/fixtures/corpus RAGCHAT_MAX_SOCKETS_PER_ADDRESS=100000 \
  RAGCHAT_MAX_SOCKETS_PER_PRINCIPAL=100000 RAGCHAT_TURNS_PER_MINUTE=0 RAGCHAT_DAILY_TOKENS=0 \
  RAGCHAT_MAX_CONCURRENT_TURNS=100000 \
  "$bin/ragchat" serve >"$work/ragchat.log" 2>&1 &
ragchat_pid=$!
pids+=("$ragchat_pid")
if ! scripts/wait-http.sh "http://127.0.0.1:$port/health/ready" "$ragchat_pid" 120; then
  tail -n 30 "$work/ragchat.log" >&2
  exit 1
fi
read -r https caddy_pid ca < <(scripts/caddy-front.sh "$port" "$work/caddy")
[[ -n "${caddy_pid:-}" ]] || { echo "Caddy did not start" >&2; exit 1; }
pids+=("$caddy_pid")

mkdir -p "$out"
echo "== locust: $users users (+$rate/s) for $duration over wss://localhost:$https (Caddy -> ragchat -> llm-sim)"
status=0
WEBSOCKET_CLIENT_CA_BUNDLE="$ca" "$venv/bin/locust" -f loadtest/locustfile.py --headless \
  -u "$users" -r "$rate" -t "$duration" --host "wss://localhost:$https" --api-key "$key" \
  --csv "$out/locust" --html "$out/locust.html" --only-summary || status=$?
echo "== report: $out/locust.html, $out/locust_stats.csv (exit $status)"
exit "$status"
