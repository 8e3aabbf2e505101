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
    if isinstance(spec, (bool, float)) or not (isinstance(spec, (str, int, np.integer))
                                               or hasattr(spec, "__iter__")):
        raise ValueError(f"{what} must be row indices or a range spec such as '0,5,10-19', "
                         f"got {spec!r}")
    if isinstance(spec, (torch.Tensor, np.ndarray)):  # a mask or an index array
        arr = spec.detach().cpu().numpy() if isinstance(spec, torch.Tensor) else spec
        if arr.dtype == np.bool_:
            if arr.ndim != 1 or arr.size != n:
                raise ValueError(f"{what}: a mask must be 1-D of length n={n}, got shape "
                                 f"{arr.shape}")
            arr = np.flatnonzero(arr)
        spec = arr.ravel().tolist()
    elif isinstance(spec, (list, tuple)) and spec and all(
            isinstance(v, (bool, np.bool_)) for v in spec):
        if len(spec) != n:
            raise ValueError(f"{what}: a mask must have n={n} entries, got {len(spec)}")
        spec = [i for i, v in enumerate(spec) if v]
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
                    a, b = (int(v) for v in part.split(":"))
                    lo, hi = a, b - 1
                elif "-" in part[1:]:
                    a, b = (int(v) for v in part.split("-", 1))
                    lo, hi = a, b
                else:
                    out.append(int(part))
                    continue
            except ValueError:
                raise ValueError(f"{what}: cannot parse {part!r}; use indices and ranges like "
                                 "'0,5,10-19,100:200'") from None
            if hi < lo:
                order = "; write the smaller index first" if b < a else ""
                raise ValueError(f"{what}: range {part!r} selects no rows (a-b includes b, "
                                 f"a:b excludes it){order}")
            if lo < 0 or hi >= n:  # before expanding: "0:10**12" must not build a list
                raise ValueError(f"{what}: range {part!r} leaves [0, {n}) (rows {lo}..{hi})")
            out.extend(range(lo, hi + 1))
    rows = sorted(set(out))  # range-checked as Python ints: 10**23 must not overflow int64
    if rows and (rows[0] < 0 or rows[-1] >= n):
        raise ValueError(f"{what}: row indices must lie in [0, {n}), got range "
                         f"[{rows[0]}, {rows[-1]}]")
    return torch.tensor(rows, dtype=torch.int64)


def _row_bytes(W: torch.Tensor) -> np.ndarray:
    """(rows, bytes) view of a block of rows, on the host, with -0.0 turned into +0.0 so that
    equal values hash equally."""
    A = W.detach().to("cpu").contiguous() + 0
    if A.dtype == torch.bfloat16:
        A = A.view(torch.int16)
    return np.ascontiguousarray(A.numpy()).view(np.uint8).reshape(A.shape[0], -1)


def duplicate_groups(W: torch.Tensor, chunk_rows: int = 1 << 13) -> list[list[int]]:
    """Groups (each sorted, listed by first row) of rows with exactly equal values, found by
    hashing each row's bytes (blake2b-128) and confirmed by comparing the bytes. Reads W in
    blocks of ``chunk_rows`` rows: the host memory it needs beyond W is O(n + chunk)."""
    buckets: dict[bytes, list[int]] = {}
    for start in range(0, W.shape[0], chunk_rows):
        B = _row_bytes(W[start:start + chunk_rows])
        for i in range(B.shape[0]):
            digest = hashlib.blake2b(B[i].tobytes(), digest_size=16).digest()
            buckets.setdefault(digest, []).append(start + i)
    groups = []
    for rows in buckets.values():
        if len(rows) > 1:
            B = _row_bytes(W[torch.tensor(rows, dtype=torch.int64, device=W.device)])
            same = [r for r, b in zip(rows, B) if np.array_equal(b, B[0])]  # hash collisions
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


def sampled_mean_abs_se(W: torch.Tensor, sample: torch.Tensor, population: int, seed: int,
                        probe_rows: int = 256, chunk: int = 2048) -> float:
    """Standard error of mean |c| over the pairs of a row sample of size S, drawn without
    replacement, as an estimate of the mean over all pairs of the ``population`` (N) rows.

    The sample mean is a U-statistic of degree 2. Drawn without replacement, its variance is
    ``4 (N-S) / (S (N-1)) s1 + 2 (N-S) (N-S-1) / (S (S-1) (N-2) (N-3)) t`` with s1 the
    variance over rows of a row's mean |c| (over the other N - 1 rows), s2 the variance of |c|
    over pairs and t = s2 - 2 s1. s1 and s2 are estimated from ``probe_rows`` sampled rows
    against the whole sample (about probe_rows / S of the sampled pass's work); each probe
    row's mean comes from S - 1 of its N - 1 partners, whose noise (s2 f / (S-1), f =
    (N-S)/(N-2)) is taken out of s1. Zero rows take no part (as in the pass).
    """
    U = W[sample.to(W.device)].float()  # the sample's rows, normalised in place below
    norms = torch.linalg.vector_norm(U, dim=1)
    if not bool((norms > 0).all()):
        U, norms = U[norms > 0], norms[norms > 0]
    S, N = U.shape[0], int(population)
    if S < 3:
        return float("nan")
    if S >= N:
        return 0.0  # the whole set: no sampling error
    U.div_(norms[:, None])
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(S, generator=g)[:min(probe_rows, S)].to(U.device)
    A = U[pick]
    sums = torch.zeros(A.shape[0], dtype=torch.float64, device=U.device)
    sq = torch.zeros_like(sums)
    for s in range(0, S, chunk):
        C = (A @ U[s:s + chunk].T).abs().double()
        sums += C.sum(1)
        sq += (C * C).sum(1)
    sums -= 1.0  # each probe row met itself once, |c| = 1
    sq -= 1.0
    k, pairs = A.shape[0], A.shape[0] * (S - 1)
    s2 = max(0.0, float(sq.sum() / pairs - (sums.sum() / pairs) ** 2))
    f = (N - S) / (N - 2)
    spread = float((sums / (S - 1)).var()) if k > 1 else 0.0
    s1 = max(0.0, (spread - s2 * f / (S - 1)) / (1.0 - f / (S - 1)))
    t = max(0.0, s2 - 2.0 * s1)
    var = (4.0 * (N - S) / (S * (N - 1)) * s1
           + 2.0 * (N - S) * (N - S - 1) / (S * (S - 1) * (N - 2) * (N - 3)) * t)
    return var ** 0.5
