"""Exact mean c and mean c^2 of several row sets in one streaming pass (Gram identities).

For the unit rows U of a set (N nonzero rows), over its P = N(N-1)/2 pairs i < j:
    sum c_ij   = (||U^T 1||^2 - N) / 2,      sum c_ij^2 = (||U^T U||_F^2 - N) / 2
(SPEC section 1; the same identities as :func:`superkern.overlap_moments_exact`, which is the
test oracle). The probe needs them for up to five overlapping sets (all rows, and both halves
of two norm splits). One pass over the rows adds each chunk's unit rows to the Gram matrix of
every set they belong to, and a set that is another set minus a third (the larger half of a
split) is obtained by subtracting their Gram matrices: cost ~ (1 + sum of smaller halves) N m^2
instead of two passes per set. fp64 throughout.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from superkern.ops.overlap_stream import row_norms


def _find_complements(member: torch.Tensor, order: list[int]) -> dict[int, tuple[int, int]]:
    """k -> (total, part) when set k == set total minus set part (part a subset of total)."""
    out: dict[int, tuple[int, int]] = {}
    sizes = member.sum(1).tolist()
    for k in sorted(order, key=lambda j: -sizes[j]):  # derive the larger half, sum the smaller
        for t in order:
            if t == k or sizes[t] <= sizes[k] or t in out:
                continue
            for p in order:
                if p in (k, t) or p in out or sizes[p] > sizes[k] or \
                        sizes[p] + sizes[k] != sizes[t]:
                    continue
                if torch.equal(member[k] | member[p], member[t]) and \
                        not bool((member[k] & member[p]).any()):
                    out[k] = (t, p)
                    break
            if k in out:
                break
    return out


def set_moments(W: torch.Tensor, sets: dict[str, torch.Tensor], *,
                centre: Optional[torch.Tensor] = None,
                chunk: int = 1 << 14,
                device: Optional[torch.device] = None) -> dict[str, dict[str, Any]]:
    """``{name: {n_used, n_zero, n_pairs, mean_cos, mean_sq}}`` for each row set.

    Args:
        W: (n, m) finite matrix (any float dtype, any device).
        sets: name -> int64 row indices (CPU). Identical sets are computed once; a set equal
            to another minus a third is derived by subtraction.
        centre: (m,) fp64 vector subtracted from every row first (the centred matrix without
            rounding it to W's dtype).
        chunk: rows per step (memory O(chunk * m) fp64).
        device: where to accumulate (default W's device); a host-resident W is then moved
            chunk by chunk.
    """
    n, m = W.shape
    dev = W.device if device is None else torch.device(device)
    names = list(sets)
    member = torch.zeros((len(names), n), dtype=torch.bool)
    for k, name in enumerate(names):
        member[k, sets[name].to("cpu")] = True
    first: list[int] = []  # one representative per distinct set
    alias = {}
    for k in range(len(names)):
        same = next((j for j in first if torch.equal(member[j], member[k])), None)
        if same is None:
            first.append(k)
        alias[k] = k if same is None else same
    derived = _find_complements(member, first)
    direct = [k for k in first if k not in derived]
    G = {k: torch.zeros((m, m), dtype=torch.float64, device=dev) for k in direct}
    col = {k: torch.zeros(m, dtype=torch.float64, device=dev) for k in direct}
    used = {k: 0 for k in direct}
    union = torch.nonzero(member[direct].any(0)).flatten()
    if centre is not None:  # a host-resident head's centre is on the host too
        centre = centre.to(device=dev, dtype=torch.float64)
    for s in range(0, union.numel(), chunk):
        idx = union[s:s + chunk]
        X = W[idx.to(W.device)].to(dev).double()
        if centre is not None:
            X = X - centre
        r = row_norms(X)  # scaled where squares would leave fp64's range (|x| ~ 1e160)
        nz = r > 0
        U = X[nz] / r[nz, None]
        in_set = member[:, idx][:, nz.cpu()]
        for k in direct:
            sel = in_set[k]
            cnt = int(sel.sum())
            if not cnt:
                continue
            Uk = U if cnt == U.shape[0] else U[sel.to(dev)]
            G[k] += Uk.T @ Uk
            col[k] += Uk.sum(0)
            used[k] += cnt
    for k, (t, p) in derived.items():
        G[k], col[k], used[k] = G[t] - G[p], col[t] - col[p], used[t] - used[p]
    out = {}
    for k, name in enumerate(names):
        a = alias[k]
        N = used[a]
        P = N * (N - 1) // 2
        sum_sq = (float((G[a] * G[a]).sum()) - N) / 2.0
        sum_cos = (float(col[a] @ col[a]) - N) / 2.0
        out[name] = {"n_used": N, "n_zero": int(sets[name].numel()) - N, "n_pairs": P,
                     "mean_cos": sum_cos / P if P else math.nan,
                     "mean_sq": sum_sq / P if P else math.nan}
    return out
