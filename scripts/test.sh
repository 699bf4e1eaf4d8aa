#!/usr/bin/env bash
# The whole test suite (what `make test` runs): lints, then every test against a real llama-server
# that this script starts on a free loopback port and stops by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
tc="$(scripts/toolchain.sh)"
if [[ -n "$tc" ]]; then export RUSTUP_TOOLCHAIN="$tc"; fi
echo "== toolchain: $(rustc --version)"

scripts/assets.sh all

if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  # A target dir shared between checkouts (CI's cache) can hold a build of ragchat from another
  # checkout whose sources cargo still sees as fresh: always rebuild our own crate.
  cargo clean --quiet --package ragchat --package ragchat-loadtest
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "== cargo deny (bans, licenses, sources)"
scripts/deny.sh
echo "== build tests"
cargo test --workspace --locked --no-run

echo "== deployment files (checkov, actionlint)"
scripts/lint-deploy.sh

port="$(scripts/free-port.sh)"
log="$(mktemp -t llama-server.XXXXXX.log)"
scripts/llama-server.sh "$port" >"$log" 2>&1 &
llama_pid=$!
server_pid=""
cleanup() {
  for pid in $server_pid $llama_pid; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
if ! scripts/wait-http.sh "http://127.0.0.1:$port/health" "$llama_pid" 180; then
  tail -n 50 "$log" >&2
  exit 1
fi
echo "== llama-server ready on 127.0.0.1:$port (pid $llama_pid)"

export RAGCHAT_TEST_LLM_URL="http://127.0.0.1:$port/v1"

echo "== Cosmos DB test server (tests/cosmos-server) and the official Python SDK"
(cd tests/cosmos-server && npm ci --no-audit --no-fund --loglevel=error)
cosmos_venv="${RAGCHAT_CACHE:-$HOME/.cache/ragchat}/venv-cosmos"
if [[ ! -x "$cosmos_venv/bin/python" ]] \
  || ! cmp -s tests/cosmos-server/requirements.txt "$cosmos_venv/requirements.txt"; then
  rm -rf "$cosmos_venv"
  python3 -m venv "$cosmos_venv"
  "$cosmos_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/cosmos-server/requirements.txt
  cp tests/cosmos-server/requirements.txt "$cosmos_venv/requirements.txt"
fi
export RAGCHAT_TEST_COSMOS_PYTHON="$cosmos_venv/bin/python"
# The test server's certificate is self-signed, it speaks HTTP/1.1 only and JSON only: the
# settings the Rust SDK documents for the Cosmos emulator (never set in production).
export AZURE_COSMOS_EMULATOR_SERVER_CERT_VALIDATION_DISABLED=true
export AZURE_COSMOS_CONNECTION_POOL_IS_HTTP2_ALLOWED=false
export AZURE_COSMOS_BINARY_ENCODING_ENABLED=false
# A Debian package the tests run (installed when missing and we are root).
need_package() {
  local command="$1" package="$2"
  command -v "$command" >/dev/null && return 0
  if [[ "$(id -u)" == 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  else
    echo "$command is not installed: sudo apt-get install $package" >&2
    exit 1
  fi
}
echo "== Prometheus (Debian package) and an OTLP collector (rotel, PyPI) for the observability tests"
need_package prometheus prometheus
need_package promtool prometheus
echo "== Caddy (Debian package): the VM recipe's proxy, in front of ragchat over https/wss"
need_package caddy caddy
RAGCHAT_TEST_ROTEL="$(scripts/rotel.sh)"
export RAGCHAT_TEST_ROTEL
export RAGCHAT_EMBED_MODEL_DIR="${RAGCHAT_EMBED_MODEL_DIR:-${RAGCHAT_CACHE:-$HOME/.cache/ragchat}/models/all-MiniLM-L6-v2}"
# What the tests say must not be missed (a skipped half) goes to a file printed after them.
notices="$(mktemp -t ragchat-notices.XXXXXX)"
export RAGCHAT_TEST_NOTICES="$notices"
# LLM-backed tests share one small llama-server on 2 cores: keep them few at a time.
echo "== cargo test"
cargo test --workspace --locked -- --test-threads "${RAGCHAT_TEST_THREADS:-2}"
echo "== notices from the tests"
if [[ -s "$notices" ]]; then sort -u "$notices" | sed 's/^/   /'; else echo "   none"; fi
if [[ -n "${RAGCHAT_TEST_QDRANT_URL:-}" ]]; then
  echo "== Qdrant server half: RAN against $RAGCHAT_TEST_QDRANT_URL (RAGCHAT_TEST_INDEX=${RAGCHAT_TEST_INDEX:-edge})"
else
  echo "== Qdrant server half: SKIPPED (no server on this machine; the embedded index ran the same"
  echo "   retrieval tests). Run it with RAGCHAT_TEST_QDRANT_URL=http://127.0.0.1:6334 make test"
fi

echo "== container-like run (non-root, read-only /opt/ragchat, Web App environment, SIGTERM)"
scripts/container-check.sh "${CARGO_TARGET_DIR:-target}/debug/ragchat" "$RAGCHAT_TEST_LLM_URL"

echo "== browser test (Chromium drives the test page)"
# CHROMIUM may point at another Chromium-based browser (GitHub's runners have google-chrome).
if [[ -z "${CHROMIUM:-}" ]]; then need_package chromium chromium; fi
# certutil: Chromium trusts Caddy's local CA through its NSS database, as a user would.
need_package certutil libnss3-tools
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
bin="${CARGO_TARGET_DIR:-target}/debug/ragchat"
data="$(mktemp -d -t ragchat-browser.XXXXXX)"
export RAGCHAT_TEST_ARTIFACTS="${RAGCHAT_TEST_ARTIFACTS:-$data}"
# The page's server also holds a hostile document (raw HTML, a javascript: link) for the XSS test.
RAGCHAT_DATA_DIR="$data" RAGCHAT_LOG_FORMAT=pretty "$bin" ingest tests/fixtures/corpus tests/fixtures/hostile >/dev/null
web_port="$(scripts/free-port.sh)"
RAGCHAT_DATA_DIR="$data" RAGCHAT_ADDR="127.0.0.1:$web_port" RAGCHAT_LLM_URL="$RAGCHAT_TEST_LLM_URL" \
  RAGCHAT_LLM_MAX_TOKENS=64 RAGCHAT_TOP_K=3 "$bin" serve >"$data/server.log" 2>&1 &
server_pid=$!
if ! scripts/wait-http.sh "http://127.0.0.1:$web_port/health/ready" "$server_pid" 60; then
  tail -n 30 "$data/server.log" >&2
  exit 1
fi
# A second server that wants API keys, for the sign-in test (same data, read-only use).
auth_port="$(scripts/free-port.sh)"
auth_key="k-tester-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
RAGCHAT_DATA_DIR="$data/auth" RAGCHAT_ADDR="127.0.0.1:$auth_port" RAGCHAT_LLM_URL="$RAGCHAT_TEST_LLM_URL" \
  RAGCHAT_LLM_MAX_TOKENS=64 RAGCHAT_TOP_K=3 RAGCHAT_AUTH=api_key RAGCHAT_API_KEYS="tester=$auth_key" \
  RAGCHAT_AUTH_TIMEOUT_SECS=2 RAGCHAT_INGEST_ON_START=tests/fixtures/corpus \
  "$bin" serve >"$data/auth-server.log" 2>&1 &
auth_pid=$!
server_pid="$server_pid $auth_pid"
if ! scripts/wait-http.sh "http://127.0.0.1:$auth_port/health/ready" "$auth_pid" 120; then
  tail -n 30 "$data/auth-server.log" >&2
  exit 1
fi
# Both behind Caddy with the VM's Caddyfile (`tls internal`, loopback): the page over https, its
# socket over wss, as on the VM. One CA for both (shared storage); Chromium trusts it through an
# NSS database in the browser's own HOME (not this machine's trust store).
caddy_home="$data/caddy"
read -r web_front web_caddy caddy_ca < <(scripts/caddy-front.sh "$web_port" "$caddy_home")
server_pid="$server_pid $web_caddy"
read -r auth_front auth_caddy _ < <(scripts/caddy-front.sh "$auth_port" "$caddy_home")
server_pid="$server_pid $auth_caddy"
[[ -n "$web_front" && -n "$auth_front" ]] || { echo "Caddy did not start" >&2; exit 1; }
browser_home="$data/browser-home"
mkdir -p "$browser_home/.pki/nssdb"
certutil -d "sql:$browser_home/.pki/nssdb" -N --empty-password
certutil -d "sql:$browser_home/.pki/nssdb" -A -t "C,," -n "caddy-local-test-ca" -i "$caddy_ca"
echo "== screenshots go to $RAGCHAT_TEST_ARTIFACTS"
HOME="$browser_home" RAGCHAT_TEST_BASE_URL="https://localhost:$web_front" \
  RAGCHAT_TEST_AUTH_BASE_URL="https://localhost:$auth_front" RAGCHAT_TEST_API_KEY="$auth_key" \
  node --test tests/browser/
