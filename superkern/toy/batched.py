"""Instance-batched engine: I toy models trained at once, one launch per op per step.

Layout: W (I, n, M) with M = the largest m (zero-padded columns stay exactly zero: zero
gradient, zero Adam update, unchanged by both decay branches, no effect on row norms), b (I, n),
Adam moments alike, per-instance learning-rate peaks, gamma and loss scale as tensors. Models
with the same (p, data seed) form a data group and share each batch x (G, B, n).

Equivalence with :class:`~superkern.toy.reference.ReferenceTrainer`: every instance is
initialised from its own seed exactly as the reference does, and each data group draws its
batches from a generator seeded and advanced exactly as the reference's, so each model matches
training it alone up to floating-point rounding (bmm vs mm, padded reductions).
The triton backend computes loss and gradients in one fused kernel that draws x from its own
Philox stream (keyed by group seed and step), so it matches the torch engine only when the
same x is replayed.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import torch

from superkern._tf32 import matmul_precision
from superkern.toy.config import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ToyConfig
from superkern.toy.data import data_groups, sample_batch
from superkern.toy.engine import LossRecorder, init_params, make_results
from superkern.toy.engine import synchronize
from superkern.toy.evaluate import eval_losses
from superkern.toy.loss import toy_loss_grad_torch
from superkern.toy.optim import ToyAdamW
from superkern.toy.result import ToyResult
from superkern.toy.schedule import lr_multipliers, schedule_key

Progress = Callable[[int, int], None]


def _check_group(configs: Sequence[ToyConfig]) -> None:
    if not configs:
        raise ValueError("no configs to train")
    c0 = configs[0]
    for c in configs[1:]:
        for key in ("n", "steps", "batch", "precision", "log_every"):
            if getattr(c, key) != getattr(c0, key):
                raise ValueError(f"configs in one launch group must share {key}: "
                                 f"{getattr(c0, key)!r} vs {getattr(c, key)!r}")


class BatchedTrainer:
    """I models sharing n, steps, batch and precision; see the module docstring.

    Args:
        configs: the models (any m, gamma, p, lr, loss scale, seed, schedule).
        device: where to train. backend: "torch" or "triton" (already resolved).
        triton_mod: the kernel module for backend "triton".
    """

    def __init__(self, configs: Sequence[ToyConfig], device: torch.device | str = "cpu",
                 backend: str = "torch", triton_mod=None):
        _check_group(configs)
        self.configs = list(configs)
        self.device = dev = torch.device(device)
        self.backend, self.tri = backend, triton_mod
        c0 = configs[0]
        I, n = len(configs), c0.n
        self.I, self.n, self.M = I, n, max(c.m for c in configs)
        self.B, self.steps, self.precision = c0.batch, c0.steps, c0.precision
        W = torch.zeros(I, n, self.M)
        b = torch.empty(I, n)
        for i, c in enumerate(configs):
            W[i, :, :c.m], b[i] = init_params(c)
        self.W, self.b = W.to(dev), b.to(dev)
        # Data groups, in first-appearance order.
        group, firsts, p = data_groups(configs)
        self.G = len(firsts)
        self.p = p.to(dev)
        self.group = torch.tensor(group, dtype=torch.int64, device=dev)
        self.group32 = self.group.to(torch.int32)
        self.seeds = torch.tensor([firsts[g].data_seed for g in range(self.G)], dtype=torch.int64,
                                  device=dev)
        self.identity_groups = group == list(range(I))
        if backend == "torch":
            self.gens = [torch.Generator(device=dev).manual_seed(firsts[g].data_seed)
                         for g in range(self.G)]
        # Per-instance learning rates: peak * multiplier table row (float64).
        skeys = {}
        sidx = [skeys.setdefault(schedule_key(c), len(skeys)) for c in configs]
        self.mult = torch.stack([lr_multipliers(*k) for k in skeys]).to(dev)   # (K, steps)
        self.sidx = torch.tensor(sidx, dtype=torch.int64, device=dev)
        self.lr_W0 = torch.tensor([c.lr for c in configs], dtype=torch.float64, device=dev)
        self.lr_b0 = torch.tensor([c.lr_b for c in configs], dtype=torch.float64, device=dev)
        self.loss_scale = torch.tensor([c.loss_scale for c in configs], device=dev)
        self.opt = ToyAdamW(self.W, self.b, [c.gamma for c in configs])
        self.rec = LossRecorder(self.steps, I, c0.log_every, dev)
        self.s = 0

    def sample(self, s: int) -> torch.Tensor:
        """The batches of step s for every data group, (G, B, n) (advances the generators)."""
        if self.backend == "triton":
            return self.tri.toy_sample_triton(self.p, self.seeds, s, self.B)
        return torch.stack([sample_batch(self.p[g], self.B, self.gens[g], check=False)
                            for g in range(self.G)])

    def loss_grad(self, s: int, x: Optional[torch.Tensor] = None):
        """(loss (I,), dW, db) of step s; the triton kernel draws x itself when x is None."""
        if self.backend == "triton":
            return self.tri.toy_loss_grad_triton(
                self.W, self.b, self.p, self.group32, self.seeds, s, self.B,
                self.loss_scale, self.precision, x)
        if x is None:
            x = self.sample(s)
        return toy_loss_grad_torch(self.W, self.b, x, self.loss_scale,
                                   None if self.identity_groups else self.group)

    def lrs(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        mult = self.mult[:, s - 1].index_select(0, self.sidx)
        return self.lr_W0 * mult, self.lr_b0 * mult

    def step(self) -> torch.Tensor:
        """One step for all models; returns the (I,) unscaled training losses."""
        self.s += 1
        s = self.s
        loss, dW, db = self.loss_grad(s)
        lr_W, lr_b = self.lrs(s)
        if self.backend == "triton":
            o = self.opt
            o.t += 1
            self.tri.toy_adamw_step_triton(
                self.W, self.b, dW, db, o.mW, o.vW, o.mb, o.vb, lr_W.float(), lr_b.float(),
                o.gamma32.view(-1), s, ADAM_BETA1, ADAM_BETA2, ADAM_EPS)
        else:
            self.opt.step(self.W, self.b, dW, db, lr_W, lr_b)
        self.rec.record(s, loss)
        return loss

    def run(self, progress: Optional[Progress] = None, every: int = 100) -> float:
        """All remaining steps; returns the wall time in seconds (synchronised)."""
        t0 = time.perf_counter()
        with matmul_precision(self.precision):
            while self.s < self.steps:
                self.step()
                if progress is not None and (self.s % every == 0 or self.s == self.steps):
                    progress(self.s, self.steps)
            synchronize(self.device)
        return time.perf_counter() - t0

    def params(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (n, m_i), b (n,)) of instance i, CPU fp32 copies."""
        return (self.W[i, :, :self.configs[i].m].detach().cpu().clone(),
                self.b[i].detach().cpu().clone())

    def test_losses(self) -> Optional[torch.Tensor]:
        """(T, I) unscaled losses of the current parameters on T = max test_batches fresh
        batches per data group (:mod:`superkern.toy.evaluate`); None when T = 0."""
        T = max(c.test_batches for c in self.configs)
        if T == 0:
            return None
        with matmul_precision(self.precision):
            return eval_losses(self.W, self.b, self.p, self.group, self.seeds.tolist(), T,
                               self.B, backend=self.backend, triton_mod=self.tri,
                               precision=self.precision)

    def results(self, seconds: float) -> list[ToyResult]:
        """One result per model; ``seconds`` is the training time (test batches excluded)."""
        Ws, bs = zip(*(self.params(i) for i in range(self.I)))
        return make_results(self.configs, Ws, bs, self.rec, seconds=seconds,
                            backend=self.backend, precision=self.precision, device=self.device,
                            test=self.test_losses())
