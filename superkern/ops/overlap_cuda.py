"""Launcher for the hand-written CUDA overlap kernel (csrc/cuda/overlap.cu).

The extension links no libtorch: this module lays out the operand, allocates every output with
torch on the tensor's device, passes raw device addresses and the current stream to
``superkern._C.overlap_partials_cuda``, and turns the kernel's integer / per-block outputs into
:class:`OverlapPartials`, deterministically:

- ``sum_*``: fp64 per-block partials, summed on the host in block order (``math.fsum``).
- ``row_max_abs`` / ``row_argmax``: decoded from packed ``(fp32 bits of |c|) << 32 | ~j`` keys
  (an integer atomicMax keeps the max with ties to the smallest j).
- ``row_sum_sq``: fixed-point int64 sums (scale 2^32) -> fp64.
- top-k: the kernel appends every pair whose key (|c| desc, i asc, j asc) ranks at or above a
  threshold key; this launcher picks the threshold (k-th key of a leading block of rows, which
  the same kernel computes bit-identically). When the candidate buffer overflows with at most
  ``GROW_MAX`` candidates it grows to the exact count and reruns the same key (one rerun,
  whatever order the atomics stored them in); beyond that it raises the key (strictly, since
  keys are distinct: the loop always ends). The survivors are sorted canonically.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch

from superkern import backend as _backend
from superkern.ops.overlap_ref import (PRECISIONS, _topk_canonical, check_split, num_pairs,
                                       overlap_partials_torch)
from superkern.ops.overlap_types import OverlapPartials

_DTYPE = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
          "fp16": torch.float16}
TILE = 128  # rows per Gram tile (the extension's overlap_cuda_config["tile"]; a test checks)
DEFAULT_CAPACITY = 1 << 20  # top-k candidate slots (12 bytes each)
# An overflow of at most this many candidates grows the buffer to the exact count and reruns
# the same threshold once (see _Run._settle); tests set 0 to exercise the other path.
GROW_MAX = 1 << 22
_I32_MAX = 2**31 - 1
_ALL_PAIRS = (-1.0, _I32_MAX, _I32_MAX)  # threshold key every pair ranks above


def _ext():
    ext = _backend.extension()
    if ext is None or not hasattr(ext, "overlap_partials_cuda"):
        raise RuntimeError("the CUDA overlap kernel is not built: "
                           f"{_backend.available('cuda')['cuda']}")
    return ext


def cuda_operand(X: torch.Tensor, precision: str) -> tuple[torch.Tensor, int]:
    """(tensor the kernel reads, its row stride ld in elements).

    The kernel reads rows in 16-byte chunks: rows must start 16-byte aligned and any bytes of
    the last chunk past column m must be zero. A contiguous (or row-strided) matrix whose width
    fills whole chunks is used as is; otherwise the rows are copied into a zero-padded buffer.
    """
    dtype = _DTYPE[precision]
    if X.dtype != dtype:
        X = X.to(dtype)
    n, m = X.shape
    align = 16 // X.element_size()
    if (X.stride(1) == 1 and m % align == 0 and X.stride(0) >= m and X.stride(0) % align == 0
            and X.data_ptr() % 16 == 0):
        return X, int(X.stride(0)) if n > 1 else m
    ld = -(-m // align) * align
    Xp = torch.zeros((n, ld), dtype=dtype, device=X.device)
    Xp[:, :m] = X
    return Xp, ld


def overlap_partials_cuda(X: torch.Tensor, scale: torch.Tensor, *, bins: int, topk: int,
                          precision: str = "fp32",
                          capacity: Optional[int] = None, split: int = 0) -> OverlapPartials:
    """OverlapPartials of rows X (N, m) on a CUDA device with the hand-written kernel.

    Args:
        X: (N, m) CUDA tensor; converted to the compute dtype of ``precision`` (fp32 for
            "fp32"/"tf32", bf16, fp16) if it is not already.
        scale: (N,) per-row factors (1 / norm; ones for pre-normalised fp16 rows).
        bins: histogram bins over [-1, 1] (0 = none).
        topk: number of largest-|c| pairs (<= N(N-1)/2).
        precision: "fp32" (exact fp32 FMA), "tf32", "bf16" or "fp16" (tensor cores, fp32
            accumulate).
        capacity: top-k candidate slots to start with (default max(2^20, 8 topk)); an
            overflow grows the buffer up to ``GROW_MAX`` slots (48 MiB). Small values
            exercise the overflow paths (with ``GROW_MAX = 0``, the threshold-raising one).
        split: 0 for all pairs i < j; S (a multiple of the 128-row tile) for the cross pairs
            i < S <= j only (block-pair streaming).

    Returns:
        OverlapPartials on the CPU, with the reference's tie rules and top-k order.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    if X.dim() != 2:
        raise ValueError(f"X must be 2-D, got shape {tuple(X.shape)}")
    N, m = X.shape
    # Shape and argument checks first, so that they are the same (and testable) anywhere.
    check_split(split, N)
    if split % TILE:
        raise ValueError(f"split={split} must be a multiple of the kernel's tile edge {TILE}")
    P = num_pairs(N, split)
    if bins < 0 or topk < 0 or topk > P:
        raise ValueError(f"need bins >= 0 and 0 <= topk <= P={P}; got bins={bins}, topk={topk}")
    if scale.shape != (N,):
        raise ValueError(f"scale must have shape ({N},), got {tuple(scale.shape)}")
    if not X.is_cuda:
        raise ValueError(f"X must be a CUDA tensor, got one on {X.device}")
    if N < 2:
        return overlap_partials_torch(X, scale, bins=bins, topk=topk, precision=precision)
    dev = X.device
    with torch.cuda.device(dev):
        run = _Run(_ext(), X, scale, bins=bins, topk=topk, precision=precision,
                   capacity=capacity, split=split,
                   stream=torch.cuda.current_stream(dev).cuda_stream,
                   max_blocks=4 * torch.cuda.get_device_properties(dev).multi_processor_count)
        return _drive(run)


def _drive(run: "_Run") -> OverlapPartials:
    """Threshold search, the full stats run, top-k settling, final reductions."""
    key = run.initial_threshold() if run.topk else _ALL_PAIRS
    blocks = run.launch(run.N, stats=True, key=key)
    sums = run.block_sums[:blocks].cpu()
    top = run.topk_full(key) if run.topk else None
    return run.finish(sums, top)


class _Run:
    """Buffers and launches of one overlap_partials_cuda call (all on the current stream)."""

    def __init__(self, ext, X, scale, *, bins, topk, precision, capacity, stream, max_blocks,
                 split=0):
        self.ext, self.bins, self.topk, self.precision = ext, bins, topk, precision
        self.split = split
        self.X, self.ld = cuda_operand(X, precision)
        self.N, self.m = X.shape
        dev = X.device
        self.scale = scale.to(device=dev, dtype=torch.float32).contiguous()
        self.stream, self.max_blocks = stream, max_blocks
        i64 = dict(dtype=torch.int64, device=dev)
        self.row_key = torch.zeros(self.N, **i64)
        self.row_sq = torch.zeros(self.N, **i64)
        self.block_sums = torch.zeros((self.max_blocks, 3), dtype=torch.float64, device=dev)
        self.hist = torch.zeros(bins, **i64) if bins else None
        self.cap = 0
        if topk:
            self.cap = int(capacity) if capacity else max(DEFAULT_CAPACITY, 8 * topk)
            if self.cap <= topk:
                raise ValueError(f"capacity={self.cap} must exceed topk={topk}")
            self.cand_count = torch.zeros(1, **i64)
            self.cand_val = torch.empty(self.cap, dtype=torch.float32, device=dev)
            self.cand_ij = torch.empty(self.cap, **i64)

    def pairs(self, n: int) -> int:
        """Pairs of a launch over the first n rows (cross pairs only in split mode)."""
        return num_pairs(n, self.split)

    def launch(self, n: int, *, stats: bool, key=_ALL_PAIRS) -> int:
        """Enqueue one kernel over the first n rows; returns the blocks launched."""
        k = min(self.topk, self.pairs(n))
        if k:
            self.cand_count.zero_()
        hist_on = bool(self.bins) and stats
        return self._kernel(n=n, stats=stats, bins=self.bins if hist_on else 0, k=k, key=key)

    def _kernel(self, *, n: int, stats: bool, bins: int, k: int, key) -> int:
        """The one call into the extension (tests substitute an emulation here)."""
        blocks = self.ext.overlap_partials_cuda(
            x_ptr=self.X.data_ptr(), scale_ptr=self.scale.data_ptr(), n=n, m=self.m, ld=self.ld,
            precision=self.precision, stats=stats,
            row_key_ptr=self.row_key.data_ptr(), row_sq_ptr=self.row_sq.data_ptr(),
            block_sums_ptr=self.block_sums.data_ptr(), max_blocks=self.max_blocks,
            bins=bins, hist_ptr=self.hist.data_ptr() if bins else 0,
            topk=k, cand_cap=self.cap if k else 0,
            cand_count_ptr=self.cand_count.data_ptr() if k else 0,
            cand_val_ptr=self.cand_val.data_ptr() if k else 0,
            cand_ij_ptr=self.cand_ij.data_ptr() if k else 0,
            thr_value=float(key[0]), thr_i=int(key[1]), thr_j=int(key[2]), stream=self.stream,
            split=self.split)
        if os.environ.get("SUPERKERN_CUDA_SYNC", "0") not in ("", "0"):
            torch.cuda.synchronize()
        return blocks

    def _candidates(self, k: int):
        """Canonically ordered best k of the stored candidates: (|c|, c, i, j)."""
        count = min(int(self.cand_count.item()), self.cap)
        # A valid threshold admits at least k pairs; fewer means the kernel lost candidates.
        assert count >= k, f"top-k threshold admitted {count} < k={k} pairs"
        ij = self.cand_ij[:count]
        val = self.cand_val[:count]
        return _topk_canonical(val.abs(), val, ij >> 32, ij & 0xFFFFFFFF, k)

    def _kth_key(self, k: int):
        a, _, i, j = self._candidates(k)
        return (float(a[k - 1]), int(i[k - 1]), int(j[k - 1]))

    def _settle(self, n: int, key):
        """After a launch over n rows, while the buffer overflowed: when the exact count is at
        most GROW_MAX, grow the buffer to it and rerun top-k only at the same key (every pair
        computes bit-identically, so this stores them all: one pass, whatever order the
        atomics handed out the slots in); else raise the threshold to the k-th key among the
        stored candidates (a subset of the true ones, so still a lower bound, and strictly
        higher since cap > k distinct keys) and rerun top-k only."""
        k = min(self.topk, self.pairs(n))
        while (count := int(self.cand_count.item())) > self.cap:
            if count <= GROW_MAX:
                self._grow(count)
            else:
                key = self._kth_key(k)
            self.launch(n, stats=False, key=key)
        return key

    def _grow(self, cap: int) -> None:
        self.cap = int(cap)
        self.cand_val = torch.empty(self.cap, dtype=torch.float32, device=self.X.device)
        self.cand_ij = torch.empty(self.cap, dtype=torch.int64, device=self.X.device)

    def initial_threshold(self):
        """Threshold key for the full run: the k-th key over the pairs of a leading block of
        rows (a subset of all pairs, computed bit-identically by the same kernel, hence a
        valid lower bound), grown geometrically so each run expects about cap/4 candidates."""
        N, k, cap, split = self.N, self.topk, self.cap, self.split
        if self.pairs(N) <= cap:
            return _ALL_PAIRS
        # At least doubling: with a small capacity the next level overflows and _settle
        # settles it (a grown buffer or a raised threshold) instead of crawling up one row at
        # a time.
        grow = max(2.0, math.sqrt(cap / (4.0 * k)))
        if split:
            # Split mode: the first part against a leading block of the second part's rows
            # (a subset of the cross pairs, so again a valid lower bound).
            S = split + max(1, cap // split)

            def nxt(S):
                return min(N, split + max(S - split + 1, int((S - split) * grow)))
        else:
            S = (1 + math.isqrt(1 + 8 * cap)) // 2  # largest S with S(S-1)/2 <= cap
            while S * (S - 1) // 2 > cap:
                S -= 1

            def nxt(S):
                return min(N, int(S * grow))
        key = _ALL_PAIRS
        while S < N:
            if self.pairs(S) >= k:  # fewer than k pairs bound nothing
                self.launch(S, stats=False, key=key)
                key = self._settle(S, key)
                key = self._kth_key(k)
            S = nxt(S)
        return key

    def topk_full(self, key):
        """Top-k of the full run (already launched with ``key``)."""
        self._settle(self.N, key)
        return self._candidates(self.topk)

    def finish(self, sums: torch.Tensor, top) -> OverlapPartials:
        cpu = torch.device("cpu")
        cols = sums.tolist()
        s = [math.fsum(row[q] for row in cols) for q in range(3)]  # fixed order: deterministic
        key = self.row_key
        row_max = (key >> 32).to(torch.int32).view(torch.float32)
        row_arg = 0xFFFFFFFF - (key & 0xFFFFFFFF)
        bits = self.ext.overlap_cuda_config["row_sq_fixed_bits"]  # fixed-point scale 2^-bits
        row_sq = self.row_sq.double() * 2.0**-bits
        if top is not None:
            _, val, i, j = top
            topk_values = val.to(cpu)
            topk_pairs = torch.stack([i, j], 1).to(cpu)
        else:
            topk_values = torch.zeros(0, dtype=torch.float32)
            topk_pairs = torch.zeros((0, 2), dtype=torch.int64)
        return OverlapPartials(
            sum_cos=s[0], sum_abs=s[1], sum_sq=s[2],
            hist=None if self.hist is None else self.hist.to(cpu),
            row_max_abs=row_max.to(cpu), row_argmax=row_arg.to(cpu), row_sum_sq=row_sq.to(cpu),
            topk_values=topk_values, topk_pairs=topk_pairs)
