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

from superkern.toy.config import _splitmix64
from superkern.toy.data import sample_batch
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
            x = torch.stack([sample_batch(p[g], batch, gens[g]) for g in range(G)])
            out[t] = toy_loss_torch(W, b, x, None if ident else group)
    return out


def summarize(losses: torch.Tensor, n: int, batches: int) -> tuple[float, float]:
    """(mean, std with ddof 1) of the first ``batches`` reported losses (loss * n) of one
    model; (NaN, NaN) when ``batches`` is 0, std NaN for one batch."""
    if batches <= 0:
        return math.nan, math.nan
    v = losses[:batches].double() * n
    return float(v.mean()), (float(v.std()) if batches > 1 else math.nan)
