#!/usr/bin/env bash
# Run the GPU check on a machine with an NVIDIA GPU and CUDA 13, from the repository root.
# Wheels for an offline machine may be put in .whl/ (implicit, rmm-cu13, librmm-cu13, rapids-logger, pydantic...).
set -euo pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import implicit, implicit.gpu; print('implicit', implicit.__version__, 'HAS_CUDA', implicit.gpu.HAS_CUDA)" 2>&1 | tee "$OUT/implicit.txt"
PYTHONUNBUFFERED=1 python3 benchmarks/gpu/check_gpu.py --output "$OUT/gpu-check.json" "$@" 2>&1 | tee "$OUT/gpu-check.log"
