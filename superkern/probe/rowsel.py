"""Which rows the probe analyses: exclusions, exact duplicates (by hashing), samples."""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Optional

import numpy as np
import torch


def parse_rows(spec: Any, n: int, what: str = "exclude") -> torch.Tensor:
    """Row indices from ``"0,5,10-19,100:200"`` (``a-b`` inclusive, ``a:b`` half-open), an int,
    or an iterable of ints/such strings. Returns sorted unique int64 indices.

    Raises:
        ValueError: unparsable item or an index outside [0, n).
    """
    if spec is None:
        return torch.zeros(0, dtype=torch.int64)
    items: Iterable[Any] = [spec] if isinstance(spec, (str, int, np.integer)) else spec
    out: list[int] = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            out.append(int(item))
            continue
        for part in str(item).replace(" ", "").split(","):
            if not part:
                continue
            try:
                if ":" in part:
                    a, b = part.split(":")
                    out.extend(range(int(a), int(b)))
                elif "-" in part:
                    a, b = part.split("-", 1)
                    out.extend(range(int(a), int(b) + 1))
                else:
                    out.append(int(part))
            except ValueError:
                raise ValueError(f"{what}: cannot parse {part!r}; use indices and ranges like "
                                 "'0,5,10-19,100:200'") from None
    idx = torch.tensor(sorted(set(out)), dtype=torch.int64)
    if idx.numel() and (int(idx[0]) < 0 or int(idx[-1]) >= n):
        raise ValueError(f"{what}: row indices must lie in [0, {n}), got range "
                         f"[{int(idx[0])}, {int(idx[-1])}]")
    return idx


def _row_bytes(W: torch.Tensor) -> np.ndarray:
    A = W.detach().to("cpu").contiguous()
    A = A + 0  # -0.0 -> +0.0, so equal values hash equally
    if A.dtype == torch.bfloat16:
        A = A.view(torch.int16)
    return np.ascontiguousarray(A.numpy()).view(np.uint8).reshape(A.shape[0], -1)


def duplicate_groups(W: torch.Tensor) -> list[list[int]]:
    """Groups (each sorted, listed by first row) of rows with exactly equal values, found by
    hashing each row's bytes (blake2b-128) and confirmed by comparing the bytes."""
    B = _row_bytes(W)
    buckets: dict[bytes, list[int]] = {}
    for i in range(B.shape[0]):
        buckets.setdefault(hashlib.blake2b(B[i].tobytes(), digest_size=16).digest(), []).append(i)
    groups = []
    for rows in buckets.values():
        if len(rows) > 1:
            first = B[rows[0]]
            same = [r for r in rows if np.array_equal(B[r], first)]  # guard against collisions
            if len(same) > 1:
                groups.append(same)
    groups.sort(key=lambda g: g[0])
    return groups


def sample_rows(idx: torch.Tensor, cap: int, seed: int) -> tuple[torch.Tensor, bool]:
    """At most ``cap`` of ``idx`` chosen uniformly without replacement (sorted); cap 0 = all."""
    if cap <= 0 or idx.numel() <= cap:
        return idx, False
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(idx.numel(), generator=g)[:cap]
    return torch.sort(idx[pick]).values, True


def as_index(rows: Optional[Any], n: int) -> Optional[torch.Tensor]:
    """Sorted unique int64 indices from a boolean mask, index list or range spec (None = all)."""
    if rows is None:
        return None
    if isinstance(rows, (torch.Tensor, np.ndarray)) and rows.dtype in (torch.bool, np.bool_):
        mask = torch.as_tensor(rows).to("cpu")
        if mask.dim() != 1 or mask.numel() != n:
            raise ValueError(f"rows mask must be 1-D of length n={n}, got shape "
                             f"{tuple(mask.shape)}")
        return torch.nonzero(mask).flatten()
    if isinstance(rows, (torch.Tensor, np.ndarray)):
        rows = torch.as_tensor(rows).flatten().tolist()
    return parse_rows(rows, n, "rows")
