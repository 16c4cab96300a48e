#!/usr/bin/env bash
# Install gpt1 into ./.venv. `scripts/install.sh test` adds the test extras (transformers 4.57 reference, pytest, ...)
# and the system Chromium the browser test drives. torch goes first and pinned: an unpinned torch would pull
# GBs of CUDA packages where a CPU wheel is what we want.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}" 2>&1 | grep -v '^WARNING: Location' || true
if [ "${1:-}" = "test" ]; then
  .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
else
  .venv/bin/python -m pip install -q -e . 2>&1 | grep -v '^WARNING: Location' || true
fi
.venv/bin/python -c "import gpt1, torch; print(f'gpt1 {gpt1.__version__} installed (torch {torch.__version__})')"
