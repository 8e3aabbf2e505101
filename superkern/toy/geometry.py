"""Geometry summary of a trained toy W, from the overlap engine (SPEC sections 1 and 3)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from superkern.ops.norms import row_norm_stats
from superkern.ops.overlap import overlap_moments_exact

V2_MEAN = 4.0 / 3.0  # <v^2> for v ~ U(0, 2)


def welch_kappa2(count: int, m: int) -> float:
    """Welch bound squared for ``count`` unit vectors in R^m: (N - m) / (m (N - 1)), 0 if
    N <= m (orthogonal vectors fit), NaN below 2 vectors."""
    if count < 2:
        return math.nan
    if count <= m:
        return 0.0
    return (count - m) / (m * (count - 1))


def unlearned_loss(p: torch.Tensor | np.ndarray, phi_half: float) -> float:
    """Weak-regime loss prediction <v^2> * sum_{i > phi_half n} p_i (reported-loss units).

    p (a tensor or an array) is sorted descending first, so "the first phi_half n features"
    are the most frequent. The sweep's analyses call this too, on a stored config's p.
    """
    if isinstance(p, torch.Tensor):
        p = p.detach().cpu().double().numpy()
    ps = np.sort(np.asarray(p, dtype=np.float64).ravel())[::-1]
    k = int(round(phi_half * ps.size))
    return V2_MEAN * float(ps[k:].sum())


def toy_geometry(W: torch.Tensor, p: torch.Tensor) -> tuple[float, float, dict[str, Any]]:
    """(phi_half, phi_1, geometry dict) of a trained W (n, m) with frequencies p (n,).

    The dict holds ``n_represented`` (norm > 1/2), ``n_strong`` (norm > 1), ``mean_sq_strong``
    (mean cos^2 among the strong rows), ``welch_kappa2_strong`` (Welch bound squared for that
    count in R^m), ``mean_sq_all`` (all nonzero rows), ``random_mean_sq`` (1/m, iid isotropic),
    ``unlearned_loss`` and norm summary numbers. Non-finite W gives NaNs and ``finite=False``.
    """
    n, m = W.shape
    nan = math.nan
    if not bool(torch.isfinite(W).all()):
        return nan, nan, {"finite": False, "m": m, "n": n}
    ns = row_norm_stats(W, bins=1)
    strong = ns.norms > 1.0
    n_strong = int(strong.sum())
    all_mom = overlap_moments_exact(W)
    strong_mom = overlap_moments_exact(W, rows=strong) if n_strong >= 2 else {"mean_sq": nan}
    geo = {
        "finite": True, "n": n, "m": m,
        "n_represented": int((ns.norms > 0.5).sum()), "n_strong": n_strong,
        "mean_sq_strong": strong_mom["mean_sq"],
        "welch_kappa2_strong": welch_kappa2(n_strong, m),
        "mean_sq_all": all_mom["mean_sq"],
        "random_mean_sq": 1.0 / m,
        "unlearned_loss": unlearned_loss(p, ns.phi_half),
        "norm_mean": ns.mean, "norm_median": ns.median, "norm_max": ns.max,
        "n_zero_rows": ns.n_zero,
    }
    return ns.phi_half, ns.phi_1, geo
