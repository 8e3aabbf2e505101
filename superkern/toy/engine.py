"""Pieces shared by the reference trainer and the instance-batched engine: initialisation,
loss recording and result assembly."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from superkern.toy.config import ToyConfig
from superkern.toy.data import toy_probabilities
from superkern.toy.evaluate import summarize
from superkern.toy.geometry import toy_geometry
from superkern.toy.result import TAIL, ToyResult


def init_params(config: ToyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial (W (n, m), b (n)), CPU fp32, from the config's own init generator.

    As the authors' code: ``W = randn(n, m) / sqrt(m)`` (N(0, 1/m)), then ``b = randn(n)``
    (N(0, 1), not zero), in that order from one CPU generator seeded with ``config.seed``; so
    the init does not depend on the device or on which other models train alongside.
    """
    g = torch.Generator(device="cpu").manual_seed(config.init_seed)
    W = torch.randn(config.n, config.m, generator=g) / math.sqrt(config.m)
    b = torch.randn(config.n, generator=g)
    return W, b


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LossRecorder:
    """Keeps per-step training losses of I models on the device without host syncs: samples
    for the curve (every ``log_every`` steps, plus the first and last) and the last 100."""

    def __init__(self, steps: int, I: int, log_every: int, device: torch.device):
        pts = set()
        if log_every > 0:
            pts = {1, steps} | set(range(log_every, steps + 1, log_every))
        self.curve_steps = sorted(pts)
        self._row = {s: k for k, s in enumerate(self.curve_steps)}
        self.tail_start = max(1, steps - TAIL + 1)
        self.curve = torch.full((len(self.curve_steps), I), math.nan, device=device)
        self.tail = torch.full((steps - self.tail_start + 1, I), math.nan, device=device)

    def record(self, s: int, loss: torch.Tensor) -> None:
        """Store the (I,) unscaled training loss of step s (1-based)."""
        k = self._row.get(s)
        if k is not None:
            self.curve[k] = loss
        if s >= self.tail_start:
            self.tail[s - self.tail_start] = loss


def make_results(configs: Sequence[ToyConfig], W: Sequence[torch.Tensor],
                 b: Sequence[torch.Tensor], rec: LossRecorder, *, seconds: float,
                 backend: str, precision: str, device: torch.device,
                 test: torch.Tensor | None = None) -> list[ToyResult]:
    """ToyResult per model from final parameters (CPU, unpadded) and the recorder;
    ``test``: (T, I) unscaled test-batch losses (model i uses its first ``test_batches``)."""
    import superkern

    n = configs[0].n
    tail = rec.tail.detach().double().cpu() * n          # reported loss = training loss * n
    curve = rec.curve.detach().double().cpu() * n
    versions = {"superkern": superkern.__version__, "torch": torch.__version__}
    test = test.detach().cpu() if test is not None else None
    out = []
    for i, cfg in enumerate(configs):
        t = tail[:, i]
        final = float(t.mean())
        std = float(t.std()) if t.numel() > 1 else math.nan  # one step: no spread to report
        Wi, bi = W[i].contiguous(), b[i].contiguous()
        finite = math.isfinite(final) and bool(torch.isfinite(Wi).all()) and bool(
            torch.isfinite(bi).all())
        phi_half, phi_1, geo = toy_geometry(Wi, toy_probabilities(cfg))
        t_mean, t_std = (summarize(test[:, i], n, cfg.test_batches) if test is not None
                         else (math.nan, math.nan))
        out.append(ToyResult(
            config=cfg, final_loss=final, final_loss_std=std,
            curve=[(s, float(curve[k, i])) for k, s in enumerate(rec.curve_steps)],
            W=Wi, b=bi, phi_half=phi_half, phi_1=phi_1, geometry=geo, seconds=seconds,
            backend=backend, precision=precision, device=str(device),
            steps_per_second=cfg.steps / seconds if seconds > 0 else math.nan,
            group_size=len(configs), diverged=not finite, versions=versions,
            test_loss=t_mean, test_loss_std=t_std))
    return out
