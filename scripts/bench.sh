#!/usr/bin/env bash
# `make bench`: builds release, starts the LLM simulator and ragchat on loopback, runs the matrix
# of issue 6 and writes docs/benchmarks.md. Benchmarks report; they do not fail on a missed goal.
#
# Scale knobs (defaults fit a 2-core box in about 15 minutes):
#   BENCH_STREAMS="250 500 1000 2000 5000"  concurrent streams per level (20 tokens/s each)
#   BENCH_SECS=20 BENCH_RAMP=10              measured seconds per level; ramp (not measured)
#   BENCH_TOKENS=128                         answer length from the simulator
#   BENCH_TTFT_MS=100 BENCH_ITL_MS=50        simulator time to first token; inter-token interval
#   BENCH_IDLE=50000 BENCH_IDLE_RAMP=25      idle sockets; seconds to open them
#   BENCH_INDEX_SMALL=10000 BENCH_INDEX_BIG=100000   chunks for cold start / retrieval
#   BENCH_INGEST_FILES=30                    ~200-token chunks for the local-embedder ingest
#   BENCH_OUT=docs/benchmarks.md
#   BENCH_AUTH_STREAMS=1000                  streams of the JWT-authenticated row ("" skips it)
#   BENCH_FAIR_CLIENTS=200 BENCH_FLOOD_RATE=500   fairness: well-behaved clients beside one flood
#   BENCH_TELEMETRY_STREAMS=1000             streams of the telemetry rows ("" skips them)
#   BENCH_SECTIONS="streams auth telemetry fair idle index local qdrant"   which sections run
#   BENCH_QDRANT_URL=http://127.0.0.1:6334 BENCH_QDRANT_API_KEY=…   a Qdrant server: the `qdrant`
#                                            section measures retrieval at both index sizes and the
#                                            1,000-stream row with RAGCHAT_INDEX=qdrant (skipped
#                                            without a URL; its collections are deleted after)
#   BENCH_SKIP_BUILD=1                       reuse the release binaries already built
#   BENCH_RAGCHAT_BIN=path                   measure another ragchat binary (e.g. an older commit)
#   BENCH_KEEP=dir                           keep the raw results there (to re-render the report)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

tc="$(scripts/toolchain.sh)"
if [[ -n "$tc" ]]; then export RUSTUP_TOOLCHAIN="$tc"; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ragchat/target}"

streams="${BENCH_STREAMS:-250 500 1000 2000 5000}"
secs="${BENCH_SECS:-20}"
ramp="${BENCH_RAMP:-10}"
tokens="${BENCH_TOKENS:-128}"
ttft_ms="${BENCH_TTFT_MS:-100}"
itl_ms="${BENCH_ITL_MS:-50}"
idle="${BENCH_IDLE:-50000}"
idle_ramp="${BENCH_IDLE_RAMP:-25}"
index_small="${BENCH_INDEX_SMALL:-10000}"
index_big="${BENCH_INDEX_BIG:-100000}"
ingest_files="${BENCH_INGEST_FILES:-30}"
out="${BENCH_OUT:-docs/benchmarks.md}"
model_dir="${RAGCHAT_EMBED_MODEL_DIR:-$HOME/.cache/ragchat/models/all-MiniLM-L6-v2}"
auth_streams="${BENCH_AUTH_STREAMS-1000}"
fair_clients="${BENCH_FAIR_CLIENTS:-200}"
flood_rate="${BENCH_FLOOD_RATE:-500}"
tele_streams="${BENCH_TELEMETRY_STREAMS-1000}"
sections=" ${BENCH_SECTIONS:-streams auth telemetry fair idle index local qdrant} "
section() { [[ "$sections" == *" $1 "* ]]; }

build_cmd=(cargo build --release --locked -p ragchat -p ragchat-loadtest)
if [[ "${BENCH_SKIP_BUILD:-}" == 1 ]]; then
  echo "== BENCH_SKIP_BUILD=1: using the release binaries already in $CARGO_TARGET_DIR/release"
else
  echo "== ${build_cmd[*]}  (RUSTUP_TOOLCHAIN=${RUSTUP_TOOLCHAIN:-default} CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  "${build_cmd[@]}"
fi
bin="$CARGO_TARGET_DIR/release"
ragchat_bin="${BENCH_RAGCHAT_BIN:-$bin/ragchat}"

work="$(mktemp -d "${TMPDIR:-/tmp}/ragchat-bench.XXXXXX")"
results="$work/results"
mkdir -p "$results"
pids=()
stop_pid() {
  local pid="$1"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Tens of thousands of sockets on each side: raise the open-file limit for everything started here.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log() { echo "== $*" >&2; }

# --- the simulator ---------------------------------------------------------------------------
"$bin/llm-sim" --ttft-ms "$ttft_ms" --itl-ms "$itl_ms" --tokens "$tokens" > "$work/sim.json" 2> "$work/sim.log" &
sim_pid=$!
pids+=("$sim_pid")
for _ in $(seq 100); do [[ -s "$work/sim.json" ]] && break; sleep 0.05; done
sim_url="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$work/sim.json")"
issuer_url="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["issuer"])' "$work/sim.json")"
log "llm-sim at $sim_url (pid $sim_pid)"

# The relay and capacity sections measure what one client machine can push through, so the
# public-service limits (per address, per principal, per minute, per day, concurrent turns) are
# lifted there; the fairness section runs with the defaults.
no_limits() {
  echo RAGCHAT_MAX_CONNECTIONS=10000000 RAGCHAT_MAX_SOCKETS_PER_ADDRESS=10000000 \
    RAGCHAT_MAX_SOCKETS_PER_PRINCIPAL=10000000 RAGCHAT_TURNS_PER_MINUTE=0 \
    RAGCHAT_DAILY_TOKENS=0 RAGCHAT_MAX_CONCURRENT_TURNS=1000000
}
default_limits() {
  echo RAGCHAT_MAX_CONNECTIONS=10000 RAGCHAT_MAX_SOCKETS_PER_ADDRESS=50 \
    RAGCHAT_MAX_SOCKETS_PER_PRINCIPAL=20 RAGCHAT_TURNS_PER_MINUTE=30 RAGCHAT_TURN_BURST=10 \
    RAGCHAT_DAILY_TOKENS=200000 RAGCHAT_MAX_CONCURRENT_TURNS=256 RAGCHAT_TURN_QUEUE_MS=2000
}
# JWT authentication against the simulator's test issuer.
jwt_env() {
  echo RAGCHAT_AUTH=jwt RAGCHAT_JWT_ISSUER="$issuer_url" RAGCHAT_JWT_AUDIENCE=ragchat-bench
}
# ragchat's environment for a data dir; the embedder is the simulator's unless told otherwise.
sim_env() {
  echo RAGCHAT_DATA_DIR="$1" RAGCHAT_LLM_URL="$sim_url" RAGCHAT_EMBEDDER=openai \
    RAGCHAT_EMBED_URL="$sim_url" RAGCHAT_EMBED_MODEL=sim RAGCHAT_LOG_FORMAT=json $(no_limits)
}
local_env() {
  echo RAGCHAT_DATA_DIR="$1" RAGCHAT_LLM_URL="$sim_url" RAGCHAT_EMBEDDER=local \
    RAGCHAT_EMBED_MODEL_DIR="$model_dir" RAGCHAT_LOG_FORMAT=json $(no_limits)
}

ragchat_pid=""
ragchat_port=""
ready_ms=""
# start_ragchat NAME ENV... : serve in the background, wait for /health/ready, time it.
start_ragchat() {
  local name="$1"; shift
  ragchat_port="$(scripts/free-port.sh)"
  local t0; t0="$(date +%s%N)"
  env "$@" RAGCHAT_ADDR="127.0.0.1:$ragchat_port" "$ragchat_bin" serve > "$work/$name.out" 2> "$work/$name.log" &
  ragchat_pid=$!
  pids+=("$ragchat_pid")
  for _ in $(seq 6000); do
    if ! kill -0 "$ragchat_pid" 2>/dev/null; then
      echo "ragchat ($name) exited; its log:" >&2; tail -20 "$work/$name.log" >&2; exit 1
    fi
    if curl -fs --max-time 1 -o /dev/null "http://127.0.0.1:$ragchat_port/health/ready"; then break; fi
    sleep 0.01
  done
  ready_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  log "ragchat $name on 127.0.0.1:$ragchat_port (pid $ragchat_pid), ready after ${ready_ms} ms"
}
stop_ragchat() { stop_pid "$ragchat_pid"; ragchat_pid=""; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

loadgen() { "$bin/loadgen" --quiet "$@"; }
ws_url() { echo "ws://127.0.0.1:$ragchat_port/ws"; }

declare -A fact
fact[build]="${build_cmd[*]}"
fact[sim]="llm-sim --ttft-ms $ttft_ms --itl-ms $itl_ms --tokens $tokens"
if [[ -n "${BENCH_RAGCHAT_BIN:-}" ]]; then fact[ragchat_bin]="$BENCH_RAGCHAT_BIN"; fi

# --- 1. streams at 20 tokens/s, TTFT overhead -------------------------------------------------
log "ingesting tests/fixtures/corpus with the simulator's embeddings"
env $(sim_env "$work/data-sim") "$ragchat_bin" ingest tests/fixtures/corpus > "$results/ingest-corpus.json"

# through_ragchat NAME N LOADGEN_ARGS... : one measured loadgen run through the running ragchat,
# with its CPU time over the run and its RSS half-way through the measured window.
through_ragchat() {
  local name="$1" n="$2"; shift 2
  local common=(--clients "$n" --ramp-secs "$ramp" --warmup-secs "$ramp" --duration-secs "$secs" --timeout-secs 60)
  local rss0 cpu0 cpu1 t0 t1 sampler
  rss0="$(rss_kib "$ragchat_pid")"
  ( sleep "$((ramp + secs / 2))"; rss_kib "$ragchat_pid" > "$results/rss-$name.kib" 2>/dev/null ) &
  sampler=$!
  cpu0="$(awk '{print $14 + $15}' "/proc/$ragchat_pid/stat")"
  # The record path (journal, store) before and after: /health's details (loopback, no auth).
  curl -fs --max-time 5 "http://127.0.0.1:$ragchat_port/health" > "$results/$name.health0" || true
  t0="$(date +%s%N)"
  loadgen --url "$(ws_url)" "${common[@]}" "$@" --label "$name" --json "$results/$name.json" > "$results/$name.txt" || true
  t1="$(date +%s%N)"
  cpu1="$(awk '{print $14 + $15}' "/proc/$ragchat_pid/stat" 2>/dev/null || echo "$cpu0")"
  curl -fs --max-time 5 "http://127.0.0.1:$ragchat_port/health" > "$results/$name.health1" || true
  wait "$sampler" 2>/dev/null || true
  echo "$rss0 $cpu0 $cpu1 $(getconf CLK_TCK) $(( (t1 - t0) / 1000000 ))" > "$results/$name.proc"
  cat "$results/$name.txt" >&2
}

# Clients come from 254 loopback addresses (127.0.4.x), as users come from many: ragchat closes
# at once the 33rd connection still in its HTTP phase from one address (slowloris), which a ramp
# of hundreds of upgrades a second from one address reaches when the server is busy.
spread=(--source-net 4 --source-addrs 254)
if section streams; then
  start_ragchat streams $(sim_env "$work/data-sim")
  sleep 2
  fact[rss_idle_kib]="$(rss_kib "$ragchat_pid")"
  fact[ready_small_ms]="$ready_ms"
  for n in $streams; do
    log "streams $n: direct baseline"
    loadgen --direct "$sim_url" --clients "$n" --ramp-secs "$ramp" --warmup-secs "$ramp" --duration-secs "$secs" \
      --timeout-secs 60 --label "direct-$n" --json "$results/direct-$n.json" > "$results/direct-$n.txt" || true
    log "streams $n: through ragchat"
    through_ragchat "ragchat-$n" "$n" "${spread[@]}"
    if ! kill -0 "$ragchat_pid" 2>/dev/null; then log "ragchat died at $n streams"; break; fi
  done
  stop_ragchat
fi

# --- 1b. the same streams, each socket authenticated with a JWT -------------------------------
# Each client gets its own token (subject loadgen-i) from the simulator's test issuer; ragchat
# fetches the issuer's JWKS once and checks one ES256 signature per connection.
if section auth && [[ -n "$auth_streams" ]]; then
  start_ragchat auth $(sim_env "$work/data-sim") $(jwt_env)
  sleep 1
  for n in $auth_streams; do
    log "streams $n: through ragchat, JWT-authenticated"
    through_ragchat "auth-$n" "$n" "${spread[@]}" --token-url "$issuer_url/token"
  done
  stop_ragchat
fi

# --- 1b'. the same streams with telemetry exported --------------------------------------------
# Traces, metrics and logs to a real OTLP collector (rotel, discarding what it receives), sampling
# every turn and then 1 %, while /metrics is scraped every second as Prometheus would; compared
# with the streams section's row (the same build, nothing exported, nothing scraped).
if section telemetry && [[ -n "$tele_streams" ]]; then
  rotel_bin="$(scripts/rotel.sh)"
  otlp_port="$(scripts/free-port.sh)"
  "$rotel_bin" start --otlp-http-endpoint "127.0.0.1:$otlp_port" \
    --otlp-grpc-endpoint "127.0.0.1:$(scripts/free-port.sh)" --exporter blackhole \
    > "$work/rotel.log" 2>&1 &
  rotel_pid=$!
  pids+=("$rotel_pid")
  for ratio in 1.0 0.01; do
    label="tele-$(python3 -c "print(int(float('$ratio') * 100))")"
    start_ragchat "$label" $(sim_env "$work/data-sim") OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otlp_port" \
      OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$ratio" OTEL_METRIC_EXPORT_INTERVAL=10000
    ( while kill -0 "$ragchat_pid" 2>/dev/null; do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$ragchat_port/metrics" || true; sleep 1
      done ) &
    scraper=$!
    sleep 1
    for n in $tele_streams; do
      log "streams $n: through ragchat, telemetry exported (sampling $ratio)"
      through_ragchat "$label-$n" "$n" "${spread[@]}"
    done
    curl -s "http://127.0.0.1:$ragchat_port/metrics" > "$results/$label-metrics.txt" || true
    stop_ragchat
    wait "$scraper" 2>/dev/null || true
  done
  stop_pid "$rotel_pid"
fi

# --- 1c. fairness: well-behaved clients beside one flooding principal -------------------------
# Default limits and JWT authentication. The well-behaved clients (one principal each, spread
# over 127.0.1.x) run once alone and once while one principal floods asks from 127.0.2.x over 30
# sockets (more than its 20-socket cap) at BENCH_FLOOD_RATE asks/s, whatever the answers.
if section fair; then
  start_ragchat fair $(sim_env "$work/data-sim") $(default_limits) $(jwt_env)
  sleep 1
  fair=(--token-url "$issuer_url/token" --token-sub user --source-net 1 --source-addrs 254)
  log "fairness: $fair_clients well-behaved clients alone"
  through_ragchat "fair-alone" "$fair_clients" "${fair[@]}"
  log "fairness: $fair_clients well-behaved clients beside a flood of $flood_rate asks/s"
  loadgen --url "$(ws_url)" --flood "$flood_rate" --clients 30 --duration-secs "$((ramp * 2 + secs))" \
    --token-url "$issuer_url/token" --token-sub flood --source-net 2 --source-addrs 1 \
    --label flood --json "$results/flood.json" > "$results/flood.txt" 2>&1 &
  flood_pid=$!
  pids+=("$flood_pid")
  through_ragchat "fair-flooded" "$fair_clients" "${fair[@]}"
  wait "$flood_pid" || true
  cat "$results/flood.txt" >&2
  # What the operator sees: the refusal counters of /health, and how much the flood logged.
  token="$(curl -fs "$issuer_url/token?sub=operator" || true)"
  curl -fs -H "Authorization: Bearer $token" "http://127.0.0.1:$ragchat_port/health" > "$results/fair-health.json" || true
  echo "$(wc -l < "$work/fair.log") $(wc -c < "$work/fair.log") $(grep -c '"refused"' "$work/fair.log" || true)" \
    > "$results/fair-log.counts"
  stop_ragchat
fi

# --- 2. idle sockets ---------------------------------------------------------------------------
if section idle; then
  # ragchat needs one descriptor per socket too: without CAP_SYS_RESOURCE the hard limit caps both.
  hard="$(ulimit -Hn)"
  if [[ "$hard" != unlimited ]] && (( idle > hard - 512 )); then
    log "idle: the hard open-file limit is $hard and cannot be raised here; holding $((hard - 512)) instead of $idle"
    fact[idle_capped]="$idle -> $((hard - 512)) (hard RLIMIT_NOFILE $hard)"
    idle=$((hard - 512))
  fi
  start_ragchat idle $(sim_env "$work/data-sim")
  sleep 1
  log "idle: $idle sockets"
  # From 254 source addresses, like the streams (see `spread` above).
  loadgen --url "$(ws_url)" --idle "$idle" --ramp-secs "$idle_ramp" --duration-secs 10 --server-pid "$ragchat_pid" \
    --source-net 3 --source-addrs 254 --timeout-secs 60 --label "idle-$idle" --json "$results/idle.json" > "$results/idle.txt" || true
  cat "$results/idle.txt" >&2
  stop_ragchat
fi

# --- 3. index size: cold start and retrieval ---------------------------------------------------
# Synthetic documents cut into ~16-token chunks (RAGCHAT_CHUNK_TOKENS=16, no overlap), so a large
# index costs little text; the vectors are the simulator's 384-dim unit vectors.
gen_corpus() { # gen_corpus DIR CHUNKS FIRST_FILE
  python3 - "$1" "$2" "$3" <<'PY'
import os, random, sys
out, chunks, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out, exist_ok=True)
rng = random.Random(first)
words = ("harbour lantern granite ferry orchard copper meadow beacon quarry glacier tundra "
         "sourdough fennel cinnamon rye keeper cottage station radio ice generator winter").split()
per_file = 1000
files = (chunks + per_file - 1) // per_file
for f in range(first, first + files):
    with open(os.path.join(out, f"doc{f:05}.txt"), "w") as fh:
        for i in range(per_file):
            # At most 63 characters (the longest label, five of the longest words): one 16-token
            # chunk (64 characters at 4 a token) per paragraph, so the index holds about CHUNKS.
            fh.write(f"R{f}-{i}: " + " ".join(rng.choice(words) for _ in range(5)) + ".\n\n")
PY
}
ingest_big() { # ingest_big DIR [ENV...]  (ENV: e.g. the Qdrant server's)
  env $(sim_env "$work/data-big") RAGCHAT_CHUNK_TOKENS=16 RAGCHAT_CHUNK_OVERLAP=0 "${@:2}" "$ragchat_bin" ingest "$1"
}
retrieval_run() { # retrieval_run LABEL [ENV...]
  start_ragchat "$1" $(sim_env "$work/data-big") RAGCHAT_LLM_MAX_TOKENS=4 "${@:2}"
  fact[ready_$1_ms]="$ready_ms"
  sleep 1
  fact[rss_$1_kib]="$(rss_kib "$ragchat_pid")"
  loadgen --url "$(ws_url)" --clients 1 --turns-per-client 60 --warmup-secs 0 --label "$1" \
    --json "$results/$1.json" > "$results/$1.txt" || true
  stop_ragchat
}
if section index; then
  log "index: generating and ingesting $index_small chunks"
  gen_corpus "$work/corpus-small" "$index_small" 0
  ingest_big "$work/corpus-small" > "$results/ingest-small.json"
  retrieval_run index-small
  if (( index_big > index_small )); then
    log "index: growing to $index_big chunks"
    gen_corpus "$work/corpus-big" "$((index_big - index_small))" 100000
    ingest_big "$work/corpus-big" > "$results/ingest-big.json"
    retrieval_run index-big
  fi
fi

# --- 3b. the Qdrant server backend: the same index sizes, and the 1,000-stream row ---------------
qdrant_env() { # qdrant_env COLLECTION
  echo RAGCHAT_INDEX=qdrant RAGCHAT_QDRANT_URL="$BENCH_QDRANT_URL" \
    RAGCHAT_QDRANT_API_KEY="${BENCH_QDRANT_API_KEY:-}" RAGCHAT_QDRANT_COLLECTION="$1"
}
if section qdrant && [[ -n "${BENCH_QDRANT_URL:-}" ]]; then
  q_index="bench_index_$$" q_streams="bench_streams_$$"
  # REST on the gRPC port minus one (6333 beside 6334), for deleting the collections after.
  q_rest="${BENCH_QDRANT_REST:-$(echo "$BENCH_QDRANT_URL" | sed -E 's/:([0-9]+)$//'):$(( ${BENCH_QDRANT_URL##*:} - 1 ))}"
  q_drop() { curl -fsS -X DELETE -H "api-key: ${BENCH_QDRANT_API_KEY:-}" "$q_rest/collections/$1" >/dev/null || true; }
  fact[qdrant_url]="$BENCH_QDRANT_URL"
  fact[qdrant_version]="$(curl -fsS -H "api-key: ${BENCH_QDRANT_API_KEY:-}" "$q_rest/" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("version","?"))' 2>/dev/null || echo '?')"
  log "qdrant $BENCH_QDRANT_URL (${fact[qdrant_version]}): $index_small chunks"
  [[ -d "$work/corpus-small" ]] || gen_corpus "$work/corpus-small" "$index_small" 0
  ingest_big "$work/corpus-small" $(qdrant_env "$q_index") > "$results/ingest-qdrant-small.json"
  retrieval_run qdrant-small $(qdrant_env "$q_index")
  if (( index_big > index_small )); then
    log "qdrant: growing to $index_big chunks"
    [[ -d "$work/corpus-big" ]] || gen_corpus "$work/corpus-big" "$((index_big - index_small))" 100000
    ingest_big "$work/corpus-big" $(qdrant_env "$q_index") > "$results/ingest-qdrant-big.json"
    retrieval_run qdrant-big $(qdrant_env "$q_index")
  fi
  q_drop "$q_index"
  log "qdrant: 1000 streams with RAGCHAT_INDEX=qdrant"
  env $(sim_env "$work/data-qs") $(qdrant_env "$q_streams") "$ragchat_bin" ingest tests/fixtures/corpus > /dev/null
  start_ragchat streams-qdrant $(sim_env "$work/data-qs") $(qdrant_env "$q_streams")
  sleep 2
  if [[ ! -f "$results/direct-1000.json" ]]; then
    loadgen --direct "$sim_url" --clients 1000 --ramp-secs "$ramp" --warmup-secs "$ramp" --duration-secs "$secs" \
      --timeout-secs 60 --label "direct-1000" --json "$results/direct-1000.json" > "$results/direct-1000.txt" || true
  fi
  through_ragchat "qdrant-1000" 1000 "${spread[@]}"
  stop_ragchat
  q_drop "$q_streams"
fi

# --- 4. the local embedder: ingest throughput, query embedding ---------------------------------
if section local; then
  if [[ -f "$model_dir/model.safetensors" || -d "$model_dir" ]]; then
    log "local MiniLM: ingesting $ingest_files synthetic documents (~200-token chunks)"
    python3 - "$work/corpus-prose" "$ingest_files" <<'PY'
import os, random, sys
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
rng = random.Random(7)
words = ("the keeper climbs the granite tower each night to wind the lamp while the ferry waits "
         "below in the harbour and the bakery on the quay sells sourdough with fennel and rye "
         "to the fishermen who return from the ice before the radio station calls the winter crew").split()
for i in range(n):
    with open(os.path.join(out, f"prose{i:03}.txt"), "w") as fh:
        for p in range(12):
            fh.write(" ".join(rng.choice(words) for _ in range(120)) + ".\n\n")
PY
    env $(local_env "$work/data-local") "$ragchat_bin" ingest "$work/corpus-prose" > "$results/ingest-local.json"
    env $(local_env "$work/data-local") "$ragchat_bin" ingest tests/fixtures/corpus > /dev/null
    start_ragchat local $(local_env "$work/data-local") RAGCHAT_LLM_MAX_TOKENS=4
    fact[ready_local_ms]="$ready_ms"
    sleep 1
    fact[rss_local_kib]="$(rss_kib "$ragchat_pid")"
    loadgen --url "$(ws_url)" --clients 1 --turns-per-client 60 --label local-embed \
      --json "$results/local-embed.json" > "$results/local-embed.txt" || true
    stop_ragchat
  else
    log "no MiniLM at $model_dir (run: scripts/assets.sh models); skipping the local-embedder rows"
  fi
fi

stop_pid "$sim_pid"

# --- the report ----------------------------------------------------------------------------------
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc=$(nproc)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "mem=$(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
  echo "uname=$(uname -srm)"
  echo "rustc=$(rustc --version)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "streams=$streams"
  echo "secs=$secs"
  echo "ramp=$ramp"
  echo "tokens=$tokens"
  echo "ttft_ms=$ttft_ms"
  echo "itl_ms=$itl_ms"
  echo "idle=$idle"
  echo "idle_ramp=$idle_ramp"
  echo "index_small=$index_small"
  echo "index_big=$index_big"
  echo "flood_rate=$flood_rate"
  echo "fair_clients=$fair_clients"
  echo "source_addrs=254"
  for k in "${!fact[@]}"; do echo "$k=${fact[$k]}"; done
} > "$results/facts.env"
python3 loadtest/report.py "$results" > "$out.tmp"
mv "$out.tmp" "$out"
log "wrote $out"
if [[ -n "${BENCH_KEEP:-}" ]]; then
  mkdir -p "$results/logs" && cp "$work"/*.log "$results/logs/" 2>/dev/null || true
  # The raw results, to re-render the report after editing loadtest/bench-notes.md:
  #   python3 loadtest/report.py "$BENCH_KEEP" > docs/benchmarks.md
  rm -rf "$BENCH_KEEP" && cp -r "$results" "$BENCH_KEEP"
  log "raw results kept in $BENCH_KEEP"
fi
