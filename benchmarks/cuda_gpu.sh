#!/usr/bin/env bash
# One short run on a GPU machine (CuPy installed, `pip install -e ".[test,cuda]"`): the CUDA
# kernel tests through CuPy (and the emulation), registers and spills, then the kernel and
# training benchmarks on the cupy (reference on the GPU), cuda and PyTorch backends.
# Writes benchmarks/results/gpu/; copy the figures, the date and the GPU's name into
# kernels/cuda/README.md ("On a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results/gpu
mkdir -p "$out"
{
  date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  python -c "import cupy; print('cupy', cupy.__version__, 'usable:', cupy.is_available())"
  python -m pytest -q tests/test_kernel_*.py tests/test_cuda_*.py -k "gpu or compile or models" -rs
  python -m tinylm.kernels.cuda.resource_usage --arch sm_90
  python -m tinylm.bench --backends cupy,cuda,torch --sizes small,medium --repeat 10 --warmup 3 --out "$out"
  python -m tinylm.bench --train --train-size medium --backends cupy,cuda,torch --repeat 3 --warmup 1 --no-memory --out "$out"
} 2>&1 | tee "$out/report.md"
