#!/usr/bin/env bash
# A load run watched by a real Prometheus, rendered as the dashboard's panels:
# docs/observability-dashboard.png. Release binaries (make bench builds them), llm-sim as the
# model, loadgen ramping streams up and down, Prometheus (Debian) scraping /metrics every second,
# matplotlib (pinned, in a venv in the cache) drawing the dashboard's queries.
#   SNAPSHOT_STREAMS="100 400 200"  SNAPSHOT_SECS=30   the load steps
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ragchat/target}"
bin="$CARGO_TARGET_DIR/release"
cache="${RAGCHAT_CACHE:-$HOME/.cache/ragchat}"
venv="$cache/venv-plot"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "matplotlib==3.10.7"
fi
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$bin/llm-sim" --ttft-ms 100 --itl-ms 50 --tokens 128 > "$work/sim.json" 2> "$work/sim.log" &
pids+=($!)
for _ in $(seq 100); do [[ -s "$work/sim.json" ]] && break; sleep 0.1; done
sim_url="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$work/sim.json")"
port="$(scripts/free-port.sh)"
env RAGCHAT_DATA_DIR="$work/data" RAGCHAT_LLM_URL="$sim_url" RAGCHAT_EMBEDDER=openai \
  RAGCHAT_EMBED_URL="$sim_url" RAGCHAT_EMBED_MODEL=sim RAGCHAT_INGEST_ON_START=tests/fixtures/corpus \
  RAGCHAT_MAX_SOCKETS_PER_ADDRESS=100000 RAGCHAT_TURNS_PER_MINUTE=0 RAGCHAT_DAILY_TOKENS=0 \
  RAGCHAT_MAX_CONCURRENT_TURNS=100000 RAGCHAT_ADDR="127.0.0.1:$port" "$bin/ragchat" serve \
  > "$work/ragchat.log" 2>&1 &
pids+=($!)
scripts/wait-http.sh "http://127.0.0.1:$port/health/ready" "${pids[-1]}" 120
prom_port="$(scripts/free-port.sh)"
printf 'global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ragchat\n    static_configs:\n      - targets: ["127.0.0.1:%s"]\n' "$port" > "$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
pids+=($!)
sleep 3
start="$(date +%s)"
for n in ${SNAPSHOT_STREAMS:-100 400 200}; do
  echo "== $n streams for ${SNAPSHOT_SECS:-30} s" >&2
  "$bin/loadgen" --quiet --url "ws://127.0.0.1:$port/ws" --clients "$n" --ramp-secs 5 \
    --duration-secs "${SNAPSHOT_SECS:-30}" --timeout-secs 60 --source-net 4 --source-addrs 254 \
    --label "snapshot-$n" > "$work/loadgen-$n.txt" || true
done
sleep 5
end="$(date +%s)"
"$venv/bin/python" scripts/dashboard-snapshot.py "http://127.0.0.1:$prom_port" "$start" "$end" \
  docs/observability-dashboard.png
