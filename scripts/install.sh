#!/usr/bin/env bash
# Creates .venv (if missing) and installs ardm_infer with its test extras.
# torch's CPU build is installed first: a bare `torch` requirement would pull a
# multi-GB CUDA build on a machine without one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test]"
