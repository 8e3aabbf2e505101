"""Reference trainer: one toy model, plain PyTorch autograd, SPEC section 2 to the letter.

Per step s = 1..steps (the authors' loop): fresh batch x from the data generator; lr_W, lr_b
from the schedule; y = ReLU(x W W^T + b); loss = MSE(y, x); backprop loss_scale * loss; the
modified AdamW step (decay first, then Adam). This is the torch backend of :func:`train` and
the oracle of the instance-batched engine.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from superkern._tf32 import matmul_precision
from superkern.toy.config import ToyConfig
from superkern.toy.data import sample_batch, toy_probabilities
from superkern.toy.engine import LossRecorder, init_params, make_results
from superkern.toy.engine import synchronize
from superkern.toy.evaluate import eval_losses
from superkern.toy.loss import toy_loss_ref
from superkern.toy.optim import ToyAdamW
from superkern.toy.result import ToyResult
from superkern.toy.schedule import lr_multipliers, schedule_key


class ReferenceTrainer:
    """One model; call :meth:`step` ``config.steps`` times, then :meth:`result`.

    Args:
        config: the run. device: where to train (data are drawn there, init on CPU).
    """

    def __init__(self, config: ToyConfig, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        W, b = init_params(config)
        self.W = W.to(self.device).requires_grad_(True)
        self.b = b.to(self.device).requires_grad_(True)
        self.p = toy_probabilities(config).to(torch.float32).to(self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(config.data_seed)
        self.opt = ToyAdamW(self.W.detach(), self.b.detach(), config.gamma)
        mult = lr_multipliers(*schedule_key(config)).to(self.device)
        self.lr_W, self.lr_b = config.lr * mult, config.lr_b * mult     # float64 tables
        self.rec = LossRecorder(config.steps, 1, config.log_every, self.device)
        self.s = 0

    def step(self) -> torch.Tensor:
        """One training step; returns the unscaled training loss (0-d, on the device)."""
        c = self.config
        self.s += 1
        x = sample_batch(self.p, c.batch, self.gen, check=False)
        self.W.grad = self.b.grad = None
        loss = toy_loss_ref(self.W, self.b, x)
        (loss * c.loss_scale if c.loss_scale != 1.0 else loss).backward()
        self.opt.step(self.W.detach(), self.b.detach(), self.W.grad, self.b.grad,
                      self.lr_W[self.s - 1], self.lr_b[self.s - 1])
        loss = loss.detach()
        self.rec.record(self.s, loss.view(1))
        return loss

    def result(self, seconds: float) -> ToyResult:
        c = self.config
        test = None
        if c.test_batches:
            with matmul_precision(c.precision):
                test = eval_losses(self.W.detach()[None], self.b.detach()[None], self.p[None],
                                   torch.zeros(1, dtype=torch.int64, device=self.device),
                                   [c.data_seed], c.test_batches, c.batch)
        W = self.W.detach().cpu().float()
        b = self.b.detach().cpu().float()
        return make_results([c], [W], [b], self.rec, seconds=seconds, backend="torch",
                            precision=c.precision, device=self.device, test=test)[0]


def train_reference(config: ToyConfig, device: Optional[torch.device | str] = None,
                    progress: Optional[Callable[[int, int], None]] = None) -> ToyResult:
    """Train one model with the reference trainer (fp32, tf32 off unless precision='tf32');
    ``progress(step, steps)`` is called every 100 steps and at the end."""
    device = torch.device(device if device is not None else "cpu")
    with matmul_precision(config.precision):
        t0 = time.perf_counter()
        tr = ReferenceTrainer(config, device)
        for s in range(1, config.steps + 1):
            tr.step()
            if progress is not None and (s % 100 == 0 or s == config.steps):
                progress(s, config.steps)
        synchronize(device)
        seconds = time.perf_counter() - t0
    return tr.result(seconds)
