"""Row-norm statistics and the represented fractions phi_1/2 and phi_1 (SPEC section 1)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from superkern.ops._checks import as_matrix, as_nonneg_int
from superkern.ops.overlap_stream import check_norms_finite, row_norms


@dataclass
class NormStats:
    """Row norms r_i = ||W_i|| and their summary.

    ``mean``, ``std`` (ddof 1), ``min``, ``max`` and the histogram are over all n rows, zero
    rows included (SPEC: the norms of the rows as stored; ``n_zero`` counts them); ``median``
    is over the nonzero rows only, as the scale the ``*_median`` fractions divide by.
    ``phi_half`` = |{r_i > 1/2}| / n and ``phi_1`` = |{r_i > 1}| / n on the raw norms; the
    ``*_median`` variants apply the same thresholds to r_i / median(r), where ``median`` is
    taken over the nonzero rows (zero rows, e.g. vocabulary padding, count as unrepresented but
    do not drag the median to 0). The raw thresholds mean something only for rows on the toy
    model's scale (norm ~1); real LM heads are not, so both are reported and a verdict must say
    which it used.
    """

    n: int
    m: int
    n_zero: int
    mean: float
    std: float
    min: float
    max: float
    median: float
    phi_half: float
    phi_1: float
    phi_half_median: float
    phi_1_median: float
    hist: torch.Tensor
    edges: torch.Tensor
    norms: torch.Tensor

    def to_dict(self, with_norms: bool = False) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "norms" and not with_norms:
                continue
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, torch.Tensor) else v
        return out


def row_norms_ref(W: torch.Tensor) -> torch.Tensor:
    """fp64 row norms (reference; fp64 rows whose squares leave fp64's range are measured
    scaled by their largest |value|)."""
    return row_norms(W)


MAX_NORM_BINS = 1 << 24  # norm-histogram bins (its counts are one int64 each)


def _std(r: torch.Tensor, hi: float) -> float:
    """Standard deviation (ddof 1) of the norms r, measured scaled by their largest value so
    that norms near fp64's limits (1e160) do not overflow its squares; 0 for one row."""
    if r.numel() < 2:
        return 0.0
    if hi > 0 and math.isfinite(hi):
        return float((r / hi).std()) * hi
    return float(r.std())


@torch.no_grad()  # statistics of a tensor, never a graph (a Parameter would keep one)
def row_norm_stats(W: Any, *, bins: int = 50, chunk_rows: int = 1 << 15) -> NormStats:
    """Row-norm summary, histogram (``bins`` equal bins over [min, max]) and phi fractions.

    Args:
        W: (n, m) finite float matrix.
        bins: histogram bins (>= 1).

    Raises:
        ValueError: as :func:`superkern.overlap_stats` for bad W; bins < 1.
    """
    W = as_matrix(W)
    if isinstance(bins, int) and not isinstance(bins, bool) and bins < 1:
        raise ValueError(f"bins must be in [1, {MAX_NORM_BINS}] for the norm histogram, got "
                         f"{bins}")  # (as_nonneg_int would say ">= 0", and 0 is no histogram)
    bins = as_nonneg_int(bins, "bins")
    if not 1 <= bins <= MAX_NORM_BINS:
        raise ValueError(f"bins must be in [1, {MAX_NORM_BINS}] for the norm histogram, got "
                         f"{bins}")
    chunk_rows = as_nonneg_int(chunk_rows, "chunk_rows")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    n, m = W.shape
    r = torch.cat([row_norms_ref(W[s:s + chunk_rows]) for s in range(0, n, chunk_rows)]).cpu()
    check_norms_finite(r)
    nz = r[r > 0]  # the median ignores zero rows (padding), which no threshold can count
    med = 0.0 if nz.numel() == 0 else (float(torch.quantile(nz, 0.5)) if nz.numel() <= 1 << 24
                                       else float(nz.median()))
    lo, hi = float(r.min()), float(r.max())
    # Norms near fp64's maximum overflow histc's (x - min) * bins and the mean's sum: both
    # are taken on the norms scaled by a power of two (exact), then scaled back.
    k = math.frexp(hi)[1] if hi > 2.0 ** 960 else 0
    rs = torch.ldexp(r, torch.tensor(-k)) if k else r
    los, his = math.ldexp(lo, -k), math.ldexp(hi, -k)
    hist = torch.histc(rs, bins=bins, min=los, max=his if his > los else los + 1.0
                       ).to(torch.int64)
    edges = torch.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1, dtype=torch.float64)
    rn = r / med if med > 0 else torch.full_like(r, float("nan"))
    return NormStats(
        n=n, m=m, n_zero=int((r == 0).sum()), mean=math.ldexp(float(rs.mean()), k),
        std=_std(r, hi), min=lo, max=hi, median=med,
        phi_half=float((r > 0.5).double().mean()), phi_1=float((r > 1.0).double().mean()),
        phi_half_median=float((rn > 0.5).double().mean()),
        phi_1_median=float((rn > 1.0).double().mean()),
        hist=hist, edges=edges, norms=r)
