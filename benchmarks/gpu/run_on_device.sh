#!/usr/bin/env bash
# GPU checks, from the repository root, on a machine with an NVIDIA GPU and CUDA 13.
#
#   benchmarks/gpu/run_on_device.sh [STEP...]     steps: env train-cli test train scoring serve
#
#   env        the GPU, implicit's CUDA build, onnxruntime's providers
#   train-cli  `recsys train --device gpu` on generated data; the manifest must say gpu
#   test       GPU and CPU solvers rank alike; the CUDA provider scores as numpy does
#   train      benchmarks/gpu/check_gpu.py: time and quality, GPU against CPU, and full scale
#   scoring    benchmarks/gpu/check_scoring.py: the scoring graph on onnxruntime's CUDA provider
#   serve      benchmarks/gpu/check_serving.py: `recsys serve` asked for the GPU: the provider it
#              reports, its answers against the CPU provider's and numpy's, latency under load
#
# Every step runs; the exit status is non-zero when any failed. Logs and JSON go to $OUT
# (default bench-out/gpu). Wheels for an offline machine may be put in .whl/ (implicit,
# rmm-cu13, librmm-cu13, rapids-logger, pydantic, fastapi, uvicorn, ...); they are
# installed to /tmp/site.
set -uo pipefail
OUT=${OUT:-bench-out/gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi

step_env() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PYTHON" -c "import implicit, implicit.gpu; print('implicit', implicit.__version__, 'HAS_CUDA', implicit.gpu.HAS_CUDA)"
  "$PYTHON" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
}

install_cli() {
  command -v recsys >/dev/null || "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e .
}

step_train_cli() {
  install_cli
  local work
  work=$(mktemp -d)
  recsys data synth --scale 0.01 --output "$work/playlists.parquet" &&
    recsys train --data "$work/playlists.parquet" --registry "$work/models" --device gpu &&
    grep -q '"device": "gpu"' "$work/models/versions/2.1/manifest.json" &&
    echo "manifest of 2.1 records device gpu"
}

step_test() {
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/unit/test_gpu.py tests/unit/test_onnx_scoring.py
}

step_train() {
  "$PYTHON" benchmarks/gpu/check_gpu.py --scale 0.05 --full-scale-gpu --output "$OUT/gpu-check.json"
}

step_scoring() {
  "$PYTHON" benchmarks/gpu/check_scoring.py --cuda-int8 --output "$OUT/gpu-scoring.json"
}

step_serve() {
  install_cli
  "$PYTHON" benchmarks/gpu/check_serving.py --output "$OUT/gpu-serving.json"
}

status=0
for step in "${@:-env train-cli test train scoring serve}"; do
  for name in $step; do
    echo "== $name"
    if ! "step_${name//-/_}" 2>&1 | tee "$OUT/$name.log"; then
      echo "== $name FAILED"
      status=1
    fi
  done
done
exit $status
