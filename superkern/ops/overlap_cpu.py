"""Launcher for the C++ CPU overlap kernel (csrc/cpu/overlap.cpp): layout, call, wrap.

The kernel runs on OpenMP threads (``OMP_NUM_THREADS``, default: all cores) with the GIL
released; its result is bitwise identical for every thread count.
"""
from __future__ import annotations

import numpy as np
import torch

from superkern import backend as _backend
from superkern.ops.overlap_ref import round_to_precision
from superkern.ops.overlap_types import OverlapPartials


def overlap_partials_cpu(X: torch.Tensor, scale: torch.Tensor, *, bins: int, topk: int,
                         precision: str = "fp32", num_threads: int = 0) -> OverlapPartials:
    """OverlapPartials of c_ij = scale_i scale_j (X_i . X_j) from the OpenMP C++ kernel.

    Args:
        X: (N, m) rows, any float dtype. Low precisions are emulated exactly by rounding the
            inputs to fp32 values of that format (products and accumulation stay fp32, as on
            tensor cores).
        scale: (N,) per-row factors (1 / norm).
        bins, topk: histogram bins (0 = none) and number of top pairs (<= N(N-1)/2).
        num_threads: OpenMP threads; 0 = the OpenMP default (``OMP_NUM_THREADS``).

    Raises:
        ValueError: from the binding, with the numbers (shape, length, topk > P, ...).
    """
    ext = _backend.extension()
    assert ext is not None and hasattr(ext, "overlap_partials_cpu"), "cpu backend not built"
    # fp32 C-contiguous views when possible (no copy for an fp32 contiguous CPU tensor).
    Xf = np.ascontiguousarray(round_to_precision(X.detach().cpu(), precision).numpy(),
                              dtype=np.float32)
    sf = np.ascontiguousarray(scale.detach().cpu().float().numpy(), dtype=np.float32)
    sums, hist, row_max, row_arg, row_sq, tv, tp = ext.overlap_partials_cpu(
        Xf, sf, bins, topk, num_threads=num_threads)
    return OverlapPartials(
        sum_cos=float(sums[0]), sum_abs=float(sums[1]), sum_sq=float(sums[2]),
        hist=torch.from_numpy(hist) if bins else None,
        row_max_abs=torch.from_numpy(row_max), row_argmax=torch.from_numpy(row_arg),
        row_sum_sq=torch.from_numpy(row_sq), topk_values=torch.from_numpy(tv),
        topk_pairs=torch.from_numpy(tp.reshape(-1, 2)))
