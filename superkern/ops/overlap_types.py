"""Result types of the overlap engine.

``OverlapPartials`` is the contract between the public op and every backend kernel: what a
kernel returns for ``N`` rows (indices local to the rows it was given). ``OverlapStats`` is
what users get, with indices mapped back to the original matrix.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch


# The triton backend's histogram lives in shared memory (4 bytes per bin, padded to a power of
# two, per program): 4096 bins is 16 KiB; 65536 would need 256 KiB, past the H100's 227 KiB per
# block. "auto" moves larger histograms to another backend (superkern.ops.overlap).
TRITON_MAX_BINS = 4096


@dataclass
class OverlapPartials:
    """Raw reductions over all unordered pairs i < j of N rows, c_ij = s_i s_j (x_i . x_j).

    Every backend returns exactly this (CPU tensors):
        sum_cos, sum_abs, sum_sq: fp64 sums of c, |c|, c^2 over the P = N(N-1)/2 pairs.
        hist: int64 (bins,) counts of c over [-1, 1]; bin = clamp(floor((c + 1) * bins / 2),
            0, bins - 1), computed in fp32; None when bins == 0.
        row_max_abs: fp32 (N,) max over j != i of |c_ij| (NaN when N == 1).
        row_argmax: int64 (N,) the j attaining it; ties go to the smallest j (-1 when N == 1).
        row_sum_sq: fp64 (N,) sum over j != i of c_ij^2.
        topk_values: fp32 (k,) signed c of the k pairs with largest |c|, ordered by
            (|c| descending, i ascending, j ascending).
        topk_pairs: int64 (k, 2) their (i, j), i < j.
    """

    sum_cos: float
    sum_abs: float
    sum_sq: float
    hist: Optional[torch.Tensor]
    row_max_abs: torch.Tensor
    row_argmax: torch.Tensor
    row_sum_sq: torch.Tensor
    topk_values: torch.Tensor
    topk_pairs: torch.Tensor


def _jsonable(value: Any) -> Any:
    """Lists for tensors and tuples, None for non-finite floats, at any depth."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class OverlapStats:
    """Statistics of the pairwise cosine overlaps c_ij = u_i . u_j over pairs i < j.

    Row indices (``max_pair``, ``topk_pairs``, ``row_argmax``) refer to the ORIGINAL matrix.
    Per-row arrays have length ``n_rows``; rows excluded (masked out, or zero) hold NaN / -1.
    Means over zero pairs are NaN. ``var_abs`` = mean c^2 - mean_abs^2 is the variance of |c|
    over all P pairs (a population variance, not a sample's). ``edges`` are the ``bins + 1``
    bin edges ``2 k / bins - 1`` (0 exactly at the middle for an even count).
    """

    n_rows: int
    n_used: int
    n_zero: int
    m: int
    n_pairs: int
    mean_cos: float
    mean_abs: float
    mean_sq: float
    var_abs: float
    max_abs: float
    max_pair: Optional[tuple[int, int]]
    hist: Optional[torch.Tensor] = None
    edges: Optional[torch.Tensor] = None
    topk_values: Optional[torch.Tensor] = None
    topk_pairs: Optional[torch.Tensor] = None
    row_max_abs: Optional[torch.Tensor] = None
    row_argmax: Optional[torch.Tensor] = None
    row_sum_sq: Optional[torch.Tensor] = None
    centered: bool = False
    backend: str = ""
    precision: str = "fp32"
    seconds: float = 0.0
    block_rows: int = 0  # rows per streamed block (0: one call over the whole head)

    def __repr__(self) -> str:  # one line: the per-row arrays are in the fields
        pair = tuple(int(v) for v in self.max_pair) if self.max_pair is not None else None
        return (f"OverlapStats(n_used={self.n_used}, m={self.m}, n_pairs={self.n_pairs}, "
                f"mean_abs={self.mean_abs:.6g}, mean_sq={self.mean_sq:.6g}, "
                f"max_abs={self.max_abs:.6g} at {pair}, backend={self.backend!r}, "
                f"precision={self.precision!r})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tensors become lists, NaN becomes None)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
