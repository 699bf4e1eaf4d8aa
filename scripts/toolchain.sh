#!/usr/bin/env bash
# Prints the rustup toolchain to build with: nothing when the default rustc is new enough for
# rust-version (1.96, needed by qdrant-edge), else "nightly" if rustup has it installed.
set -euo pipefail
need_minor=96
minor="$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')"
if [[ "$minor" -ge "$need_minor" ]]; then
  exit 0
fi
toolchains="$(command -v rustup >/dev/null && rustup toolchain list || true)"
if grep -q '^nightly' <<<"$toolchains"; then
  echo nightly
  exit 0
fi
echo "ragchat needs Rust >= 1.$need_minor (found $(rustc --version)); run: rustup update stable" >&2
exit 1
