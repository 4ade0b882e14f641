#!/usr/bin/env bash
# GPU check, the day a GPU is lent (<= 8 min on one GPU): the GPU, iResNet-50 bf16 training beside an
# arcface_torch-style loop (samples/s, ratio), a 100k-image embedding stream (images/s), two runs with
# the determinism flags (equal checkpoints), and NCCL DDP under torchrun on every visible GPU.
#
#   benchmarks/gpu_check.sh            # on a GPU machine (honours CUDA_VISIBLE_DEVICES)
#   benchmarks/gpu_check.sh --smoke    # every part on the CPU with tiny sizes (CI)
#
# Extra arguments go to gpu_check.py (--steps, --batch, --embed-images, --work ...).  No downloads:
# data are generated on the fly.  Exit status: 0 when every check passed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PYTHON="${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || command -v python3 )}"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"  # deterministic cuBLAS (determinism check)
SMOKE=""
for arg in "$@"; do [ "$arg" = "--smoke" ] && SMOKE="--smoke"; done

if [ -z "$SMOKE" ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv || true
  NGPU="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')"
  if [ "$NGPU" -lt 1 ]; then
    echo "gpu_check.sh: no CUDA GPU visible (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}); try --smoke" >&2
    exit 2
  fi
else
  NGPU=1
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi

status=0
timeout 420 "$PYTHON" "$HERE/gpu_check.py" "$@" || status=$?
# NCCL DDP on every visible GPU (gloo on the CPU in smoke mode), one process per GPU, even one.
timeout 120 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" \
  "$HERE/gpu_ddp_probe.py" $SMOKE || status=$?
if [ "$status" -eq 0 ]; then echo "gpu_check: all checks passed"; else echo "gpu_check: FAILED ($status)"; fi
exit "$status"
