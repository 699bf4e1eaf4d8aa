#!/usr/bin/env bash
# Makes sure the toolchain pinned in rust-toolchain.toml is available, and prints its name.
# rustup installs it where it can download; on a machine without network whose installed
# `nightly` is that very nightly (same channel date), it is linked under the pinned name instead
# of downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
pinned="$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)"
[[ -n "$pinned" ]] || { echo "rust-toolchain.toml names no channel" >&2; exit 1; }
if rustup run "$pinned" rustc --version >/dev/null 2>&1; then
  echo "$pinned"
  exit 0
fi
home="${RUSTUP_HOME:-$HOME/.rustup}"
host="$(rustc +stable -vV 2>/dev/null | sed -n 's/^host: //p' || true)"
host="${host:-x86_64-unknown-linux-gnu}"
nightly="$home/toolchains/nightly-$host"
date="${pinned#nightly-}"
if [[ -f "$nightly/lib/rustlib/multirust-channel-manifest.toml" ]] \
  && grep -q "^date = \"$date\"" "$nightly/lib/rustlib/multirust-channel-manifest.toml"; then
  ln -sfn "nightly-$host" "$home/toolchains/$pinned-$host"
  echo "toolchain: the installed nightly is $pinned; linked it under that name" >&2
else
  echo "toolchain: installing $pinned (rust-toolchain.toml)" >&2
  rustup toolchain install "$pinned" --profile minimal --component rustfmt,clippy >&2
fi
rustup run "$pinned" rustc --version >/dev/null
echo "$pinned"
