#!/usr/bin/env bash
# `make fuzz`: runs the libFuzzer targets of fuzz/ for a bounded time each (cargo fuzz, nightly,
# AddressSanitizer) and prints what each did. Not part of `make test`.
#   FUZZ_SECS=120                         seconds per target
#   FUZZ_TARGETS="client_frame session"   which targets
# cargo-fuzz is installed into ~/.cache/ragchat/cargo-fuzz (pinned), the corpus grows in
# ~/.cache/ragchat/fuzz-corpus/TARGET (seeded from docs/protocol.md's frames), and a crash is
# written to fuzz/artifacts/TARGET/ — make it a regression test, then delete it.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${RAGCHAT_CACHE:-$HOME/.cache/ragchat}"
secs="${FUZZ_SECS:-120}"
targets="${FUZZ_TARGETS:-client_frame session}"
cargo_fuzz_version=0.13.2

export RUSTUP_TOOLCHAIN="$(scripts/toolchain.sh)"
tools="$cache/cargo-fuzz"
if [[ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]]; then
  echo "fuzz: installing cargo-fuzz $cargo_fuzz_version into $tools" >&2
  cargo install --quiet --locked --root "$tools" cargo-fuzz --version "$cargo_fuzz_version"
fi
export PATH="$tools/bin:$PATH"
export CARGO_TARGET_DIR="$cache/fuzz-target"

status=0
for target in $targets; do
  corpus="$cache/fuzz-corpus/$target"
  mkdir -p "$corpus"
  if [[ "$target" == client_frame ]]; then fuzz/seeds.sh "$corpus" >/dev/null; fi
  echo "== fuzz $target for ${secs}s (corpus $corpus: $(find "$corpus" -type f | wc -l) inputs)"
  log="$(mktemp -t "fuzz-$target.XXXXXX.log")"
  if cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" -- \
      -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    result="no crash"
  else
    result="FAILED (log: $log; inputs in fuzz/artifacts/$target/)"
    status=1
    tail -n 40 "$log" >&2
  fi
  execs="$(awk '/stat::number_of_executed_units/ {print $NF}' "$log" | tail -1)"
  rate="$(awk '/stat::average_exec_per_sec/ {print $NF}' "$log" | tail -1)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)"
  echo "   $target: ${execs:-?} executions (${rate:-?}/s), $cov, corpus $(find "$corpus" -type f | wc -l) inputs: $result"
done
exit "$status"
