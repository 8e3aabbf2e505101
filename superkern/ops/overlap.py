"""Public overlap engine: statistics of all pairwise cosine overlaps without an n x n matrix.

Data flow: validate -> select rows / centre -> norms, drop zero rows -> (X, scale) in the
compute dtype -> backend kernel (``OverlapPartials``) -> means, mapping back to original rows.
"""
from __future__ import annotations

import math
import numbers
import os
import time
from typing import Any, Callable

import torch

from superkern import backend as _backend
from superkern.ops._checks import (as_flag, as_matrix, as_nonneg_int, check_finite,
                                   row_selection)
from superkern.ops.overlap_ref import PRECISIONS, overlap_partials_torch
from superkern.ops.overlap_types import TRITON_MAX_BINS, OverlapPartials, OverlapStats
from superkern.ops import overlap_stream as _stream

_COMPUTE_DTYPE = {"fp32": torch.float32, "tf32": torch.float32,
                  "bf16": torch.bfloat16, "fp16": torch.float16}


def _kernel(name: str) -> Callable[..., OverlapPartials]:
    """The partials function of a backend; compiled backends are imported lazily."""
    if name == "torch":
        return overlap_partials_torch
    if name == "cpu":
        from superkern.ops.overlap_cpu import overlap_partials_cpu
        return overlap_partials_cpu
    if name == "triton":
        from superkern.triton.overlap import overlap_partials_triton
        return overlap_partials_triton
    if name == "cuda":
        from superkern.ops.overlap_cuda import overlap_partials_cuda
        return overlap_partials_cuda
    raise ValueError(f"unknown backend {name!r}")


def prepare_rows(W: Any, *, rows: Any = None, center: bool = False):
    """Shared preprocessing of every pairwise op.

    Returns ``(W, used, X, norms)``: the validated matrix, the int64 original indices of the
    rows that take part (selected and nonzero), those rows (centred if asked; a view of W when
    nothing had to change) and their fp64 norms. Also returns the number of zero rows.
    """
    W = as_matrix(W, finite=False)
    n = W.shape[0]
    sel = row_selection(rows, n)
    X = W if sel is None else W[sel.to(W.device)]
    idx = torch.arange(n, dtype=torch.int64) if sel is None else sel
    check_finite(X, index=idx, n_total=n)  # only the rows that take part must be finite
    if center and X.shape[0]:
        # Zero rows (padding, unused tokens) are left out of the mean, as everywhere, and
        # stay zero: centred, they would be copies of -mean, pairs with c = 1. Chunked, and
        # no copy beyond the centred one the memory plan counts.
        step = max(1, (1 << 26) // X.shape[1])
        zero = torch.cat([~X[s:s + step].ne(0).any(dim=1) for s in range(0, X.shape[0], step)])
        if bool(zero.all()):
            X = X.float() if X.dtype != torch.float64 else X
        else:
            mean = _stream.column_mean(X, torch.nonzero(~zero).flatten()
                                       if bool(zero.any()) else None)
            X = _stream.centred(X, mean)[0]  # one fp32 (fp64) copy
            X[zero] = 0
    norms = _stream.row_norms(X)
    if X.dtype == torch.float64:  # only fp64 rows can have norms beyond fp64
        _stream.check_norms_finite(norms, idx)
    nonzero = norms > 0
    n_zero = int((~nonzero).sum())
    if n_zero:
        keep = torch.nonzero(nonzero).flatten()
        X, norms, idx = X[keep], norms[keep], idx[keep.cpu()]
    return W, idx, X, norms, n_zero


def _compute_operands(X: torch.Tensor, norms: torch.Tensor, precision: str):
    """(X in the compute dtype, fp32 scale). fp16 rows are normalised first: raw rows can
    overflow fp16's range, unit rows cannot. Rows whose norm leaves
    ``overlap_stream.SAFE_NORM`` (those the caller counted as a copy, ``needs_copy``) are
    scaled by 2^-e to a norm in [1/2, 1), with 1 / (the scaled row's norm) as their scale:
    a power of two changes no mantissa, so they are rounded to the compute dtype exactly as
    unscaled rows are (a bf16 head read at bf16 stays exact). The scale comes from the
    scaled row because a subnormal norm has too few bits (one near 2^-1068 carries 7)."""
    dtype = _COMPUTE_DTYPE[precision]
    odd = torch.nonzero(_stream.odd_norms(norms)).flatten()
    if odd.numel():
        e = torch.frexp(norms[odd]).exponent  # norm = mant 2^e, mant in [1/2, 1)
        scaled = _stream.times_pow2(X[odd].double(), -e[:, None])
        scaled_norms = scaled.norm(dim=1)
    if precision == "fp16":
        U = X.double() / norms[:, None]
        if odd.numel():
            U.index_copy_(0, odd, scaled / scaled_norms[:, None])
        return U.to(dtype).contiguous(), torch.ones_like(norms, dtype=torch.float32)
    Xc, scale = X.to(dtype).contiguous(), (1.0 / norms).float()
    if odd.numel():
        if Xc.data_ptr() == X.data_ptr():  # never write into the caller's tensor
            Xc = Xc.clone()
        Xc.index_copy_(0, odd, scaled.to(dtype))
        scale.index_copy_(0, odd, (1.0 / scaled_norms).float())
    return Xc, scale


def _widened_by_kernel(X: torch.Tensor, precision: str, norms: torch.Tensor) -> bool:
    """Whether the cpu kernel can take X's 16-bit rows as they are at an fp32 or tf32
    precision (their values are exact there, so the operand :func:`_compute_operands` would
    build is X widened): not where rows need the power-of-two scaling of odd norms."""
    return (X.dtype in (torch.bfloat16, torch.float16) and precision in ("fp32", "tf32")
            and not bool(_stream.odd_norms(norms).any()))


def _backend_copy_bytes(name: str, precision: str, m: int) -> int:
    """Bytes per operand element (rounded up) a backend copies on top of its input: the torch
    reference rounds a low-precision operand into fp32, as the triton kernel rounds a tf32
    one; the triton kernel pads rows to a multiple of 16 elements, the cuda kernel to a
    multiple of 16 bytes (a copy of m_pad elements per row of m)."""
    elem = 4 if precision in ("fp32", "tf32") else 2
    extra = 4 if ((name == "torch" and precision != "fp32")
                  or (name == "triton" and precision == "tf32")) else 0
    pad = {"triton": 16, "cuda": 16 // elem}.get(name)
    if pad and m % pad:
        extra += -(-elem * (-(-m // pad) * pad) // m)
    return extra


def _target_device(device: Any, X: torch.Tensor) -> torch.device:
    """Where the kernel runs: ``device`` if given (validated), else where the rows are."""
    return X.device if device is None else _backend.resolve_device(device)


MAX_BINS = 1 << 24  # bin = floor((c + 1) bins / 2) in fp32: exact up to 2^24 bins


@torch.no_grad()  # statistics of a tensor, never a graph (a Parameter would keep one)
def overlap_stats(W: Any, *, bins: int = 0, topk: int = 0, per_row: bool = False,
                  center: bool = False, rows: Any = None, precision: str = "fp32",
                  backend: str = "auto", device: Any = None, block_rows: Any = None,
                  max_device_bytes: Any = None) -> OverlapStats:
    """Statistics of all pairwise cosine overlaps between the rows of W.

    c_ij = u_i . u_j with u_i = W_i / ||W_i|| over the P = N(N-1)/2 unordered pairs of the N
    nonzero selected rows. Never materialises the N x N matrix.

    Args:
        W: (n, m) float matrix (torch or numpy); rows are vectors. Must be finite.
        bins: histogram bins over [-1, 1] (0 = no histogram). Counts are int64.
        topk: number of largest-|c| pairs to return (<= P).
        per_row: also return ``row_max_abs``, ``row_argmax``, ``row_sum_sq`` (length n).
        center: subtract the column mean of the selected nonzero rows first (zero rows are
            left out before the mean; a row equal to the mean is then a zero row too).
        rows: boolean mask (length n) or index list restricting the rows used.
        precision: dot-product precision: "fp32", "tf32", "bf16" or "fp16"; accumulation is
            always fp32 within a tile and fp64 across tiles.
        backend: "auto", "torch", "cpu", "triton" or "cuda" (env SUPERKERN_BACKEND overrides
            auto). "triton" counts at most 4096 bins; a plain "auto" passes more to the next
            backend.
        device: where to compute (default: W's device). A head on the CPU with
            ``device="cuda"`` is converted to the compute dtype and uploaded in row blocks.
        block_rows: force block-pair streaming with blocks of this many rows (a multiple of
            128): the device then holds two blocks, not the whole head. Default: stream only
            when the compute copy does not fit ``max_device_bytes``.
        max_device_bytes: device memory the operand copy may take (default: the free memory
            less a 512 MiB reserve). Streaming runs on the torch, triton and cuda backends.

    Returns:
        OverlapStats with original row indices.

    Raises:
        ValueError: bad shape, dtype, non-finite values, bins < 0, topk > P, bad rows mask,
            unknown precision, an unavailable backend, a bad ``device`` (unknown, or CUDA
            absent), ``block_rows`` not a positive multiple of 128, a non-positive
            ``max_device_bytes`` or one too small for two blocks, or a head that needs
            streaming on the cpu backend.
    """
    t0 = time.perf_counter()
    per_row, center = as_flag(per_row, "per_row"), as_flag(center, "center")
    bins = as_nonneg_int(bins, "bins")
    if bins > MAX_BINS:
        raise ValueError(f"bins={bins} exceeds 2^24={MAX_BINS}: the fp32 bin rule cannot tell "
                         "more bins apart")
    topk = as_nonneg_int(topk, "topk")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    _stream.check_options(block_rows, max_device_bytes)
    W, idx, X, norms, n_zero = prepare_rows(W, rows=rows, center=center)
    n, m = W.shape
    N = X.shape[0]
    P = N * (N - 1) // 2
    if topk > P:
        raise ValueError(f"topk={topk} exceeds the number of pairs P={P} "
                         f"(N={N} nonzero selected rows of n={n})")
    target = _target_device(device, X)
    where = X if X.device == target else torch.empty(0, device=target)
    name = _backend.resolve(backend, where)
    # A plain "auto" (no SUPERKERN_BACKEND) moves on to a backend that can take the call:
    # one that streams when streaming is asked for (block_rows; max_device_bytes on a GPU),
    # not triton for more bins than its shared-memory histogram holds.
    streams = block_rows is not None or (max_device_bytes is not None and target.type == "cuda")
    free_auto = backend == "auto" and os.environ.get(_backend.ENV_BACKEND, "") in ("", "auto")

    def usable(streaming: bool) -> tuple[str, ...]:
        return tuple(b for b in (_stream.STREAM_BACKENDS if streaming else _backend.BACKENDS)
                     if b != "triton" or bins <= TRITON_MAX_BINS)

    if free_auto and name not in usable(streams):
        name = _backend.resolve("auto", where, supported=usable(streams))
    dtype = _COMPUTE_DTYPE[precision]
    stream_rows = 0

    def plan(backend_name: str) -> int:
        return _stream.plan_block_rows(
            X, precision, target, dtype, block_rows=block_rows,
            max_device_bytes=max_device_bytes,
            extra_elem_bytes=_backend_copy_bytes(backend_name, precision, m), norms=norms)

    if N >= 2:
        with _backend.env_named(backend, name):  # an error names SUPERKERN_BACKEND if it chose
            stream_rows = plan(name)
            if stream_rows and name not in _stream.STREAM_BACKENDS and free_auto:
                # a budget on a CPU target that the compute copy exceeds: stream on another one
                name = _backend.resolve("auto", where, supported=usable(True))
                stream_rows = plan(name)
            if stream_rows and name not in _stream.STREAM_BACKENDS:
                raise ValueError(
                    f"the ({N}, {m}) head needs block streaming (blocks of {stream_rows} rows), "
                    f"which the {name!r} backend does not implement; use one of "
                    f"{_stream.STREAM_BACKENDS}")
            if stream_rows:
                part = _stream.stream_partials(
                    _kernel(name), X, norms, precision=precision, bins=bins, topk=topk,
                    block_rows=stream_rows, device=target, dtype=dtype,
                    operands=_compute_operands)
            else:
                if name == "cpu" and _widened_by_kernel(X, precision, norms):
                    # the C++ kernel widens 16-bit rows itself as it packs them: no fp32 copy
                    Xc, scale = X.contiguous(), (1.0 / norms).float()
                else:
                    Xc, scale = _stream.device_operands(X, norms, precision, target, dtype,
                                                        _compute_operands)
                part = _kernel(name)(Xc, scale, bins=bins, topk=topk, precision=precision)
    else:
        part = overlap_partials_torch(X.float(), torch.ones(N), bins=bins, topk=topk)
    if target.type == "cuda":
        torch.cuda.synchronize(target)
    stats = _finish(part, idx, n=n, m=m, N=N, P=P, n_zero=n_zero, bins=bins, topk=topk,
                    per_row=per_row, center=center, backend=name, precision=precision,
                    seconds=time.perf_counter() - t0)
    stats.block_rows = stream_rows
    return stats


def _finish(part: OverlapPartials, idx: torch.Tensor, *, n, m, N, P, n_zero, bins, topk,
            per_row, center, backend, precision, seconds) -> OverlapStats:
    nan = float("nan")
    mean_cos = part.sum_cos / P if P else nan
    mean_abs = part.sum_abs / P if P else nan
    mean_sq = part.sum_sq / P if P else nan
    var_abs = max(mean_sq - mean_abs * mean_abs, 0.0) if P else nan
    max_abs, max_pair = nan, None
    if P:
        r = int(torch.argmax(part.row_max_abs))  # first maximal row: the smallest i
        j = int(part.row_argmax[r])
        i, j = (r, j) if r < j else (j, r)
        max_abs, max_pair = float(part.row_max_abs[r]), (int(idx[i]), int(idx[j]))
    stats = OverlapStats(n_rows=n, n_used=N, n_zero=n_zero, m=m, n_pairs=P, mean_cos=mean_cos,
                         mean_abs=mean_abs, mean_sq=mean_sq, var_abs=var_abs, max_abs=max_abs,
                         max_pair=max_pair, centered=center, backend=backend,
                         precision=precision, seconds=seconds)
    if bins:
        stats.hist = part.hist if part.hist is not None else torch.zeros(bins, dtype=torch.int64)
        # (2k - bins) / bins, each edge correctly rounded: exactly -1, 0 (even bins) and 1
        # (linspace left -5.6e-17 where 0 belongs)
        stats.edges = (torch.arange(bins + 1, dtype=torch.float64) * 2 - bins) / bins
    if topk:
        stats.topk_values = part.topk_values
        stats.topk_pairs = idx[part.topk_pairs] if part.topk_pairs.numel() else part.topk_pairs
    if per_row:
        stats.row_max_abs = torch.full((n,), nan, dtype=torch.float32)
        stats.row_argmax = torch.full((n,), -1, dtype=torch.int64)
        stats.row_sum_sq = torch.full((n,), nan, dtype=torch.float64)
        if N:
            stats.row_max_abs[idx] = part.row_max_abs
            stats.row_argmax[idx] = idx[part.row_argmax] if N >= 2 else -1
            stats.row_sum_sq[idx] = part.row_sum_sq
    return stats


@torch.no_grad()  # statistics of a tensor, never a graph (a Parameter would keep one)
def overlap_moments_exact(W: Any, *, center: bool = False, rows: Any = None,
                          block: int = 1 << 15) -> dict[str, Any]:
    """``mean_cos``, ``mean_sq`` and ``row_sum_sq`` from the Gram identities, in O(N m^2) fp64.

    sum_{i != j} c_ij^2 = ||U^T U||_F^2 - N, sum_{i != j} c_ij = ||U^T 1||^2 - N,
    row_sum_sq[i] = u_i^T (U^T U) u_i - 1. Same row handling as :func:`overlap_stats`.

    Returns:
        dict with ``n_used``, ``n_pairs``, ``mean_cos``, ``mean_sq`` and ``row_sum_sq`` (fp64,
        length n, NaN for rows not used).
    """
    if isinstance(block, bool) or not isinstance(block, numbers.Integral) or block < 1:
        raise ValueError(f"block must be an integer >= 1 (rows per chunk), got {block!r}")
    W, idx, X, norms, n_zero = prepare_rows(W, rows=rows, center=center)
    n, m = W.shape
    N = X.shape[0]
    P = N * (N - 1) // 2
    G = torch.zeros((m, m), dtype=torch.float64, device=X.device)
    colsum = torch.zeros(m, dtype=torch.float64, device=X.device)
    for s in range(0, N, block):
        U = X[s:s + block].double() / norms[s:s + block, None]
        G += U.T @ U
        colsum += U.sum(0)
    row_sum_sq = torch.full((n,), float("nan"), dtype=torch.float64)
    vals = []
    for s in range(0, N, block):
        U = X[s:s + block].double() / norms[s:s + block, None]
        vals.append(((U @ G) * U).sum(1) - 1.0)
    if N:
        row_sum_sq[idx] = torch.cat(vals).cpu()
    sum_sq = (float((G * G).sum()) - N) / 2.0
    sum_cos = (float(colsum @ colsum) - N) / 2.0
    return {"n_used": N, "n_zero": n_zero, "n_pairs": P,
            "mean_cos": sum_cos / P if P else math.nan,
            "mean_sq": sum_sq / P if P else math.nan, "row_sum_sq": row_sum_sq}
