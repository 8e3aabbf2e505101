"""Launcher for the C++ CPU overlap kernel (csrc/cpu/overlap.cpp): checks, layout, call."""
from __future__ import annotations

import numpy as np
import torch

from superkern import backend as _backend
from superkern.ops.overlap_ref import round_to_precision
from superkern.ops.overlap_types import OverlapPartials


def overlap_partials_cpu(X: torch.Tensor, scale: torch.Tensor, *, bins: int, topk: int,
                         precision: str = "fp32") -> OverlapPartials:
    """OverlapPartials from the OpenMP C++ kernel. Low precisions are emulated exactly by
    rounding the inputs (products and accumulation stay fp32, as on tensor cores)."""
    ext = _backend.extension()
    assert ext is not None and hasattr(ext, "overlap_partials_cpu"), "cpu backend not built"
    Xf = np.ascontiguousarray(round_to_precision(X.cpu(), precision).numpy(), dtype=np.float32)
    sf = np.ascontiguousarray(scale.cpu().float().numpy(), dtype=np.float32)
    sums, hist, row_max, row_arg, row_sq, tv, tp = ext.overlap_partials_cpu(Xf, sf, bins, topk)
    return OverlapPartials(
        sum_cos=float(sums[0]), sum_abs=float(sums[1]), sum_sq=float(sums[2]),
        hist=torch.from_numpy(np.asarray(hist, dtype=np.int64)) if bins else None,
        row_max_abs=torch.from_numpy(np.asarray(row_max, dtype=np.float32)),
        row_argmax=torch.from_numpy(np.asarray(row_arg, dtype=np.int64)),
        row_sum_sq=torch.from_numpy(np.asarray(row_sq, dtype=np.float64)),
        topk_values=torch.from_numpy(np.asarray(tv, dtype=np.float32)),
        topk_pairs=torch.from_numpy(np.asarray(tp, dtype=np.int64).reshape(-1, 2)))
