#!/usr/bin/env bash
# Reproduce the shipped ONNX exports weights/*.onnx from weights/*.pt and write
# the files' sha256 and parity into the cards weights/*.json (exports.fp32).
# Usage: export/export_all.sh            (from anywhere; PYTHON=... to pick the interpreter)
# Parity clips: $NESTSPK_DATA/librispeech-snippets/train-clean-100 (default <repo>/../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
for name in nested_4level resnetse34l_asp; do
    "$PY" -m nestspk.export --model "weights/$name.json" -o "weights/$name.onnx" \
        --update-card --opset 18 --clips 8 ${NESTSPK_DATA:+--data "$NESTSPK_DATA"} "$@"
done
sha256sum weights/*.onnx
