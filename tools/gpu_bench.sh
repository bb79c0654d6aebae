#!/usr/bin/env bash
# One prepared command for a single-GPU machine (minutes on an H100/H200): saim's rescoring, click and training at
# 256² and 512² against the bare model in the same run, and the projected time to rescore 120k slices (AMOS size).
# Writes out/gpu-bench.json. `--tiny` runs the same code for seconds on a CPU (the tests do).
# `--experiment` then runs `saim experiment` at 256 px over 3 seeds on the synthetic phantoms and, when
# out/totalseg/dataset.json is there (`make totalseg` on a machine with PyPI; carry out/totalseg to the GPU machine),
# on the TotalSegmentator slabs, with make results' arguments otherwise; reports and plots in out/gpu-results/.
# Usage: tools/gpu_bench.sh [--tiny] [--experiment] [--device auto|cpu|cuda[:N]] [--out FILE] ...
#        (python tools/gpu_bench.py -h)
# Python: $PYTHON, else .venv/bin/python when present, else python3; this checkout goes on PYTHONPATH, so a machine
# with torch and saim's requirements needs no install of saim itself.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
experiment=0
args=()
for a in "$@"; do
  if [ "$a" = --experiment ]; then experiment=1; else args+=("$a"); fi
done
case " $* " in
  *" --tiny "*) ;;
  *) command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader ;;
esac
"$py" tools/gpu_bench.py "${args[@]}"
[ "$experiment" = 1 ] || exit 0
# the Makefile's results arguments (RESULTS_ARGS, SYNTHETIC_ARGS, TOTALSEG_ARGS) at 256 px on the device, one run
# at a time (one GPU)
common=(--seeds 0 1 2 --image-size 256 --device auto --jobs 1 --quiet)
mkdir -p out/gpu-results
"$py" -m saim.cli experiment --data synthetic --iterations 3 --refine-steps 5 "${common[@]}" \
  --report out/gpu-results/synthetic-256.json --plot out/gpu-results/synthetic-256.png
if [ -f out/totalseg/dataset.json ]; then
  "$py" -m saim.cli experiment --data out/totalseg --max-slices 0 --iterations 2 --stratify 'ts_(ct|mr)_' \
    --refine-steps 20 --refine-radius 3 "${common[@]}" \
    --report out/gpu-results/totalseg-256.json --plot out/gpu-results/totalseg-256.png
else
  echo "gpu_bench.sh: out/totalseg/dataset.json missing: the TotalSegmentator experiment is skipped (make totalseg)"
fi
