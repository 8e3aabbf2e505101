"""Heads that do not sit on the compute device, or do not fit it: operands moved in row blocks.

Two levels, both exact:

1. **Blockwise upload.** A head on the CPU (or stored in a wider dtype than the kernel reads)
   whose compute copy fits the device is converted block by block straight into one device
   buffer in the compute dtype: the peak is that buffer plus one source block, never a full
   fp32 copy on the device. Then the ordinary single-launch kernel runs.
2. **Block-pair streaming.** When even the compute copy does not fit, rows are cut into K
   blocks of ``b`` rows (a multiple of the kernels' 128-row tile). Each diagonal block is one
   ordinary call; each pair I < J is one call over the concatenation [X_I; X_J] restricted to
   its cross pairs (``split=len(X_I)``), so every pair is computed exactly once. The device
   holds two blocks at a time.

Partials of the calls merge exactly: histogram counts add, the three sums are combined with
``math.fsum`` in a fixed order, per-row (max, argmax) merge with ties to the smallest global
index, per-row sums of c^2 add in a fixed order, and the top-k is the canonical top-k of the
union of each call's exact top-k (row maps are increasing, so local order is global order).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from superkern.ops.overlap_ref import _merge_row_max, _topk_canonical, num_pairs
from superkern.ops.overlap_types import OverlapPartials

ALIGN = 128                 # block rows: a multiple of every GPU kernel's tile edge
STREAM_BACKENDS = ("torch", "triton", "cuda")  # kernels with cross-pair (split) calls
RESERVE_BYTES = 512 << 20   # left free on the device: kernel workspace, top-k buffers, norms
# Elements per conversion chunk: 8 M. The fp16 path (fp64 rows / norms) peaks at ~20 bytes
# per element, 160 MiB, well inside the reserve.
CHUNK_ELEMS = 1 << 23

_ELEM = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2}

Operands = Callable[[torch.Tensor, torch.Tensor, str], tuple[torch.Tensor, torch.Tensor]]


# fp64 norms outside this range may have lost their squares to underflow (subnormal) or
# overflow: those rows are measured again, scaled by their largest |value|.
_SCALED_NORM = (2.0 ** -450, 2.0 ** 450)


def _block_norms(block: torch.Tensor) -> torch.Tensor:
    x = block.double()
    r = torch.linalg.vector_norm(x, dim=1)
    if block.dtype == torch.float64:  # squares of narrower types always fit fp64
        odd = (r < _SCALED_NORM[0]) | (r > _SCALED_NORM[1])
        if bool(odd.any()):
            idx = torch.nonzero(odd).flatten()
            xs = x[idx]
            amax = xs.abs().amax(dim=1, keepdim=True)
            scaled = amax.squeeze(1) * torch.linalg.vector_norm(
                xs / torch.where(amax > 0, amax, torch.ones_like(amax)), dim=1)
            r[idx] = torch.where(amax.squeeze(1) > 0, scaled, r[idx])
    return r


def row_norms(X: torch.Tensor) -> torch.Tensor:
    """fp64 row norms of X on X's device, chunked: O(chunk) temporary memory, not O(n m).
    fp64 rows whose squares leave fp64's range are measured scaled by their largest |value|,
    so every finite row gets its norm to fp64 accuracy (inf only if the norm itself is)."""
    N, m = X.shape
    out = torch.empty(N, dtype=torch.float64, device=X.device)
    step = _fp64_rows(m)
    for s in range(0, N, step):
        out[s:s + step] = _block_norms(X[s:s + step])
    return out


def check_norms_finite(norms: torch.Tensor, idx: torch.Tensor | None = None) -> None:
    """ValueError for a row of finite values whose fp64 norm is infinite (values near fp64's
    maximum): its cosines cannot be computed from that norm. ``idx`` maps to the rows'
    indices in the caller's matrix. (Tiny rows keep exact norms: see :func:`row_norms`.)"""
    bad = ~torch.isfinite(norms)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        row = i if idx is None else int(idx[i])
        raise ValueError(f"row {row} has a norm beyond fp64's range although its values are "
                         "finite; rescale the matrix (cosines do not change)")


def column_mean(X: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
    """fp64 column mean of X (of its rows ``idx`` when given), chunked: no fp64 copy of X."""
    total = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
    step = _fp64_rows(X.shape[1])
    if idx is None:
        for s in range(0, X.shape[0], step):
            total += X[s:s + step].double().sum(0)
        return total / X.shape[0]
    idx = idx.to(X.device)
    for s in range(0, idx.numel(), step):
        total += X[idx[s:s + step]].double().sum(0)
    return total / idx.numel()


# Centred fp32 rows whose largest |value| passes this are scaled down by a power of two
# (exact; cosines do not change): x - mean can leave fp32's range (3e38 - -3e38).
_FP32_ROW_MAX = 2.0 ** 120


def times_pow2(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """x 2^e, exact (no rounding unless the result itself leaves the format's range):
    ``ldexp`` forms 2^e first, which overflows for |e| > 1023, so this takes two halves."""
    half = torch.div(e, 2, rounding_mode="floor")
    return torch.ldexp(torch.ldexp(x, half.to(x.dtype)), (e - half).to(x.dtype))


def centred(X: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, shift)``: X minus the fp64 ``mean`` row, subtracted in fp64 and rounded once, to
    fp32 (fp64 for fp64 X), chunked. Keeping bf16 / fp16 there would round every centred row
    again, and rounding the mean first would shift every row by the same error. An fp32 row
    that the subtraction took past 2^120 is scaled by 2^-shift to fit (its cosines are the
    same; its norm is ``2^shift`` times C's), so no finite head turns into inf here; shift is
    0 for every other row."""
    out = torch.empty(X.shape, device=X.device,
                      dtype=torch.float64 if X.dtype == torch.float64 else torch.float32)
    shift = torch.zeros(X.shape[0], dtype=torch.int64, device=X.device)
    step = _fp64_rows(X.shape[1])
    for s in range(0, X.shape[0], step):
        d = X[s:s + step].double() - mean
        if out.dtype == torch.float32:
            amax = d.abs().amax(dim=1)
            big = torch.nonzero(amax > _FP32_ROW_MAX).flatten()
            if big.numel():
                e = torch.frexp(amax[big]).exponent.long() - 120
                d[big] = times_pow2(d[big], -e[:, None])
                shift[s + big] = e
        out[s:s + step] = d.to(out.dtype)
    return out, shift


def _chunk_rows(m: int) -> int:
    return max(1, CHUNK_ELEMS // max(m, 1))


def _fp64_rows(m: int) -> int:
    """Rows per chunk of the fp64 passes (norms, mean, centring): a quarter of
    :func:`_chunk_rows`, as fp64 elements take twice fp32's bytes and a temporary or two."""
    return max(1, _chunk_rows(m) // 4)


# Kernels read raw rows with a scale 1/norm, so a dot product of two rows spans
# norm_i * norm_j: rows with norms outside [2^-40, 2^40] would underflow (c -> 0) or overflow
# fp32 there. The operands normalise those rows up front (scale 1).
SAFE_NORM = (2.0 ** -40, 2.0 ** 40)


def odd_norms(norms: torch.Tensor) -> torch.Tensor:
    """Mask of the nonzero rows whose norms leave :data:`SAFE_NORM` (zero rows take no part
    in any pair)."""
    return ((norms > 0) & (norms < SAFE_NORM[0])) | (norms > SAFE_NORM[1])


def needs_copy(X: torch.Tensor, precision: str, device: torch.device, dtype: torch.dtype,
               norms: Optional[torch.Tensor] = None) -> bool:
    """Whether the kernel's operand differs from X itself (another device or dtype, a strided
    view, fp16's pre-normalised rows, or rows with norms outside :data:`SAFE_NORM`)."""
    return (X.device != device or X.dtype != dtype or not X.is_contiguous()
            or precision == "fp16" or (norms is not None and bool(odd_norms(norms).any())))


def device_operands(X: torch.Tensor, norms: torch.Tensor, precision: str,
                    device: torch.device, dtype: torch.dtype, operands: Operands
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(operand on ``device`` in ``dtype``, fp32 scale) built chunk by chunk (level 1)."""
    N, m = X.shape
    if not needs_copy(X, precision, device, dtype, norms):
        return operands(X, norms, precision)
    out = torch.empty((N, m), dtype=dtype, device=device)
    scale = torch.empty(N, dtype=torch.float32, device=device)
    step = _chunk_rows(m)
    for s in range(0, N, step):
        xc, sc = operands(X[s:s + step].to(device), norms[s:s + step].to(device), precision)
        out[s:s + step] = xc
        scale[s:s + step] = sc
    return out, scale


def free_device_bytes(device: torch.device) -> Optional[int]:
    """Bytes a new allocation can use on a CUDA device: the driver's free memory plus what
    PyTorch's caching allocator holds but does not use (None off CUDA: host memory is not
    budgeted)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + max(cached, 0))


def check_options(block_rows: Any, max_device_bytes: Any) -> None:
    """ValueError unless block_rows is None or a positive multiple of ALIGN and
    max_device_bytes is None or a positive int."""
    if max_device_bytes is not None and (isinstance(max_device_bytes, bool)
                                         or not isinstance(max_device_bytes, int)
                                         or max_device_bytes <= 0):
        raise ValueError(f"max_device_bytes={max_device_bytes!r} must be a positive integer")
    if block_rows is not None and (isinstance(block_rows, bool) or not isinstance(block_rows, int)
                                   or block_rows <= 0 or block_rows % ALIGN):
        raise ValueError(f"block_rows={block_rows!r} must be a positive multiple of {ALIGN}")


def plan_block_rows(X: torch.Tensor, precision: str, device: torch.device,
                    dtype: torch.dtype, *, block_rows: Optional[int],
                    max_device_bytes: Optional[int], extra_elem_bytes: int = 0,
                    norms: Optional[torch.Tensor] = None) -> int:
    """Rows per streamed block, or 0 for a single call on the whole operand.

    ``block_rows`` forces streaming with that block size (validated). Otherwise stream only
    when the operand copy the kernel needs exceeds the budget: ``max_device_bytes`` if given,
    else the device's free memory less a reserve; then the largest aligned block such that two
    blocks fit. ``extra_elem_bytes`` counts per-element copies the backend makes of its operand
    on top (the torch reference's fp32 rounding copy, the cuda kernel's padded copy).
    ``norms`` (optional) lets rows outside :data:`SAFE_NORM` count as a needed copy.

    Raises:
        ValueError: a bad ``block_rows`` / ``max_device_bytes``, or a budget too small for two
            aligned blocks.
    """
    N, m = X.shape
    elem = _ELEM[precision] + extra_elem_bytes
    check_options(block_rows, max_device_bytes)
    if block_rows is not None:
        return block_rows if block_rows < N else 0
    copies = needs_copy(X, precision, device, dtype, norms)
    if not copies and not extra_elem_bytes:
        return 0
    budget = max_device_bytes
    if budget is None:
        free = free_device_bytes(device)
        if free is None:
            return 0
        budget = free - RESERVE_BYTES
    copy = N * m * (elem if copies else extra_elem_bytes)
    if copy <= budget:
        return 0
    b = max(budget, 0) // (2 * m * elem) // ALIGN * ALIGN
    if b < ALIGN:
        raise ValueError(
            f"device memory budget of {budget} bytes cannot hold two {ALIGN}-row blocks of the "
            f"({N}, {m}) head in {precision} ({2 * ALIGN * m * elem} bytes with the backend's "
            f"copies); free device memory or pass a larger max_device_bytes")
    return int(b)


class _Merger:
    """Exact merge of the partials of diagonal-block and cross-block calls (module docstring)."""

    def __init__(self, N: int, bins: int, topk: int):
        self.topk = topk
        self.sums: list[tuple[float, float, float]] = []
        self.hist = torch.zeros(bins, dtype=torch.int64) if bins else None
        self.row_max = torch.full((N,), -1.0, dtype=torch.float32)
        self.row_arg = torch.full((N,), -1, dtype=torch.int64)
        self.row_sq = torch.zeros(N, dtype=torch.float64)
        self.cand: Optional[tuple[torch.Tensor, ...]] = None

    def add(self, part: OverlapPartials, rows: torch.Tensor) -> None:
        """Merge one call's partials; ``rows`` maps its local rows to global ones (increasing)."""
        self.sums.append((part.sum_cos, part.sum_abs, part.sum_sq))
        if self.hist is not None:
            self.hist += part.hist
        # Every row of a streamed call has a pair; the mask only guards the N < 2 marker.
        ok = (part.row_argmax >= 0) & (part.row_argmax < rows.numel())
        g = rows[ok]
        v, j = part.row_max_abs[ok], rows[part.row_argmax[ok]]
        self.row_max[g], self.row_arg[g] = _merge_row_max(self.row_max[g], self.row_arg[g], v, j)
        self.row_sq.index_add_(0, rows, part.row_sum_sq)
        if self.topk and part.topk_values.numel():
            pairs = rows[part.topk_pairs]
            new = (part.topk_values.abs(), part.topk_values, pairs[:, 0], pairs[:, 1])
            if self.cand is not None:
                new = tuple(torch.cat([x, y]) for x, y in zip(self.cand, new))
            self.cand = _topk_canonical(*new, self.topk)

    def result(self) -> OverlapPartials:
        if self.cand is not None:
            topk_values = self.cand[1].float()
            topk_pairs = torch.stack([self.cand[2], self.cand[3]], 1)
        else:
            topk_values = torch.zeros(0, dtype=torch.float32)
            topk_pairs = torch.zeros((0, 2), dtype=torch.int64)
        return OverlapPartials(
            sum_cos=math.fsum(s[0] for s in self.sums), sum_abs=math.fsum(s[1] for s in self.sums),
            sum_sq=math.fsum(s[2] for s in self.sums), hist=self.hist, row_max_abs=self.row_max,
            row_argmax=self.row_arg, row_sum_sq=self.row_sq, topk_values=topk_values,
            topk_pairs=topk_pairs)


def stream_partials(kernel: Callable[..., OverlapPartials], X: torch.Tensor, norms: torch.Tensor,
                    *, precision: str, bins: int, topk: int, block_rows: int,
                    device: torch.device, dtype: torch.dtype, operands: Operands
                    ) -> OverlapPartials:
    """OverlapPartials of all pairs of X's N >= 2 rows from block calls (level 2).

    Args:
        kernel: a backend's partials function accepting ``split`` (see STREAM_BACKENDS).
        X, norms: the rows (any device) and their fp64 norms.
        block_rows: rows per block (a multiple of ALIGN, < N).
        device, dtype: where the kernel runs and the dtype it reads.
        operands: (rows, norms, precision) -> (operand, scale), applied per block.
    """
    N, m = X.shape
    b = block_rows
    starts = list(range(0, N, b))
    merge = _Merger(N, bins, topk)
    Z = torch.empty((2 * b, m), dtype=dtype, device=device)
    sZ = torch.empty(2 * b, dtype=torch.float32, device=device)

    def load(s: int, at: int) -> int:
        """Block starting at row s into Z[at:]; returns its row count."""
        e = min(s + b, N)
        step = _chunk_rows(m)
        for c in range(s, e, step):
            ce = min(c + step, e)
            xc, sc = operands(X[c:ce].to(device), norms[c:ce].to(device), precision)
            Z[at + c - s:at + ce - s] = xc
            sZ[at + c - s:at + ce - s] = sc
        return e - s

    for bi, si in enumerate(starts):
        na = load(si, 0)
        rows_a = torch.arange(si, si + na, dtype=torch.int64)
        if na >= 2:
            k = min(topk, num_pairs(na))
            merge.add(kernel(Z[:na], sZ[:na], bins=bins, topk=k, precision=precision), rows_a)
        for sj in starts[bi + 1:]:
            nb = load(sj, na)
            rows = torch.cat([rows_a, torch.arange(sj, sj + nb, dtype=torch.int64)])
            k = min(topk, num_pairs(na + nb, na))
            merge.add(kernel(Z[:na + nb], sZ[:na + nb], bins=bins, topk=k,
                             precision=precision, split=na), rows)
    return merge.result()
