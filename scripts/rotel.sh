#!/usr/bin/env bash
# Prints the path of rotel-agent (an OpenTelemetry collector from PyPI, pinned with hashes in
# tests/observability/requirements.txt), installing it into a venv in the cache first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${RAGCHAT_CACHE:-$HOME/.cache/ragchat}/venv-rotel"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s tests/observability/requirements.txt "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
    -r tests/observability/requirements.txt >&2
  cp tests/observability/requirements.txt "$venv/requirements.txt"
fi
find "$venv" -name rotel-agent -type f | head -n 1
