#!/usr/bin/env bash
# The CUDA paths, checked in under 5 minutes on one GPU: the tests marked `cuda` (parity with transformers in fp32
# and bf16, training eager and compiled, exact resume, one-GPU torchrun, generation, the server), then the GPU rows
# of benchmarks/generate.py and benchmarks/train.py, then one summary table. CI never runs this.
# Usage: bash scripts/gpu-check.sh [OUT_DIR]   (default gpu-check/; PYTHON=... picks the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-gpu-check}
mkdir -p "$OUT"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu-check: no CUDA GPU is visible to $PY; nothing to check." >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>/dev/null || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$OUT/gpu.txt"

timeout 180 "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider --junitxml "$OUT/tests.xml" \
  > "$OUT/tests.txt" 2>&1
echo "tests: exit $?" >> "$OUT/status.txt"
timeout 60 "$PY" benchmarks/generate.py --device cuda --quick > "$OUT/generate.txt" 2>&1
echo "generate.py: exit $?" >> "$OUT/status.txt"
timeout 90 "$PY" benchmarks/train.py --device cuda --shapes gpt1:8:512 --precisions bf16 --compile --steps 5 \
  > "$OUT/train.txt" 2>&1
echo "train.py: exit $?" >> "$OUT/status.txt"

"$PY" - "$OUT" <<'PY'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
print("## gpt1 GPU check:", " / ".join(out.joinpath("gpu.txt").read_text().split("\n")[:2]))
print("\n| check | result |\n|---|---|")
try:
    for case in ET.parse(out / "tests.xml").getroot().iter("testcase"):
        verdict = "failed" if case.find("failure") is not None or case.find("error") is not None else (
            "skipped" if case.find("skipped") is not None else "passed")
        print(f"| test {case.get('name')} | {verdict} ({float(case.get('time', 0)):.1f} s) |")
except (OSError, ET.ParseError) as e:
    print(f"| tests | no report ({e}) |")
for line in out.joinpath("status.txt").read_text().splitlines():
    print(f"| {line.split(':')[0]} | {line.split(':', 1)[1].strip()} |")
for name in ("generate.txt", "train.txt"):
    print(f"\n### {name} (last lines)\n```")
    print("\n".join(out.joinpath(name).read_text().splitlines()[-25:]))
    print("```")
PY
