#!/usr/bin/env bash
# Runs ragchat the way its container image does, without Docker: the image's layout (binary,
# model and docs under a read-only /opt/ragchat), a non-root user, a writable data dir only, and
# only the environment Azure Web App passes. Checks that it starts, ingests its docs, becomes
# ready, answers a real turn in integration-test mode over ws (scripts/smoke.mjs), passes the
# image's HEALTHCHECK command, and drains on SIGTERM with exit 0.
#
# usage: scripts/container-check.sh BIN LLM_URL     (root, to switch to the `nobody` user)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:?usage: $0 BIN LLM_URL}"
llm="${2:?usage: $0 BIN LLM_URL}"
cache="${RAGCHAT_CACHE:-$HOME/.cache/ragchat}"

root="$(mktemp -d -t ragchat-container.XXXXXX)"
app="$root/opt/ragchat"
mkdir -p "$app/bin" "$app/models" "$root/data"
cp "$bin" "$app/bin/ragchat"
cp -r "$cache/models/all-MiniLM-L6-v2" "$app/models/"
cp -r docs "$app/docs"
chmod -R a-w "$app"
chmod 755 "$root"
run_as=()
if [[ "$(id -u)" == 0 ]]; then
  chown nobody "$root/data"
  run_as=(setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs)
else
  echo "container-check: not root, so running as $(id -un) instead of a dedicated user" >&2
fi
port="$(scripts/free-port.sh)"
touch "$root/started"
# As deployed: clients must authenticate (infra/main.bicep sets RAGCHAT_AUTH and the keys).
smoke_key="k-smoke-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# Exactly what the image sets (Dockerfile ENV) plus what Web App adds; nothing inherited.
env -i PATH=/usr/bin:/bin HOME=/nonexistent \
  WEBSITES_PORT=8000 WEBSITE_INSTANCE_ID=container-check WEBSITE_SITE_NAME=ragchat \
  RAGCHAT_ADDR="127.0.0.1:$port" RAGCHAT_DATA_DIR="$root/data" \
  RAGCHAT_EMBED_MODEL_DIR="$app/models/all-MiniLM-L6-v2" RAGCHAT_LOG_FORMAT=json \
  RAGCHAT_INGEST_ON_START="$app/docs" RAGCHAT_LLM_URL="$llm" RAGCHAT_LLM_MAX_TOKENS=32 \
  RAGCHAT_SHUTDOWN_GRACE_SECS=5 RAGCHAT_AUTH=api_key RAGCHAT_API_KEYS="smoke=$smoke_key" \
  "${run_as[@]}" "$app/bin/ragchat" serve >"$root/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT

if ! scripts/wait-http.sh "http://127.0.0.1:$port/health/ready" "$pid" 180; then
  tail -n 30 "$root/server.log" >&2
  exit 1
fi
user="$(ps -o user= -p "$pid" | tr -d ' ')"
echo "container-check: ready on :$port as user $user"
SMOKE_API_KEY="$smoke_key" node --experimental-websocket scripts/smoke.mjs "ws://127.0.0.1:$port/ws"
env -i RAGCHAT_ADDR="127.0.0.1:$port" "$app/bin/ragchat" healthcheck
echo "container-check: HEALTHCHECK command passes"

kill -TERM "$pid"
status=0
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  echo "container-check: still running 30 s after SIGTERM" >&2
  exit 1
fi
wait "$pid" || status=$?
trap - EXIT
if [[ "$status" != 0 ]]; then
  echo "container-check: exit status $status after SIGTERM" >&2
  tail -n 20 "$root/server.log" >&2
  exit 1
fi
grep -q '"stopped"' "$root/server.log" || { echo "container-check: no clean stop logged" >&2; exit 1; }
written="$(find "$root" -newer "$root/started" -type f ! -path "$root/data/*" ! -name server.log)"
if [[ -n "$written" ]]; then
  echo "container-check: wrote outside the data dir: $written" >&2
  exit 1
fi
echo "container-check: drained on SIGTERM, exit 0; wrote only under the data dir"
rm -rf "$root"
