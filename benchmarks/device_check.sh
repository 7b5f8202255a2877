#!/usr/bin/env bash
# One-shot device benchmark (issue 15): under 8 minutes on one CUDA GPU; a CPU-only dry run elsewhere.
#
#   bash benchmarks/device_check.sh [OUT] [--quick]
#
# Uses the first python3 that imports torch (on the GPU machine: the image's own, with CUDA torch).
# wsimito's other dependencies must import there too; where the machine has no package registry,
# carry them as wheels in .whl/ (see benchmarks/README or RESULTS.md): they are installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-device-check}"
shift || true
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/wsimito-site .whl/*.whl
    export PYTHONPATH="/tmp/wsimito-site:${PYTHONPATH:-}"
fi
py=python3
[ -x .venv/bin/python ] && ! python3 -c "import torch" 2>/dev/null && py=.venv/bin/python
export PYTHONPATH="$PWD:$PWD/benchmarks:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
"$py" -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
timeout 470 "$py" benchmarks/device_check.py --out "$out" "$@"
