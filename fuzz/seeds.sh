#!/usr/bin/env bash
# Seeds a client_frame fuzz corpus (default fuzz/corpus/client_frame) with the protocol's own
# examples: docs/protocol.md's JSON frames, and an ask with every field.
# usage: fuzz/seeds.sh [CORPUS_DIR]
set -euo pipefail
corpus="$(realpath -m "${1:-$(dirname "$0")/corpus/client_frame}")"
cd "$(dirname "$0")/.."
mkdir -p "$corpus"
i=0
python3 - docs/protocol.md <<'PY' | while IFS= read -r line; do printf '%s' "$line" > "$corpus/seed-$i.json"; i=$((i + 1)); done
import json, re, sys
text = open(sys.argv[1]).read()
for block in re.findall(r"```json\n(.*?)```", text, re.S):
    for chunk in re.split(r"\n(?=\{)", block.strip()):
        try:
            print(json.dumps(json.loads(chunk)))
        except ValueError:
            pass
PY
printf '%s' '{"type":"ask","question":"q","history":[{"role":"user","content":"a"}],"turn_id":"t","conversation_id":"c","user":"u","stream":false}' > "$corpus/seed-ask.json"
printf '%s' '{"type":"cancel"}' > "$corpus/seed-cancel.json"
printf '%s' '{"type":"auth","token":"k"}' > "$corpus/seed-auth.json"
ls "$corpus" | wc -l
