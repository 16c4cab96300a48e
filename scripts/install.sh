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
  # Debian's chromium for the playground's browser test (Playwright drives it; it never downloads a browser).
  # Best effort: without root or apt, or if apt fails, the rest still installs and that one test skips.
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
      >/dev/null 2>&1 || echo "install.sh: could not install chromium with apt-get; the browser test will skip" >&2
  fi
  .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
else
  .venv/bin/python -m pip install -q -e . 2>&1 | grep -v '^WARNING: Location' || true
fi
.venv/bin/python -c "import gpt1, torch; print(f'gpt1 {gpt1.__version__} installed (torch {torch.__version__})')"
