"""benchmarks/gpu_check.sh in its CPU smoke mode: every part of the GPU check runs (training beside the
arcface_torch-style loop, the embedding stream, the determinism check, DDP under torchrun)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facetrust.errors import ConfigError
from facetrust.models import build_backbone

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_mode_runs_every_part(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", "--work", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "GPU: none: CPU smoke mode" in out
    assert "ratio ours / loop" in out and "images/s (finite: True)" in out
    assert "two runs of 2 steps give equal checkpoints: True" in out
    assert "backend gloo" in out and "weights equal on every process after 5 DDP steps: True" in out
    assert "smoke mode: nothing written" in out
    assert out.rstrip().endswith("gpu_check: all checks passed")


def test_iresnet_bf16_option_is_checked_and_ignored_on_the_cpu():
    torch.manual_seed(0)
    plain = build_backbone("iresnet", embedding_size=8, input_size=(16, 16), layers=[1, 1, 1, 1], width=4).eval()
    torch.manual_seed(0)
    bf16 = build_backbone("iresnet", embedding_size=8, input_size=(16, 16), layers=[1, 1, 1, 1], width=4,
                          fp16="bf16").eval()
    assert bf16.autocast_dtype == torch.bfloat16 and plain.autocast_dtype == torch.float16
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain(x), bf16(x))  # autocast is CUDA-only: the CPU output is float32's
    with pytest.raises(ConfigError, match="fp16"):
        build_backbone("iresnet", embedding_size=8, input_size=(16, 16), layers=[1, 1, 1, 1], width=4, fp16="half")
