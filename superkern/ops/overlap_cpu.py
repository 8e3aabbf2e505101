"""Launcher for the C++ CPU overlap kernel (csrc/cpu/overlap.cpp): layout, call, wrap.

The kernel runs on OpenMP threads with the GIL released, as many as torch's intra-op pool
(``torch.set_num_threads``, ``OMP_NUM_THREADS``): the caller's limit holds in every thread.
Its result is bitwise identical for every thread count, so a forked child (libgomp's thread
pool does not survive ``fork``: a parallel region there can hang) runs on one thread.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from superkern import backend as _backend
from superkern.ops.overlap_ref import round_to_precision
from superkern.ops.overlap_types import OverlapPartials


# Set in every forked child: the extension runs on the OpenMP runtime torch loaded, so torch's
# own parallel ops in the parent leave threads behind that the child does not have.
_FORKED = False


def _forked_child() -> None:
    global _FORKED
    _FORKED = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked_child)


def cpu_threads(num_threads: int = 0) -> int:
    """Threads the kernel runs on for ``num_threads`` (0: torch's intra-op count): 1 in a
    forked child and in a build without OpenMP, at most 4 per processor (the kernel's cap)."""
    ext = _backend.extension()
    if _FORKED or ext is None or not getattr(ext, "built_with_openmp", False):
        return 1
    n = num_threads if num_threads > 0 else torch.get_num_threads()
    procs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n, 4 * (procs or 1)))


# 16-bit rows whose values every listed precision keeps as they are: the kernel widens them
# while packing, so they need no fp32 copy (bf16 has 8 significant bits and fp16 11, within
# tf32's 11; both ranges lie within fp32's).
_EXACT_16 = {torch.bfloat16: ("bf16", ("fp32", "tf32", "bf16")),
             torch.float16: ("f16", ("fp32", "tf32", "fp16"))}


def _kernel_rows(X: torch.Tensor, precision: str) -> tuple[np.ndarray, str]:
    """(C-contiguous rows, kernel format): a 16-bit tensor as it is (bf16 as its uint16 bits)
    when ``precision`` keeps its values, else fp32 values rounded to ``precision`` (no copy
    for a contiguous fp32 tensor at fp32)."""
    fmt, keeps = _EXACT_16.get(X.dtype, (None, ()))
    if precision in keeps:
        X = X.contiguous()
        if fmt == "bf16":
            return X.view(torch.int16).numpy().view(np.uint16), fmt
        return X.numpy(), fmt
    return np.ascontiguousarray(round_to_precision(X, precision).numpy(),
                                dtype=np.float32), "f32"


def overlap_partials_cpu(X: torch.Tensor, scale: torch.Tensor, *, bins: int, topk: int,
                         precision: str = "fp32", num_threads: int = 0) -> OverlapPartials:
    """OverlapPartials of c_ij = scale_i scale_j (X_i . X_j) from the OpenMP C++ kernel.

    Args:
        X: (N, m) rows, any float dtype. Low precisions are emulated exactly by rounding the
            inputs to fp32 values of that format (products and accumulation stay fp32, as on
            tensor cores).
        scale: (N,) per-row factors (1 / norm).
        bins, topk: histogram bins (0 = none) and number of top pairs (<= N(N-1)/2).
        num_threads: OpenMP threads; 0 = torch's intra-op count (see :func:`cpu_threads`).

    Raises:
        ValueError: from the binding, with the numbers (shape, length, topk > P, ...).
    """
    ext = _backend.extension()
    assert ext is not None and hasattr(ext, "overlap_partials_cpu"), "cpu backend not built"
    Xf, fmt = _kernel_rows(X.detach().cpu(), precision)
    sf = np.ascontiguousarray(scale.detach().cpu().float().numpy(), dtype=np.float32)
    threads = cpu_threads(num_threads)
    sums, hist, row_max, row_arg, row_sq, tv, tp = ext.overlap_partials_cpu(
        Xf, sf, bins, topk, num_threads=threads, fmt=fmt)
    return OverlapPartials(
        sum_cos=float(sums[0]), sum_abs=float(sums[1]), sum_sq=float(sums[2]),
        hist=torch.from_numpy(hist) if bins else None,
        row_max_abs=torch.from_numpy(row_max), row_argmax=torch.from_numpy(row_arg),
        row_sum_sq=torch.from_numpy(row_sq), topk_values=torch.from_numpy(tv),
        topk_pairs=torch.from_numpy(tp.reshape(-1, 2)))
