"""Statistics that need a run's saved W (paper Figs. 5b, 6a, 6b, 9, 11, 12, 15, 16), read
from the sweep's safetensors files. Pure reads: nothing is trained."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

# Above this many rows, the O(N^2 m) mean |c| pass is skipped (mean c^2 stays exact via the
# O(N m^2) identity).
MAX_ROWS_ABS = 4096


def load_w(path: Path) -> torch.Tensor:
    """W (n, m) from a file written by ``ToyResult.save`` (fp64 on CPU)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        W = f.get_tensor("W").to(torch.float64)
    if W.dim() != 2 or W.shape[0] < 1 or W.shape[1] < 1:
        raise ValueError(f"W has shape {tuple(W.shape)}, not (n, m)")
    return W


def subset_overlaps(W: torch.Tensor, rows: torch.Tensor, with_abs: bool = True) -> dict:
    """Overlap statistics among ``W[rows]`` after normalising each row.

    Returns a dict with ``count``, ``mean_sq`` (exact, from ||U^T U||_F^2), and, when
    ``with_abs`` and count <= MAX_ROWS_ABS, ``mean_abs`` and ``var_abs`` (variance of |c|).
    Zero rows are left out.
    """
    U = W[rows]
    norms = U.norm(dim=1)
    U = U[norms > 0] / norms[norms > 0, None]
    k = U.shape[0]
    out = {"count": int(k), "mean_sq": math.nan, "mean_abs": math.nan, "var_abs": math.nan}
    if k < 2:
        return out
    pairs = k * (k - 1) / 2
    g = U.T @ U
    out["mean_sq"] = float(((g * g).sum() - k) / 2 / pairs)
    if with_abs and k <= MAX_ROWS_ABS:
        c = U @ U.T
        iu = torch.triu_indices(k, k, offset=1)
        a = c[iu[0], iu[1]].abs()
        out["mean_abs"] = float(a.mean())
        out["var_abs"] = float(a.var(unbiased=False))
    return out


def strong_weak(W: torch.Tensor, threshold: float = 1.0, with_abs: bool = True) -> dict:
    """Overlaps among rows with norm > threshold ("strong") and <= threshold ("weak")."""
    norms = W.norm(dim=1)
    return {"strong": subset_overlaps(W, norms > threshold, with_abs),
            "weak": subset_overlaps(W, (norms <= threshold) & (norms > 0), with_abs=False)}


def ambiguity(W: torch.Tensor) -> float:
    """Spectral norm of W W^T minus the ideal no-superposition Gram (identity on the first m
    rows, zero elsewhere): the paper's Appendix D.5 distance to perfect recovery of the m most
    frequent features."""
    n, m = W.shape
    k = min(m, n)
    # W W^T - P (P = identity on the first m rows) has rank <= 2m and lives in the span of
    # [W, e_1..e_m]: with an orthonormal basis Q of that span its nonzero eigenvalues are those
    # of the (2m x 2m) matrix Q^T (W W^T - P) Q. O(n m^2) instead of an n x n eigenproblem.
    basis = torch.cat([W.to(torch.float64), torch.eye(n, k, dtype=torch.float64)], dim=1)
    q, _ = torch.linalg.qr(basis)
    a = q.T @ W.to(torch.float64)
    e = q[:k].T  # Q^T E_m, E_m = first m unit vectors
    small = a @ a.T - e @ e.T
    return float(torch.linalg.eigvalsh(small).abs().max())


def random_var_abs(m: int, count: Optional[int] = None, seed: int = 0) -> float:
    """Variance of |c| among ``count`` (default m^2/2, capped at 3000) iid Gaussian unit vectors
    in R^m: the dashed baseline of the paper's Fig. 15."""
    k = int(min(count or max(2, m * m // 2), 3000))
    gen = torch.Generator().manual_seed(seed)
    U = torch.randn(k, m, generator=gen, dtype=torch.float64)
    U /= U.norm(dim=1, keepdim=True)
    c = U @ U.T
    iu = torch.triu_indices(k, k, offset=1)
    return float(c[iu[0], iu[1]].abs().var(unbiased=False))


def frequency_bin_overlaps(W: torch.Tensor, n_bins: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """m times the mean c^2 over the pairs inside each frequency bin of a toy model's rows.

    Rows are in feature order (p_i decreasing; at alpha = 0 all are equal and the bins follow
    the index). The bins are log-spaced in rank over all n features, as ``superkern probe``
    bins n counted tokens, so every model of one n shares them; zero rows are left out of
    the pairs. Returns (bin centre ranks, m<c^2> per bin, NaN for a bin with < 2 nonzero
    rows), exact from each bin's Gram identity.
    """
    from superkern.probe.gram import set_moments

    n, m = W.shape
    rank = np.arange(1, n + 1)
    edges = np.unique(np.geomspace(1, n + 1, n_bins + 1))
    which = np.clip(np.searchsorted(edges, rank, side="right") - 1, 0, len(edges) - 2)
    nonzero = W.double().norm(dim=1).numpy() > 0
    bins = [np.flatnonzero(which == b) for b in np.unique(which)]
    mom = set_moments(W, {f"b{k}": torch.from_numpy(ids[nonzero[ids]])
                          for k, ids in enumerate(bins)})
    mids = np.array([math.sqrt((ids[0] + 1.0) * (ids[-1] + 1.0)) for ids in bins])
    return mids, np.array([m * mom[f"b{k}"]["mean_sq"] for k in range(len(bins))])


def cached_stats(path: Optional[Path], cache: dict, kind: str):
    """``strong_weak`` (kind "overlaps"), ``ambiguity``, the row norms (kind "norms", an fp64
    numpy array in feature order) or :func:`frequency_bin_overlaps` (kind "freqbins") of a
    weights file, memoised in ``cache``; None when the file
    is missing, unreadable or holds non-finite values (the last two with a warning naming
    it)."""
    if path is None or not Path(path).is_file():
        return None
    key = (str(path), kind)
    if key not in cache:
        try:
            W = load_w(Path(path))
        except Exception as exc:  # noqa: BLE001 - SafetensorError, KeyError: a damaged file
            warnings.warn(f"{path}: unreadable weights ({type(exc).__name__}: {exc}); that run "
                          "counts as having no saved weights", stacklevel=2)
            cache[key] = None
            return None
        if not bool(torch.isfinite(W).all()):
            warnings.warn(f"{path}: weights hold {int((~torch.isfinite(W)).sum())} non-finite "
                          "value(s); that run counts as having no saved weights", stacklevel=2)
            cache[key] = None
            return None
        if kind == "ambiguity":
            cache[key] = ambiguity(W)
        elif kind == "norms":
            cache[key] = W.norm(dim=1).numpy()
        elif kind == "freqbins":
            cache[key] = frequency_bin_overlaps(W)
        else:
            cache[key] = strong_weak(W)
    return cache[key]
