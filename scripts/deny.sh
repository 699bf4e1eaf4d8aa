#!/usr/bin/env bash
# cargo-deny over the workspace: bans (duplicate versions warn, wildcards deny), licenses
# (deny.toml's allow list) and sources (crates.io only). Advisories need the RustSec database from
# the network and run in GitHub CI. Prints one line per crate found in several versions.
set -euo pipefail
cd "$(dirname "$0")/.."
deny="$(scripts/assets.sh cargo-deny)"
out="$(mktemp -t ragchat-deny.XXXXXX)"
trap 'rm -f "$out"' EXIT
if ! "$deny" --color never check --hide-inclusion-graph bans licenses sources >"$out" 2>&1; then
  cat "$out" >&2
  exit 1
fi
dups="$(sed -n "s/^warning\[duplicate\]: found \([0-9]*\) duplicate entries for crate '\(.*\)'$/\2 (\1)/p" "$out")"
if [[ -n "$dups" ]]; then
  echo "   $(wc -l <<<"$dups") crates in more than one version (warn): $(paste -sd, <<<"$dups" | sed 's/,/, /g')"
fi
tail -n 1 "$out" | sed 's/^/   /'
