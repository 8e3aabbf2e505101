"""Triton kernels for training many toy models y = ReLU(W W^T x + b) at once (SPEC section 2).

Public functions (the contract the instance-batched trainer codes against):

* ``toy_sample_triton``: the dense batches (G, B, n) of the Philox data stream, for references
  and replay; the training kernels draw the very same stream themselves.
* ``toy_loss_grad_triton``: loss and gradients of I models (padded width M) in a few fused
  launches; the data enter only as a sparse entry list built per data group (never a dense
  B x n x), the dense products run on tensor cores in the chosen precision.
* ``toy_adamw_step_triton``: the paper's AdamW (decay branches by the sign of gamma) in place.

On CUDA the kernels run compiled; on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1).
Layout of the work and the numerics: ``_toy_fused`` (padded width <= 128), ``_toy_stored``
(wider), ``_toy_sample`` (data), ``_toy_adam``; block sizes from ``toy_config``.
"""
from __future__ import annotations

import math
import weakref
from typing import Optional

import torch
import triton

from superkern.triton._env import on_device
from superkern.triton._toy_adam import _adamw_kernel
from superkern.triton._toy_common import PRECISIONS, block_m, choose_path, is_interp, toy_config
from superkern.triton._toy_fused import fused_loss_grad
from superkern.triton._toy_sample import (build_sparse, nnz_cap_from_p, probability_error,
                                          sample_dense)
from superkern.triton._toy_stored import stored_loss_grad

__all__ = ["toy_sample_triton", "toy_loss_grad_triton", "toy_adamw_step_triton",
           "toy_nnz_cap", "toy_path", "launch_limits", "MAX_INSTANCES", "bench_toy_step",
           "PRECISIONS"]

_INT32_MAX = 2 ** 31 - 1
_GRID_YZ_MAX = 65535  # CUDA's limit on grid axes 1 and 2, where groups and models run
MAX_INSTANCES = _GRID_YZ_MAX  # models per launch (train_many splits larger groups)
_cap_cache: dict = {}


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def launch_limits(n: int, batch: int, M: int, I: int, device: torch.device | str,
                  precision: str = "fp32") -> Optional[str]:
    """Why a training launch of I models (n features, batch B, padded width M) cannot run, or
    None: int32 offsets, and CUDA's 65535 limit on the grid axes that carry models, batch
    tiles and feature tiles. Checked by ``train_many`` before any work and by each launch."""
    cfg, cfg_data = toy_config(M, device, precision), toy_config(16, device)
    if batch * n > _INT32_MAX:
        return f"batch * n = {batch} * {n} = {batch * n} exceeds 2^31 - 1 (int32 positions)"
    if max(n, batch) * M > _INT32_MAX or n * M > _INT32_MAX:
        return f"max(n, B) * M = {max(n, batch)} * {M} exceeds 2^31 - 1 (int32 offsets)"
    if I > _GRID_YZ_MAX:
        return f"I={I} models exceed the grid limit {_GRID_YZ_MAX} per launch"
    if triton.cdiv(batch, cfg.bb) > _GRID_YZ_MAX:
        return (f"batch={batch} needs {triton.cdiv(batch, cfg.bb)} batch tiles of {cfg.bb}, "
                f"more than the grid limit {_GRID_YZ_MAX}")
    if triton.cdiv(n, cfg_data.bf) > _GRID_YZ_MAX:
        return (f"n={n} needs {triton.cdiv(n, cfg_data.bf)} feature tiles of {cfg_data.bf}, "
                f"more than the grid limit {_GRID_YZ_MAX}")
    if triton.cdiv(M, cfg.bmc) > _GRID_YZ_MAX:  # the stored path's width chunks (grid axis 1)
        return (f"width M={M} needs {triton.cdiv(M, cfg.bmc)} width chunks of {cfg.bmc}, "
                f"more than the grid limit {_GRID_YZ_MAX}")
    return None


def _check_data_args(p: torch.Tensor, seeds: torch.Tensor, step: int, batch: int) -> None:
    _need(p.dim() == 2 and p.dtype == torch.float32, f"p must be (G, n) float32, got "
          f"{tuple(p.shape)} {p.dtype}")
    G, n = p.shape
    _need(seeds.shape == (G,) and seeds.dtype == torch.int64,
          f"seeds must be ({G},) int64, got {tuple(seeds.shape)} {seeds.dtype}")
    _need(seeds.device == p.device, f"seeds on {seeds.device}, p on {p.device}")
    _need(0 <= int(step) <= _INT32_MAX, f"step={step} must be in [0, 2^31)")
    _need(batch >= 1, f"batch={batch} must be >= 1")
    _need(batch * n <= _INT32_MAX, f"batch * n = {batch} * {n} = {batch * n} exceeds 2^31 - 1 "
          f"(entry positions are int32)")
    _need(G <= _GRID_YZ_MAX, f"G={G} data groups exceed the grid limit {_GRID_YZ_MAX} per launch")


def toy_sample_triton(p: torch.Tensor, seeds: torch.Tensor, step: int, batch: int) -> torch.Tensor:
    """The batches of one step for every data group, exactly as the training kernels draw them.

    Args:
        p: (G, n) float32 feature probabilities of each data group (each in [0, 1], checked).
        seeds: (G,) int64 data seed of each group (the Philox key, all 64 bits).
        step: training step (>= 0); with the seed it selects the stream's block.
        batch: samples per batch B.

    Returns:
        x: (G, B, n) float32, x[g, s, i] = 1[r1 < p[g, i]] * 2 r2 with (r1, r2) the first two
        uniforms of Philox-4x32-10(key seeds[g], counter (i, s, step, 0)).
    """
    _check_data_args(p, seeds, step, batch)
    probability_error(p)
    cfg = toy_config(16, p.device)
    _need(triton.cdiv(p.shape[1], cfg.bf) <= _GRID_YZ_MAX,
          f"n={p.shape[1]} needs {triton.cdiv(p.shape[1], cfg.bf)} feature tiles of {cfg.bf}, "
          f"more than the grid limit {_GRID_YZ_MAX}")
    with on_device(p.device):
        return sample_dense(p.contiguous(), seeds.contiguous(), int(step), int(batch), cfg)


def toy_path(M: int, precision: str = "fp32", device: torch.device | str = "cuda") -> str:
    """The kernel path :func:`toy_loss_grad_triton` takes by default for width M."""
    return choose_path(M, precision, toy_config(M, device, precision))


def toy_nnz_cap(p: torch.Tensor, batch: int) -> int:
    """Entry capacity per data group that a fresh batch exceeds with probability < ~1e-20.

    Passing it as ``nnz_cap`` to :func:`toy_loss_grad_triton` makes every call sync-free.
    """
    return nnz_cap_from_p(p, batch)


def _auto_cap(p: torch.Tensor, batch: int) -> int:
    """:func:`toy_nnz_cap` with one host sync per p tensor (and in-place version) and batch.

    Keyed on the tensor object itself, held by a weak reference: a later p that reuses a freed
    one's memory (same address, version 0) is another key. Keyed on the address, it got the
    earlier p's cap, too small for a larger E: entries dropped, NaN losses.
    """
    key = (id(p), batch)
    hit = _cap_cache.get(key)
    if hit is not None and hit[0]() is p and hit[1] == p._version:
        return hit[2]
    if len(_cap_cache) > 64:
        _cap_cache.clear()
    cap = nnz_cap_from_p(p, batch)
    _cap_cache[key] = (weakref.ref(p), p._version, cap)
    return cap


def toy_loss_grad_triton(W: torch.Tensor, b: torch.Tensor, p: torch.Tensor,
                         group: torch.Tensor, seeds: torch.Tensor, step: int, batch: int,
                         loss_scale: torch.Tensor, precision: str = "fp32",
                         x: Optional[torch.Tensor] = None, *, nnz_cap: Optional[int] = None,
                         path: Optional[str] = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss and gradients of I toy models on one step's batch.

    loss_i = mean over batch and features of (y - x)^2 (unscaled), y = ReLU(x W W^T + b);
    dW, db = gradients of loss_scale[i] * loss_i. Zero-padded columns of W get exactly zero
    gradient. Deterministic: no atomics, fixed reduction orders.

    Args:
        W: (I, n, M) float32, models padded to width M with zero columns.
        b: (I, n) float32.
        p: (G, n) float32 feature probabilities per data group, each in [0, 1] (checked,
            with one host sync, whenever the entry capacity is computed from p; a given
            ``nnz_cap`` or x skips the check).
        group: (I,) int32 data group of each instance (values in [0, G); not checked on GPU).
        seeds: (G,) int64 data seed per group.
        step: the step whose batch to draw (same stream as :func:`toy_sample_triton`).
        batch: B.
        loss_scale: (I,) float32 factor on each model's back-propagated loss.
        precision: "fp32" (IEEE, the reference), "tf32", "tf32x3" or "bf16" operands of the
            dense products (fp32 accumulation everywhere).
        x: optional (G, B, n) float32 batch to use instead of drawing it (replay).
        nnz_cap: optional per-group entry capacity (see :func:`toy_nnz_cap`); default: from p
            (cached per p), or exact from x. A cap exceeded returns NaN loss for that group.
        path: "fused" or "stored" to force a kernel path (default: by padded width and
            precision, see :func:`toy_path`).

    Returns:
        (loss (I,) float32, dW (I, n, M) float32, db (I, n) float32).
    """
    _need(precision in PRECISIONS, f"precision={precision!r}; choose from {sorted(PRECISIONS)}")
    _need(W.dim() == 3 and W.dtype == torch.float32,
          f"W must be (I, n, M) float32, got {tuple(W.shape)} {W.dtype}")
    I, n, M = W.shape
    _check_data_args(p, seeds, step, batch)
    G = p.shape[0]
    _need(p.shape[1] == n, f"p has n={p.shape[1]}, W has n={n}")
    _need(b.shape == (I, n) and b.dtype == torch.float32,
          f"b must be ({I}, {n}) float32, got {tuple(b.shape)} {b.dtype}")
    _need(group.shape == (I,) and group.dtype in (torch.int32, torch.int64),
          f"group must be ({I},) int32, got {tuple(group.shape)} {group.dtype}")
    _need(loss_scale.shape == (I,), f"loss_scale must be ({I},), got {tuple(loss_scale.shape)}")
    _need(M >= 1, f"W has width M={M}; need >= 1")
    # Offsets inside one instance are int32 (registers); across instances int64.
    why = launch_limits(n, batch, M, I, W.device, precision)
    _need(why is None, str(why))
    for name, t in (("b", b), ("p", p), ("group", group), ("seeds", seeds),
                    ("loss_scale", loss_scale)):
        _need(t.device == W.device, f"{name} on {t.device}, W on {W.device}")
    if not W.is_cuda and group.numel():     # on the GPU this check would cost a sync
        _need(int(group.min()) >= 0 and int(group.max()) < G,
              f"group values must lie in [0, {G}), got [{int(group.min())}, {int(group.max())}]")
    if x is not None:
        _need(x.shape == (G, batch, n) and x.dtype == torch.float32,
              f"x must be ({G}, {batch}, {n}) float32, got {tuple(x.shape)} {x.dtype}")
        _need(x.device == W.device, f"x on {x.device}, W on {W.device}")
        x = x.contiguous()
    dev = W.device
    if I == 0 or n == 0:
        return (torch.zeros(I, device=dev), torch.zeros_like(W), torch.zeros_like(b))
    cfg = toy_config(M, dev, precision)
    bm = block_m(M)
    if path is None:
        path = choose_path(M, precision, cfg)
    _need(path in ("fused", "stored"), f"path={path!r}; choose 'fused' or 'stored'")
    W, b, p = W.contiguous(), b.contiguous(), p.contiguous()
    group = group.to(torch.int32).contiguous()
    c = (loss_scale.to(torch.float32) * (2.0 / (batch * n))).contiguous()
    if x is None and nnz_cap is None:
        nnz_cap = _auto_cap(p, batch)
    prec, interp = PRECISIONS[precision], is_interp(W)
    with on_device(dev):
        sp = build_sparse(p, seeds.contiguous(), int(step), int(batch), cfg, x=x, cap=nnz_cap)
        if path == "fused":
            part, dW, db = fused_loss_grad(W, b, group, c, sp, batch, cfg, bm, prec, interp)
        else:
            part, dW, db = stored_loss_grad(W, b, group, c, sp, batch, cfg, prec, interp)
    # Partials are fp32 sums within a tile; across tiles in fp64 (fixed order).
    loss = (part.double().sum(1) / (batch * n)).float()
    overflow = sp.nnz.index_select(0, group.long()) > sp.cap
    loss = torch.where(overflow, torch.full_like(loss, float("nan")), loss)
    return loss, dW, db


def toy_adamw_step_triton(W: torch.Tensor, b: torch.Tensor, dW: torch.Tensor, db: torch.Tensor,
                          mW: torch.Tensor, vW: torch.Tensor, mb: torch.Tensor, vb: torch.Tensor,
                          lr_W: torch.Tensor, lr_b: torch.Tensor, gamma: torch.Tensor, step: int,
                          beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
    """One AdamW step of I toy models, in place on W, b and the moments.

    First the decay of W with the current lr (gamma >= 0: W *= 1 - lr_W gamma; gamma < 0:
    W_i += lr_W gamma W_i (1 - 1 / (||W_i|| + 1e-8)) per row), then the bias-corrected Adam
    step (t = step, counted from 1) on W with lr_W and on b with lr_b (b is not decayed).

    Args:
        W, dW, mW, vW: (I, n, M) float32, contiguous (updated in place: W, mW, vW).
        b, db, mb, vb: (I, n) float32, contiguous (updated in place: b, mb, vb).
        lr_W, lr_b, gamma: (I,) float32 per-instance learning rates and decay.
        step: Adam's step count t >= 1. beta1, beta2, eps: Adam constants.
    """
    _need(W.dim() == 3, f"W must be (I, n, M), got {tuple(W.shape)}")
    I, n, M = W.shape
    _need(step >= 1, f"step={step} must be >= 1 (Adam counts from 1)")
    for name, t, shape in (("W", W, (I, n, M)), ("dW", dW, (I, n, M)), ("mW", mW, (I, n, M)),
                           ("vW", vW, (I, n, M)), ("b", b, (I, n)), ("db", db, (I, n)),
                           ("mb", mb, (I, n)), ("vb", vb, (I, n)), ("lr_W", lr_W, (I,)),
                           ("lr_b", lr_b, (I,)), ("gamma", gamma, (I,))):
        _need(tuple(t.shape) == shape and t.dtype == torch.float32,
              f"{name} must be {shape} float32, got {tuple(t.shape)} {t.dtype}")
        _need(t.is_contiguous(), f"{name} must be contiguous (updated in place or read flat)")
        _need(t.device == W.device, f"{name} on {t.device}, W on {W.device}")
    _need(n * M <= _INT32_MAX, f"n * M = {n} * {M} exceeds 2^31 - 1 (int32 offsets per model)")
    _need(I <= _GRID_YZ_MAX, f"I={I} models exceed the grid limit {_GRID_YZ_MAX} per launch")
    if W.numel() == 0 and b.numel() == 0:
        return
    cfg = toy_config(M, W.device)
    bma = min(block_m(M), 64)
    bc1 = 1.0 - beta1 ** step
    bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
    with on_device(W.device):
        _adamw_kernel[(triton.cdiv(n, cfg.br), I)](
            W, b, dW, db, mW, vW, mb, vb, lr_W, lr_b, gamma, n, M, float(beta1), float(beta2),
            float(eps), bc1, bc2_sqrt, BR=cfg.br, BMA=bma, num_warps=cfg.adam_warps)


def bench_toy_step(I: int, n: int, M: int, B: int, precision: str = "fp32",
                   iters: int = 20, widths: list[int] | None = None) -> dict:
    """Time one training step (loss_grad + adamw) of I models; see ``_toy_bench``."""
    from superkern.triton._toy_bench import bench_toy_step as _bench
    return _bench(I, n, M, B, precision, iters, widths=widths)
