"""Test loss of trained toy models on fresh data (the paper's Appendix B: "the final test loss
is calculated across newly sampled data with a size being 100 times the batch size").

``ToyConfig.test_batches = T`` evaluates the final W and b on T fresh batches of the training
batch size. They come from a stream of their own (seed :func:`eval_seed`, derived from the
data seed), so they are never training batches and the training stream is unchanged: a model
trains identically with or without a test loss. The torch engines draw them with
:func:`~superkern.toy.data.sample_batch` from a generator seeded with the test seed; the Triton
engine draws them in its fused kernel from Philox keyed by the test seed, steps 1..T. Each
model is evaluated in the precision it trained in.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from superkern._tf32 import matmul_precision
from superkern.toy.backend import triton_toy
from superkern.toy.config import ToyConfig, _splitmix64
from superkern.toy.data import data_groups, sample_batch
from superkern.toy.loss import CHUNK_ELEMS


def eval_seed(data_seed: int) -> int:
    """Seed of the test-data stream of a model with data seed ``data_seed`` (63 bits)."""
    return _splitmix64(int(data_seed) ^ 0x7E57_DA7A) & 0x7FFFFFFFFFFFFFFF


def toy_loss_torch(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor,
                   group: Optional[torch.Tensor] = None, chunk_elems: int = CHUNK_ELEMS
                   ) -> torch.Tensor:
    """Forward-only training loss of I models: mean over B and n of (ReLU(x W W^T + b) - x)^2.

    Args as :func:`~superkern.toy.loss.toy_loss_grad_torch` (W (I, n, M), b (I, n), x
    (G, B, n), instance i on ``x[group[i]]``). Returns the (I,) unscaled losses.
    """
    I, n, _ = W.shape
    B = x.shape[1]
    loss = torch.empty(I, dtype=W.dtype, device=W.device)
    step = max(1, chunk_elems // max(1, B * n))
    for s in range(0, I, step):
        e = min(I, s + step)
        Wc = W[s:e]
        xc = x[s:e] if group is None else x.index_select(0, group[s:e])
        y = torch.baddbmm(b[s:e].unsqueeze(1), torch.bmm(xc, Wc), Wc.transpose(1, 2)).relu_()
        loss[s:e] = y.sub_(xc).square_().sum(dim=(1, 2)) / (B * n)
    return loss


def eval_losses(W: torch.Tensor, b: torch.Tensor, p: torch.Tensor, group: torch.Tensor,
                data_seeds: Sequence[int], batches: int, batch: int, *, backend: str = "torch",
                triton_mod=None, precision: str = "fp32") -> torch.Tensor:
    """Unscaled losses of I models on ``batches`` fresh test batches each, (batches, I).

    Args:
        W: (I, n, M), b: (I, n): final parameters (padded columns zero).
        p: (G, n) float32 frequencies of the data groups; group: (I,) int64 group of each model.
        data_seeds: the G groups' data seeds (their test seeds are derived).
        batches: T >= 1; batch: B.
        backend: "torch" (sample_batch + :func:`toy_loss_torch`) or "triton" (the fused
            kernel, gradients discarded).
    """
    G = p.shape[0]
    seeds = [eval_seed(s) for s in data_seeds]
    out = torch.empty(batches, W.shape[0], dtype=torch.float32, device=W.device)
    with torch.no_grad():
        if backend == "triton":
            keys = torch.tensor(seeds, dtype=torch.int64, device=W.device)
            ones = torch.ones(W.shape[0], dtype=torch.float32, device=W.device)
            g32 = group.to(torch.int32)
            for t in range(batches):
                out[t] = triton_mod.toy_loss_grad_triton(W, b, p, g32, keys, t + 1, batch,
                                                         ones, precision)[0]
            return out
        gens = [torch.Generator(device=W.device).manual_seed(s) for s in seeds]
        ident = G == W.shape[0] and bool((group == torch.arange(G, device=group.device)).all())
        for t in range(batches):
            x = torch.stack([sample_batch(p[g], batch, gens[g], check=False) for g in range(G)])
            out[t] = toy_loss_torch(W, b, x, None if ident else group)
    return out


def summarize(losses: torch.Tensor, n: int, batches: int) -> tuple[float, float]:
    """(mean, std with ddof 1) of the first ``batches`` reported losses (loss * n) of one
    model; (NaN, NaN) when ``batches`` is 0, std NaN for one batch."""
    if batches <= 0:
        return math.nan, math.nan
    v = losses[:batches].double() * n
    return float(v.mean()), (float(v.std()) if batches > 1 else math.nan)


def evaluate_test_losses(configs: Sequence, params: Sequence[tuple[torch.Tensor, torch.Tensor]],
                         *, device=None, max_instances: int = 64
                         ) -> list[tuple[float, float]]:
    """Test loss of trained models from their final W and b alone: ``(mean, std)`` per model.

    This is what training with ``config.test_batches = T`` records as ``test_loss`` and
    ``test_loss_std``: T fresh batches of ``config.batch`` from the model's test stream, in its
    precision, on the engine its ``backend`` resolves to on ``device`` (as
    :func:`~superkern.toy.train_many` resolves it). It serves weights saved by a run without
    test batches (``superkern sweep`` uses it to add test losses on resume). Models evaluated
    together share launches as ``train_many`` groups them, so the values equal the ones
    training records up to rounding. Models with ``test_batches = 0`` get ``(nan, nan)``.

    Args:
        configs: the models' :class:`~superkern.toy.ToyConfig`.
        params: ``(W (n, m), b (n,))`` per model, e.g. from
            :func:`~superkern.toy.load_weights`.
        device: where to evaluate (default: CUDA when available).
        max_instances: most models per launch.
    """
    from superkern.toy.api import _device, plan_groups  # api imports this module

    configs, params = list(configs), list(params)
    if len(configs) != len(params):
        raise ValueError(f"{len(configs)} configs but {len(params)} (W, b) pairs")
    if not (isinstance(max_instances, int) and max_instances >= 1):
        raise ValueError(f"max_instances must be an integer >= 1, got {max_instances!r}")
    for i, (c, wb) in enumerate(zip(configs, params)):
        if not isinstance(c, ToyConfig):
            raise ValueError(f"configs[{i}] must be a ToyConfig, got {type(c).__name__}")
        if not (isinstance(wb, (tuple, list)) and len(wb) == 2
                and all(isinstance(t, torch.Tensor) for t in wb)):
            raise ValueError(f"params[{i}] must be a (W, b) pair of tensors")
        W, b = wb
        if tuple(W.shape) != (c.n, c.m) or tuple(b.shape) != (c.n,):
            raise ValueError(f"params[{i}]: W {tuple(W.shape)} and b {tuple(b.shape)} do not "
                             f"fit its config (n = {c.n}, m = {c.m}): expected W ({c.n}, "
                             f"{c.m}) and b ({c.n},)")
    dev = _device(device)
    out = [(math.nan, math.nan)] * len(configs)
    todo = [i for i, c in enumerate(configs) if c.test_batches > 0]
    for backend, idx in plan_groups([configs[i] for i in todo], dev):
        idx = [todo[j] for j in idx]
        for s in range(0, len(idx), max_instances):
            chunk = idx[s:s + max_instances]
            cs = [configs[i] for i in chunk]
            M = max(c.m for c in cs)
            W = torch.zeros(len(cs), cs[0].n, M)
            b = torch.empty(len(cs), cs[0].n)
            for k, i in enumerate(chunk):
                W[k, :, :cs[k].m] = params[i][0].detach().float()
                b[k] = params[i][1].detach().float()
            group, firsts, p = data_groups(cs)
            with matmul_precision(cs[0].precision):
                losses = eval_losses(
                    W.to(dev), b.to(dev), p.to(dev), torch.tensor(group, device=dev),
                    [c.data_seed for c in firsts], max(c.test_batches for c in cs),
                    cs[0].batch, backend=backend,
                    triton_mod=triton_toy()[0] if backend == "triton" else None,
                    precision=cs[0].precision).cpu()
            for k, i in enumerate(chunk):
                out[i] = summarize(losses[:, k], cs[k].n, cs[k].test_batches)
    return out
