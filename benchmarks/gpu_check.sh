#!/usr/bin/env bash
# TaSP's GPU path, ready to prove: CUDA against CPU (fp32, fp16 and bf16 autocast, within the
# tolerances printed) and images per second at 1024 px, batched and with hloc's loop.
# At most 10 minutes. Run from anywhere on a CUDA machine with the package installed:
#
#     bash benchmarks/gpu_check.sh [--out gpu_check.json] [--images DIR] [--batch 8]
#
# Options are those of `python -m benchmarks.gpu_check --help`. Without a GPU, the same code
# runs on the CPU (the dry run that tests/benchmarks/test_gpu_check.py runs in CI):
#     bash benchmarks/gpu_check.sh --device cpu --synthetic --size 96 --n-images 2 --batch 2
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'available:', torch.cuda.is_available())"
# 600 s in all; the check itself takes ~1-3 min on a recent GPU (most of it loading and JPEGs).
exec timeout --signal=INT --kill-after=10 590 "$PYTHON" -m benchmarks.gpu_check "$@"
