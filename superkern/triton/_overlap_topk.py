"""Host side of the exact top-k: a cheap valid threshold, buffer sizing, canonical selection.

The kernel appends every pair that ranks at or before a threshold triple (t, ti, tj) in the
canonical order (|c| desc, i asc, j asc) to a candidate buffer. The threshold starts at the
exact k-th largest |c| among the pairs of a subset of rows (a subset's k-th largest is never
above the whole set's), lowered by a margin for rounding differences between torch's and the
kernel's products. If the buffer overflows with at most ``GROW_MAX`` candidates (the count
is exact past its end), it grows to that count and the same threshold runs once more,
storing them all. A larger overflow makes the k-th best collected pair the new threshold: it
ranks strictly before the worst collected one, so every rerun collects fewer pairs (at least
cap - k fewer) and the loop ends, ties included (all-identical rows rank by (i, j)). The
final set, every pair at or before the last threshold, does not depend on the order
candidates arrived in, so the result is deterministic.
"""
from __future__ import annotations

import math

import torch

from superkern._tf32 import matmul_precision
from superkern.ops.overlap_ref import _topk_canonical

CAP_MAX = 1 << 22       # 4M candidates x 12 bytes = 48 MiB, the most we allocate by default
# After an overflow the pass's exact count is known: up to this many candidates the buffer
# grows to hold them all and one more pass at the same threshold stores every one, whatever
# order the GPU's atomics hand out the slots in. Beyond it the threshold rises instead, to
# the k-th best stored pair, which needs more passes when the stored pairs are an arbitrary
# subset (tests set 0 to exercise that path).
GROW_MAX = CAP_MAX
CAP_MIN = 4096


def subset_rows(N: int, k: int, max_rows: int) -> torch.Tensor:
    """Sorted int64 indices of the rows whose pairs estimate the threshold.

    At least enough rows for 4k pairs (when N allows), at most max(max_rows, that); a fixed
    seed makes the subset, hence the buffer size and the number of passes, reproducible.
    """
    need = math.ceil((1 + math.sqrt(1 + 32 * k)) / 2)  # s (s - 1) / 2 >= 4 k
    s = min(N, max(max_rows, need))
    if s == N:
        return torch.arange(N, dtype=torch.int64)
    g = torch.Generator().manual_seed(0x5EED)
    return torch.randperm(N, generator=g)[:s].sort().values


def _subset_gram(X: torch.Tensor, scale: torch.Tensor, ia: torch.Tensor, jb: torch.Tensor):
    """|c| over the rows ia x columns jb (fp32; the compute dtype's product on the GPU, with
    tf32 off whatever the caller set: a tf32 product's error could exceed the margin)."""
    Xa, Xb = X[ia.to(X.device)], X[jb.to(X.device)]
    if not Xa.is_cuda:
        Xa, Xb = Xa.float(), Xb.float()
    with matmul_precision("fp32"):
        C = (Xa @ Xb.T).float()
    sa, sb = scale[ia.to(X.device)].float(), scale[jb.to(X.device)].float()
    return (C * sa[:, None] * sb[None, :]).abs_()


def initial_threshold(X: torch.Tensor, scale: torch.Tensor, k: int, *, max_rows: int,
                      rel_margin: float, split: int = 0) -> tuple[float, float]:
    """(t0, expected number of pairs with |c| >= t0) from the pairs of a row subset.

    X is what the kernel reads (already in its compute dtype); the subset Gram runs in that
    dtype on the GPU (fast; its rounding is what ``rel_margin`` covers) and in fp32 on CPU.
    t0 = -1 (collect everything) when the subset has fewer than k pairs. With ``split`` S
    only cross pairs i < S <= j count: subsets of both parts, their rectangle of pairs.
    """
    N = X.shape[0]
    if split:
        P = split * (N - split)
        half = max(1, max_rows // 2)
        ia = subset_rows(split, k, half)
        jb = split + subset_rows(N - split, k, half)
        Ps = ia.numel() * jb.numel()
        if Ps < k:
            return -1.0, float(P)
        A = _subset_gram(X, scale, ia, jb)
    else:
        P = N * (N - 1) // 2
        idx = subset_rows(N, k, max_rows)
        s = idx.numel()
        Ps = s * (s - 1) // 2
        if Ps < k:
            return -1.0, float(P)
        A = _subset_gram(X, scale, idx, idx)
        A.masked_fill_(torch.ones(s, s, dtype=torch.bool, device=A.device).tril_(), -1.0)
    kth = float(torch.topk(A.flatten(), k).values[-1])
    t0 = kth * (1.0 - rel_margin) - 1e-6
    return t0, k * P / Ps


def capacity(k: int, P: int, expected: float, override: int | None) -> int:
    """Candidate buffer length: ~4x the expected count, > k (needed for progress), <= P."""
    if override is not None:
        if override <= min(k, P - 1):
            raise ValueError(f"candidate capacity {override} must exceed topk={k}")
        return int(override)
    cap = max(4 * expected + 1024, 2 * k + 1, CAP_MIN)
    cap = min(cap, max(CAP_MAX, 2 * k + 1))
    return int(max(min(cap, P), k + 1))


def canonical(vals: torch.Tensor, pi: torch.Tensor, pj: torch.Tensor, k: int):
    """The first k of (|c|, c, i, j) in the order (|c| desc, i asc, j asc)."""
    return _topk_canonical(vals.abs(), vals, pi.long(), pj.long(), k)
