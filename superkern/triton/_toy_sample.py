"""The toy data on the GPU: the dense sampler (for references and replay) and the sparse batch
that the training kernels consume.

A batch has ~E active features per sample (E = sum_i p_i, ~1), so the training kernels never
see a dense x. Per data group and step, two passes over the Philox stream (or over a given
dense x) build the batch's nonzeros twice over, in a fixed order, with no atomics:

* sample-major (CSR): entry e of group g at ``g * cap + e``, rows in sample order, features
  ascending within a row; ``csr_s``, ``csr_i``, ``csr_v`` hold sample, feature and value;
  ``row_ptr (G, B + 1)`` delimits the rows.
* feature-major (CSC): ``csc_perm`` lists the CSR positions of feature 0's entries (samples
  ascending), then feature 1's, ...; ``col_ptr (G, n + 1)`` delimits the features.

Pass 1 counts actives per sample and per (sample tile, feature); torch cumsums give every
sample tile its write offsets; pass 2 regenerates the same block and writes each entry at
offset + in-tile rank (a cumsum over the block). The random stream is drawn once per group
(not once per model), which matters: Philox costs ~100 integer operations per element.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from superkern.triton._toy_common import ToyTritonConfig, _draw


# ``step`` changes on every call: not specialised, or step 1, the multiples of 16 and the other
# steps would each compile a variant of every sampler kernel.
@triton.jit(do_not_specialize=["step"])
def _sample_dense_kernel(p_ptr, seed_ptr, x_ptr, step, B, n,
                         BS: tl.constexpr, BF: tl.constexpr):
    sbt = tl.program_id(0)
    ft = tl.program_id(1)
    g = tl.program_id(2).to(tl.int64)
    offs_s = sbt * BS + tl.arange(0, BS)
    offs_f = ft * BF + tl.arange(0, BF)
    s_ok = offs_s < B
    f_ok = offs_f < n
    seed = tl.load(seed_ptr + g)
    _a, v = _draw(p_ptr, p_ptr, seed, step, g, offs_s, offs_f, s_ok, f_ok, n, 0, 0,
                  FROM_X=False)
    ptrs = x_ptr + g * B * n + (offs_s[:, None] * n + offs_f[None, :])
    tl.store(ptrs, v, mask=s_ok[:, None] & f_ok[None, :])


@triton.jit(do_not_specialize=["step"])
def _count_kernel(p_ptr, seed_ptr, x_ptr, cnt_s_ptr, cnt_f_ptr, step, B, n, n_sbt,
                  stride_xg, stride_xs, FROM_X: tl.constexpr, BS: tl.constexpr,
                  BF: tl.constexpr):
    sbt = tl.program_id(0)
    g = tl.program_id(1).to(tl.int64)
    offs_s = sbt * BS + tl.arange(0, BS)
    s_ok = offs_s < B
    seed = tl.load(seed_ptr + g)
    row = tl.zeros([BS], dtype=tl.int32)
    for f0 in range(0, n, BF):
        offs_f = f0 + tl.arange(0, BF)
        f_ok = offs_f < n
        active, _v = _draw(p_ptr, x_ptr, seed, step, g, offs_s, offs_f, s_ok, f_ok, n,
                           stride_xg, stride_xs, FROM_X)
        a = active.to(tl.int32)
        row += tl.sum(a, axis=1)
        tl.store(cnt_f_ptr + (g * n_sbt + sbt) * n + offs_f, tl.sum(a, axis=0), mask=f_ok)
    tl.store(cnt_s_ptr + g * B + offs_s, row, mask=s_ok)


@triton.jit(do_not_specialize=["step"])
def _fill_kernel(p_ptr, seed_ptr, x_ptr, row_ptr_ptr, col_off_ptr, csr_s_ptr, csr_i_ptr,
                 csr_v_ptr, csc_perm_ptr, step, B, n, n_sbt, cap, stride_xg, stride_xs,
                 FROM_X: tl.constexpr, BS: tl.constexpr, BF: tl.constexpr):
    sbt = tl.program_id(0)
    g = tl.program_id(1).to(tl.int64)
    offs_s = sbt * BS + tl.arange(0, BS)
    s_ok = offs_s < B
    seed = tl.load(seed_ptr + g)
    base = tl.load(row_ptr_ptr + g * (B + 1) + offs_s, mask=s_ok, other=0)
    ent = g * cap
    for f0 in range(0, n, BF):
        offs_f = f0 + tl.arange(0, BF)
        f_ok = offs_f < n
        active, v = _draw(p_ptr, x_ptr, seed, step, g, offs_s, offs_f, s_ok, f_ok, n,
                          stride_xg, stride_xs, FROM_X)
        a = active.to(tl.int32)
        pos = base[:, None] + tl.cumsum(a, axis=1) - a          # rank within the row
        coff = tl.load(col_off_ptr + (g * n_sbt + sbt) * n + offs_f, mask=f_ok, other=0)
        cpos = coff[None, :] + tl.cumsum(a, axis=0) - a         # rank within the feature
        w = active & (pos < cap)                                 # cap overflow: see launcher
        zero = pos * 0
        tl.store(csr_s_ptr + ent + pos, offs_s[:, None] + zero, mask=w)
        tl.store(csr_i_ptr + ent + pos, offs_f[None, :] + zero, mask=w)
        tl.store(csr_v_ptr + ent + pos, v, mask=w)
        tl.store(csc_perm_ptr + ent + cpos, pos, mask=active & (cpos < cap))
        base += tl.sum(a, axis=1)


@dataclass
class SparseBatch:
    """The nonzeros of every group's batch (see module docstring). ``nnz (G,)`` int32 may
    exceed ``cap`` only if a caller-given cap was too small; the kernels then return NaN loss."""

    cap: int
    row_ptr: torch.Tensor
    col_ptr: torch.Tensor
    nnz: torch.Tensor
    csr_s: torch.Tensor
    csr_i: torch.Tensor
    csr_v: torch.Tensor
    csc_perm: torch.Tensor


def sample_dense(p: torch.Tensor, seeds: torch.Tensor, step: int, batch: int,
                 cfg: ToyTritonConfig) -> torch.Tensor:
    G, n = p.shape
    x = torch.empty((G, batch, n), dtype=torch.float32, device=p.device)
    if x.numel() == 0:
        return x
    grid = (triton.cdiv(batch, cfg.bs), triton.cdiv(n, cfg.bf), G)
    _sample_dense_kernel[grid](p, seeds, x, step, batch, n, BS=cfg.bs, BF=cfg.bf,
                               num_warps=cfg.sampler_warps)
    return x


def nnz_cap_from_p(p: torch.Tensor, batch: int, sigmas: float = 12.0) -> int:
    """A per-group entry capacity that a batch exceeds with probability < ~1e-20.

    nnz of a group is a sum of B n independent Bernoullis: mean mu = B sum p, variance
    <= mu; cap = mu + 12 sqrt(mu) + 64 (Chernoff: P(X >= cap) <= exp(-44) at mu = 2048, and
    the +64 dominates for tiny batches). Costs one device->host copy.
    """
    if p.numel() == 0:
        return 64
    top, lo, hi = torch.stack([p.double().sum(1).max(), p.double().amin(),
                               p.double().amax()]).tolist()
    if not 0.0 <= lo <= hi <= 1.0:  # NaN fails too
        probability_error(p)
    mu = top * batch
    return int(min(batch * p.shape[1], math.ceil(mu + sigmas * math.sqrt(mu) + 64)))


def probability_error(p: torch.Tensor) -> None:
    """Raise if any entry of p (G, n) is not a probability in [0, 1] (NaN included), naming
    the first such entry, its value and how many there are."""
    bad = ~((p >= 0) & (p <= 1))
    count = int(bad.sum())
    if count:
        g, i = torch.nonzero(bad)[0].tolist()
        raise ValueError(f"p[{g}, {i}] = {float(p[g, i]):.10g} is not a probability in "
                         f"[0, 1] ({count} of {p.numel()} entries are not)")


def build_sparse(p: torch.Tensor, seeds: torch.Tensor, step: int, batch: int,
                 cfg: ToyTritonConfig, x: Optional[torch.Tensor] = None,
                 cap: Optional[int] = None) -> SparseBatch:
    """The sparse batch of every group at ``step`` (from the stream, or from a dense x).

    cap None: exact capacity from the counts (one device->host sync). A given cap avoids the
    sync; entries past it are dropped and flagged through ``nnz`` (the loss turns NaN).
    """
    G, n = p.shape
    dev = p.device
    from_x = x is not None
    xt = x if from_x else p
    sxg, sxs = (x.stride(0), x.stride(1)) if from_x else (0, 0)
    n_sbt = triton.cdiv(batch, cfg.bs)
    cnt_s = torch.empty((G, batch), dtype=torch.int32, device=dev)
    cnt_f = torch.empty((G, n_sbt, n), dtype=torch.int32, device=dev)
    grid = (n_sbt, G)
    _count_kernel[grid](p, seeds, xt, cnt_s, cnt_f, step, batch, n, n_sbt, sxg, sxs,
                        FROM_X=from_x, BS=cfg.bs, BF=cfg.bf, num_warps=cfg.sampler_warps)
    row_ptr = torch.zeros((G, batch + 1), dtype=torch.int32, device=dev)
    row_ptr[:, 1:] = torch.cumsum(cnt_s, 1, dtype=torch.int32)
    col_ptr = torch.zeros((G, n + 1), dtype=torch.int32, device=dev)
    col_ptr[:, 1:] = torch.cumsum(cnt_f.sum(1, dtype=torch.int32), 1, dtype=torch.int32)
    # Where sample tile sbt starts writing feature i: the feature's start + earlier tiles.
    col_off = (col_ptr[:, None, :-1] + torch.cumsum(cnt_f, 1, dtype=torch.int32) - cnt_f)
    col_off = col_off.contiguous()
    nnz = row_ptr[:, batch].contiguous()
    if cap is None:
        cap = max(1, int(nnz.max()))
    cap = max(1, int(cap))
    csr_s = torch.empty(G * cap, dtype=torch.int32, device=dev)
    csr_i = torch.empty(G * cap, dtype=torch.int32, device=dev)
    csr_v = torch.empty(G * cap, dtype=torch.float32, device=dev)
    csc_perm = torch.empty(G * cap, dtype=torch.int32, device=dev)
    _fill_kernel[grid](p, seeds, xt, row_ptr, col_off, csr_s, csr_i, csr_v, csc_perm, step,
                       batch, n, n_sbt, cap, sxg, sxs, FROM_X=from_x, BS=cfg.bs, BF=cfg.bf,
                       num_warps=cfg.sampler_warps)
    return SparseBatch(cap=cap, row_ptr=row_ptr, col_ptr=col_ptr, nnz=nnz, csr_s=csr_s,
                       csr_i=csr_i, csr_v=csr_v, csc_perm=csc_perm)
