"""Input validation shared by every public op: ValueError with the numbers, never a crash."""
from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_WARNINGS_LOCK = threading.Lock()


def native_tensor(arr: np.ndarray, copy: bool = False) -> torch.Tensor:
    """A torch tensor of a float array: C order, native byte order, extended precision
    (longdouble) as float64, torch's widest. ``copy``: always a fresh array (e.g. to leave a
    read-only memory map behind)."""
    target = np.float64 if arr.dtype.itemsize > 8 else arr.dtype.newbyteorder("=")
    # numpy calls a flipped array with a length-1 axis contiguous and keeps its negative
    # stride, which torch refuses: copy those too
    copy = copy or any(s < 0 for s in arr.strides)
    out = (np.array(arr, dtype=target, order="C", copy=True) if copy
           else np.ascontiguousarray(arr, dtype=target))
    if out.flags.writeable:
        return torch.from_numpy(out)
    # A read-only array (np.load(mmap_mode="r")) is only read: silence torch's warning about
    # it. catch_warnings swaps the process-wide filter list, so superkern's own threads take
    # turns (two interleaved blocks could leave the filters changed for good).
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(out)


def check_not_meta(W: torch.Tensor, name: str) -> None:
    """ValueError for a tensor with a shape but no values (e.g. a model built under
    ``init_empty_weights()``), naming it and its shape."""
    if W.device.type == "meta":
        raise ValueError(f"{name} is on the meta device: shape {tuple(W.shape)} with no values; "
                         "load or materialise the weights first")


def as_matrix(W: Any, name: str = "W", finite: bool = True) -> torch.Tensor:
    """Validate a 2-D floating matrix and return it as a torch tensor (no copy if possible).

    Args:
        finite: also check for NaN/Inf (callers that use only some rows check those instead).

    Raises:
        ValueError: not 2-D, empty, non-floating dtype, or containing NaN/Inf (the message gives
            the count and the first offending row).
    """
    if isinstance(W, np.ma.MaskedArray):  # its mask would be dropped without a word
        mask = np.ma.getmask(W)  # nomask (no n x m array) when nothing is masked
        if mask is not np.ma.nomask and mask.any():
            raise ValueError(f"{name} is a masked array with {int(mask.sum())} masked entries; "
                             "fill them or select rows (rows=) first")
        W = W.data
    if isinstance(W, np.ndarray):
        if W.dtype.kind not in "f":
            raise ValueError(f"{name} must be a floating-point matrix, got numpy dtype {W.dtype}")
        W = native_tensor(W)
    if not isinstance(W, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(W).__name__}")
    check_not_meta(W, name)
    if W.is_nested:
        raise ValueError(f"{name} is a nested tensor (rows of different lengths); it must be "
                         "one 2-D (n, m) matrix")
    if W.layout != torch.strided and W.dim() == 2:  # sparse: the kernels read dense rows
        W = W.to_dense()
    if W.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n, m), got {W.dim()}-D with shape {tuple(W.shape)}")
    if W.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must have a floating dtype in "
                         f"{[str(d) for d in FLOAT_DTYPES]}, got {W.dtype}")
    n, m = W.shape
    if n == 0 or m == 0:
        raise ValueError(f"{name} is empty: shape ({n}, {m})")
    if finite:
        check_finite(W, name)
    return W


def check_finite(W: torch.Tensor, name: str = "W", chunk_rows: int = 1 << 14,
                 index: torch.Tensor | None = None, n_total: int | None = None) -> None:
    """Raise ValueError if W has NaN/Inf, naming the count and first row. Chunked: O(chunk) memory.

    Args:
        index, n_total: W holds rows ``index`` of a matrix with ``n_total`` rows; the message
            names the row in that matrix.
    """
    bad_total, first_row = 0, -1
    for start in range(0, W.shape[0], chunk_rows):
        block = W[start:start + chunk_rows]
        bad = ~torch.isfinite(block)
        if bool(bad.any()):
            rows_bad = bad.any(dim=1)
            bad_total += int(bad.sum())
            if first_row < 0:
                first_row = start + int(torch.nonzero(rows_bad)[0, 0])
    if bad_total:
        row = first_row if index is None else int(index[first_row])
        raise ValueError(f"{name} contains {bad_total} non-finite value(s) (NaN or Inf); "
                         f"first in row {row} of {W.shape[0] if n_total is None else n_total}")


def as_flag(value: Any, name: str) -> bool:
    """A yes/no option: True/False (numpy bools too); "no" or 1 are refused, not read as truthy."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def as_nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def row_selection(rows: Any, n: int) -> torch.Tensor | None:
    """A boolean mask or an index list as sorted unique int64 indices (None: all rows)."""
    if rows is None:
        return None
    if isinstance(rows, (set, frozenset, dict, str, bytes, slice)):
        raise ValueError(f"rows must be a boolean mask or a sequence of integer indices, got "
                         f"a {type(rows).__name__}")
    try:
        r = torch.as_tensor(np.asarray(rows) if not isinstance(rows, torch.Tensor) else rows)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise ValueError("rows must be a boolean mask or integer indices (each within int64); "
                         f"got {str(rows)[:80]}") from None
    r = r.detach().to("cpu")
    if r.dtype == torch.bool:
        if r.dim() != 1 or r.numel() != n:
            raise ValueError(f"rows mask must be 1-D of length n={n}, got shape {tuple(r.shape)}")
        return torch.nonzero(r).flatten()
    if r.numel() == 0:  # [] parses as float: an empty selection, not a bad dtype
        return torch.zeros(0, dtype=torch.int64)
    if r.dtype.is_floating_point or r.dtype.is_complex:
        raise ValueError(f"rows must be a boolean mask or integer indices, got dtype {r.dtype}")
    flat = r.flatten().numpy()  # range checked before int64 would wrap 2^64 - 1 to -1
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"rows indices must lie in [0, {n}), got range [{lo}, {hi}]")
    r = torch.from_numpy(flat.astype(np.int64))
    uniq = torch.unique(r)
    if uniq.numel() != r.numel():
        hint = ("; a 0/1 integer array is read as indices: pass a boolean mask (dtype bool) "
                "to select rows by flag") if r.numel() == n and hi <= 1 else ""
        raise ValueError(f"rows indices contain {r.numel() - uniq.numel()} duplicate(s){hint}")
    return uniq
