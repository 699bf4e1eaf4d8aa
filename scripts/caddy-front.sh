#!/usr/bin/env bash
# Starts Caddy (the Debian package) in front of a ragchat on loopback with the VM's own
# deploy/vm/Caddyfile: `tls internal` (Caddy's local CA, under STATE_DIR), the public name
# `localhost`, a free HTTPS port, loopback only, no admin endpoint. Waits until ragchat answers
# /health/ready through it, then prints "HTTPS_PORT PID CA_FILE"; the caller stops PID.
# Instances given the same STATE_DIR share one CA. CADDY_IDLE_TIMEOUT passes through (2m).
#
# usage: scripts/caddy-front.sh UPSTREAM_PORT STATE_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
upstream="${1:?usage: $0 UPSTREAM_PORT STATE_DIR}"
state="${2:?usage: $0 UPSTREAM_PORT STATE_DIR}"
command -v caddy >/dev/null || { echo "caddy is not installed: apt-get install caddy" >&2; exit 1; }
mkdir -p "$state/$upstream"
https="$(scripts/free-port.sh)"
http="$(scripts/free-port.sh)"
ca="$state/data/caddy/pki/authorities/local/root.crt"
env -i PATH="$PATH" HOME="$state" XDG_DATA_HOME="$state/data" XDG_CONFIG_HOME="$state/config" \
  RAGCHAT_DOMAIN=localhost ACME_EMAIL=test@example.com RAGCHAT_UPSTREAM="127.0.0.1:$upstream" \
  CADDY_TLS=internal CADDY_LISTEN=loopback CADDY_ADMIN=off CADDY_HTTP_PORT="$http" \
  CADDY_HTTPS_PORT="$https" CADDY_LOG_DIR="$state/$upstream" CADDY_IDLE_TIMEOUT="${CADDY_IDLE_TIMEOUT:-2m}" \
  caddy run --adapter caddyfile --config deploy/vm/Caddyfile >"$state/caddy-$upstream.log" 2>&1 &
pid=$!
if ! CURL_CA_BUNDLE="$ca" scripts/wait-http.sh "https://localhost:$https/health/ready" "$pid" 60 >&2; then
  tail -n 30 "$state/caddy-$upstream.log" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
fi
echo "$https $pid $ca"
