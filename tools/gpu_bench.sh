#!/usr/bin/env bash
# One prepared command for a single-GPU machine (minutes on an H100/H200): saim's rescoring, click and training at
# 256² and 512² against the bare model in the same run, and the projected time to rescore 120k slices (AMOS size).
# Writes out/gpu-bench.json. `--tiny` runs the same code for seconds on a CPU (the tests do).
# Usage: tools/gpu_bench.sh [--tiny] [--device auto|cpu|cuda[:N]] [--out FILE] ...   (python tools/gpu_bench.py -h)
# Python: $PYTHON, else .venv/bin/python when present, else python3; this checkout goes on PYTHONPATH, so a machine
# with torch and saim's requirements needs no install of saim itself.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
case " $* " in
  *" --tiny "*) ;;
  *) command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader ;;
esac
exec "$py" tools/gpu_bench.py "$@"
