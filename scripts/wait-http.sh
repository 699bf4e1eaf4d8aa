#!/usr/bin/env bash
# Waits until URL answers 200, or PID dies, or TIMEOUT seconds pass.
# usage: scripts/wait-http.sh URL PID [TIMEOUT]
set -euo pipefail
url="$1" pid="$2" timeout="${3:-120}"
for _ in $(seq $((timeout * 5))); do
  if ! kill -0 "$pid" 2>/dev/null; then echo "process $pid exited while waiting for $url" >&2; exit 1; fi
  if curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null; then exit 0; fi
  sleep 0.2
done
echo "timed out after ${timeout}s waiting for $url" >&2
exit 1
