"""What decides the floating-point path of a run, pinned so outputs are the same bytes on any x86-64.

Dense kernels pick their code at load time from the CPU: OpenBLAS (numpy's sgemm) takes its
SkylakeX kernels on an AVX-512 machine and its Haswell kernels on an AVX2 one; ATen's vectorised
CPU kernels, MKL (torch's sgemm) and oneDNN (torch's convolutions) do the same.  The kernels sum
in different orders, so the last bits of a product differ between machines, and a training run
amplifies them: the same commit, params and seed gave TAR@FAR=1e-4 0.5751 on one machine and
0.6015 on another.  Pinning every library to its AVX2 path, which every x86-64 CPU of the last
decade has, makes the arithmetic the same on all of them; numpy's own loops are pinned the same way
(its AVX-512 float64 ``exp``/``log`` round differently from its AVX2 ones).  It changes figures from an unpinned
AVX-512 run in their last digits (docs/ARCHITECTURE.md "Floating-point path").

The pins are environment variables the libraries read when they load, so they must be set before
numpy or torch is imported: the ``facetrust`` command sets them first thing (``facetrust.cli``)
and the Snakefile sets them for every job.  A value already in the environment wins (to run with a
library's own choice, set it explicitly, e.g. ``OPENBLAS_CORETYPE=SkylakeX``); what was in force is
recorded in every provenance sidecar (:func:`effective`).  Thread counts are pinned by ``threads``
in params.yaml (each job's ``--threads`` and ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

# The variable each library reads, and the AVX2 value of it.
PINS: dict[str, str] = {
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's OpenBLAS (DYNAMIC_ARCH): the AVX2 kernels
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's vectorised CPU kernels
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # torch's MKL: highest instruction set it may use
    "MKL_CBWR": "AVX2",  # MKL conditional numerical reproducibility: the AVX2 code path
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # torch's oneDNN (convolutions)
    # numpy's own SIMD dispatch: without this it takes its AVX-512 loops, whose float64 exp, log,
    # expm1 and power round differently from the AVX2 ones (SVML), and whose sort is x86-simd-sort's
    # AVX-512 build, 6x slower than its AVX2 build on AMD Zen 4 (microcoded compress-store).  The
    # names are numpy 2.4's dispatch groups (envs/requirements.txt pins it); a feature the CPU lacks
    # is skipped silently.
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}


# Set beside the pins (numpy reads it when it loads too) but no part of the float path: it changes
# no value.  numpy madvises every array of 4 MiB or more for transparent huge pages; where the
# kernel's THP defrag is "madvise" (this machine's, and a common default) each such fault may
# compact memory first.  The stages of the IJB-C-sized evaluation, run while a pipeline churned
# the memory, spent 3.8-5.5 s in the kernel with the advice and 0.95 s without (the user time the
# same); its system time varied 20-fold between runs with the memory's state (benchmarks/README.md
# note 9).
PROCESS_PINS: dict[str, str] = {"NUMPY_MADVISE_HUGEPAGE": "0"}


def pin_environment(environ: dict | None = None) -> dict[str, str]:
    """Set every pin of :data:`PINS` (and :data:`PROCESS_PINS`) not already set in ``environ``
    (default ``os.environ``); returns the float-path values now in force.  Takes effect in this
    process only if numpy and torch are not imported yet, and in every process started from it."""
    environ = os.environ if environ is None else environ
    for name, value in {**PINS, **PROCESS_PINS}.items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in PINS}


def effective() -> dict[str, Any]:
    """The floating-point path in force: the pins' values and what the libraries report using
    (OpenBLAS core, ATen CPU capability, thread counts).  Recorded in provenance sidecars; the
    same on every machine that honours the pins, so the sidecars stay byte-identical too.  ATen's
    fields are ``None`` in a process that never loaded torch (it then ran no torch kernel)."""
    torch = sys.modules.get("torch")
    info: dict[str, Any] = {name: os.environ.get(name) for name in PINS}
    info["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability() if torch else None
    info["torch_threads"] = torch.get_num_threads() if torch else None
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    info["numpy_simd"] = _numpy_simd()
    try:
        from threadpoolctl import threadpool_info

        blas = [lib for lib in threadpool_info() if lib.get("internal_api") == "openblas"]
    except Exception:  # threadpoolctl missing or a library it cannot query: record what is known
        blas = []
    info["openblas_core"] = blas[0].get("architecture") if blas else None
    return info


def _numpy_simd() -> list[str] | None:
    """numpy's dispatch targets in use in this process (the widest decides its loops), or None."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as umath
    return [name for name in umath.__cpu_dispatch__ if umath.__cpu_features__.get(name)]
