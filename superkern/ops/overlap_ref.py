"""Plain-PyTorch reference of the overlap engine: the ``torch`` backend and the test oracle.

Blockwise over upper-triangle row blocks (never N x N), fp32 products within a block (inputs
rounded to the requested precision first, which is what tensor cores compute), fp64 across
blocks. Deterministic and canonical: ties in the per-row argmax go to the smallest j and
the top-k set is ordered by (|c| desc, i asc, j asc).
"""
from __future__ import annotations

import torch

from superkern._tf32 import matmul_precision
from superkern.ops.overlap_types import OverlapPartials

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


_ROUND_CHUNK = 1 << 24  # elements per in-place rounding step


def round_to_precision(X: torch.Tensor, precision: str) -> torch.Tensor:
    """fp32 tensor whose values are X rounded to ``precision``'s input format (exact upcast)."""
    if precision == "tf32":
        # Round-to-nearest-even onto tf32's 10 mantissa bits (values past tf32's largest round
        # to inf; inf and NaN stay as they are). The tensor cores themselves truncate, so the
        # GPU backends feed them operands rounded by this rule. One contiguous fp32 copy,
        # rounded in place in chunks: the temporaries stay small.
        out = X.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        flat = out.view(-1).view(torch.int32)
        for s in range(0, flat.numel(), _ROUND_CHUNK):
            b = flat[s:s + _ROUND_CHUNK]
            r = ((b >> 13) & 1).add_(0xFFF).add_(b).bitwise_and_(~0x1FFF)
            b.copy_(torch.where((b & 0x7F800000) == 0x7F800000, b, r))
        return out
    if precision == "fp32":
        return X.float()
    if precision in ("bf16", "fp16"):
        # An operand already in the format is only widened (4 bytes per element on top of it,
        # what the memory plan counts); other dtypes go through fp32 first, as everywhere.
        low = torch.bfloat16 if precision == "bf16" else torch.float16
        return (X if X.dtype == low else X.float().to(low)).float()
    raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")


def hist_bins(c: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index of each overlap over [-1, 1] (the shared definition; fp32 arithmetic)."""
    idx = torch.floor((c.float() + 1.0) * (bins * 0.5)).to(torch.int64)
    return idx.clamp_(0, bins - 1)


def check_split(split: int, N: int) -> None:
    """``split`` of a cross-pair call: 0 (all pairs) or an S with 0 < S < N."""
    if split and not 0 < split < N:
        raise ValueError(f"split={split} must be 0 (all pairs) or in (0, N={N})")


def num_pairs(N: int, split: int = 0) -> int:
    """Pairs a kernel call reduces: N(N-1)/2, or S(N-S) cross pairs for split S."""
    return split * (N - split) if split else N * (N - 1) // 2


def _merge_row_max(best_v, best_j, v, j):
    """Elementwise running (max, argmax) with ties to the smaller j."""
    take = (v > best_v) | ((v == best_v) & (j < best_j))
    return torch.where(take, v, best_v), torch.where(take, j, best_j)


def _topk_canonical(absval, val, pi, pj, k):
    """Top-k of candidate pairs by (|c| desc, i asc, j asc)."""
    order = torch.argsort(pj, stable=True)
    order = order[torch.argsort(pi[order], stable=True)]
    order = order[torch.argsort(-absval[order], stable=True)]
    order = order[:k]
    return absval[order], val[order], pi[order], pj[order]


def overlap_partials_torch(X: torch.Tensor, scale: torch.Tensor, *, bins: int, topk: int,
                           precision: str = "fp32", block: int = 2048,
                           split: int = 0) -> OverlapPartials:
    """Reference reductions over pairs i < j of c_ij = scale_i scale_j (X_i . X_j).

    Args:
        X: (N, m) rows, any float dtype; rounded to ``precision`` before the products.
        scale: (N,) per-row factors (1 / norm).
        bins, topk: histogram bins (0 = none) and number of top pairs (<= the pair count).
        block: rows per block; memory is O(block^2).
        split: 0 for all pairs i < j; S in (0, N) for the cross pairs i < S <= j only (the
            block-pair streaming of :mod:`superkern.ops.overlap_stream`). Per-row statistics
            then cover each row's cross pairs.
    """
    # Inputs are rounded to ``precision`` here and multiplied in IEEE fp32, whatever the
    # caller's global tf32 switch says.
    with matmul_precision("fp32"):
        return _partials(X, scale, bins=bins, topk=topk, precision=precision, block=block,
                         split=split)


def _partials(X: torch.Tensor, scale: torch.Tensor, *, bins: int, topk: int, precision: str,
              block: int, split: int) -> OverlapPartials:
    N = X.shape[0]
    check_split(split, N)
    dev = X.device
    Xr = round_to_precision(X, precision)
    s = scale.to(device=dev, dtype=torch.float32)
    sums = torch.zeros(3, dtype=torch.float64, device=dev)
    hist = torch.zeros(bins, dtype=torch.int64, device=dev) if bins else None
    row_max = torch.full((N,), -1.0, dtype=torch.float32, device=dev)
    row_arg = torch.full((N,), -1, dtype=torch.int64, device=dev)
    row_sq = torch.zeros(N, dtype=torch.float64, device=dev)
    cand = None  # (absval, val, i, j) candidates for the top-k
    a_end = split or N
    for a0 in range(0, a_end, block):
        Xa = Xr[a0:min(a0 + block, a_end)]
        ia = torch.arange(a0, a0 + Xa.shape[0], device=dev)
        for b0 in range(split or a0, N, block):
            Xb = Xr[b0:b0 + block]
            jb = torch.arange(b0, b0 + Xb.shape[0], device=dev)
            C = (Xa @ Xb.T) * s[ia, None] * s[None, jb]
            valid = ia[:, None] < jb[None, :]
            if bins:
                hist += torch.bincount(hist_bins(C[valid], bins), minlength=bins)
            # Row sums first, then the short vector: the same order on any thread count (a
            # full reduction of the flat tensor splits differently per thread count).
            Cd = torch.where(valid, C.double(), torch.zeros((), dtype=torch.float64, device=dev))
            sq = Cd.square()
            sums += torch.stack([Cd.sum(1).sum(), Cd.abs().sum(1).sum(), sq.sum(1).sum()])
            A = torch.where(valid, C.abs(), torch.full_like(C, -1.0))
            row_sq[ia] += sq.sum(1)
            row_sq[jb] += sq.sum(0)
            # Rows of block a against columns of block b, and (by symmetry) rows of b against a.
            v, j = A.max(1)  # torch.max returns the first maximal index: the smallest j
            row_max[ia], row_arg[ia] = _merge_row_max(row_max[ia], row_arg[ia], v, jb[j])
            v, i = A.max(0)
            row_max[jb], row_arg[jb] = _merge_row_max(row_max[jb], row_arg[jb], v, ia[i])
            if topk:
                flat = A.flatten()
                kth = torch.topk(flat, min(topk, flat.numel())).values[-1]
                sel = torch.nonzero((A >= kth) & valid)
                new = (A[sel[:, 0], sel[:, 1]], C[sel[:, 0], sel[:, 1]],
                       ia[sel[:, 0]], jb[sel[:, 1]])
                if cand is not None:
                    new = tuple(torch.cat([x, y]) for x, y in zip(cand, new))
                cand = _topk_canonical(*new, topk)
    if N < 2:
        row_max.fill_(float("nan"))
    cpu = torch.device("cpu")
    if topk and cand is not None:
        topk_values = cand[1].float().to(cpu)
        topk_pairs = torch.stack([cand[2], cand[3]], 1).to(cpu)
    else:
        topk_values = torch.zeros(0, dtype=torch.float32)
        topk_pairs = torch.zeros((0, 2), dtype=torch.int64)
    s_cpu = sums.cpu().tolist()
    return OverlapPartials(
        sum_cos=s_cpu[0], sum_abs=s_cpu[1], sum_sq=s_cpu[2],
        hist=None if hist is None else hist.to(cpu),
        row_max_abs=row_max.to(cpu), row_argmax=row_arg.to(cpu), row_sum_sq=row_sq.to(cpu),
        topk_values=topk_values, topk_pairs=topk_pairs)
