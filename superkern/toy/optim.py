"""The authors' modified AdamW (exp/adamw.py), written out so its math is explicit.

One step, with the step counter t counted from 1 and the current scheduled learning rates:

1. decay, W only, with lr_W (b has none):
   - gamma >= 0: ``W <- W * (1 - lr_W gamma)``
   - gamma < 0:  ``W_i <- W_i + lr_W * (gamma * W_i * (1 - 1 / (||W_i|| + eps)))`` per row: a
     pull of every row norm towards 1 (eps = Adam's eps = 1e-8, as in the authors' code).
2. Adam with bias correction, in torch's arithmetic order::

       m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2
       denom = sqrt(v) / sqrt(1 - beta2^t) + eps
       param <- param - (lr / (1 - beta1^t)) * m / denom

Works on one model (W (n, m), b (n)) or an instance axis (W (I, n, M), b (I, n)) with one
learning rate and gamma per instance. Zero-padded columns of W get zero gradient, so m, v and
the update stay exactly zero there, and both decay branches keep them zero.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch

from superkern.toy.config import ADAM_BETA1, ADAM_BETA2, ADAM_EPS

Scalars = Union[float, Sequence[float], torch.Tensor]


def _per_instance(v: Scalars, I: int, device) -> torch.Tensor:
    """(I,) float64 tensor on ``device`` from a scalar, sequence or tensor."""
    t = torch.as_tensor(v, dtype=torch.float64).to(device)
    if t.dim() == 0:
        t = t.expand(I)
    if t.shape != (I,):
        raise ValueError(f"expected a scalar or {I} values, got shape {tuple(t.shape)}")
    return t


class ToyAdamW:
    """State and step of the modified AdamW for W and b (one model or an instance axis).

    Args:
        W: (n, m) or (I, n, M) fp32 parameters (updated in place by :meth:`step`).
        b: (n,) or (I, n).
        gamma: weight decay (>= 0) or growth (< 0): a scalar or one value per instance.

    Attributes:
        mW, vW, mb, vb: Adam moments (same shapes as W and b). t: steps taken.
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor, gamma: Scalars,
                 betas: tuple[float, float] = (ADAM_BETA1, ADAM_BETA2), eps: float = ADAM_EPS):
        if W.dim() not in (2, 3) or b.dim() != W.dim() - 1 or b.shape != W.shape[:-1]:
            raise ValueError(f"W must be (n, m) or (I, n, M) with b (n,) or (I, n); got W "
                             f"{tuple(W.shape)}, b {tuple(b.shape)}")
        self.batched = W.dim() == 3
        self.I = W.shape[0] if self.batched else 1
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.gamma = _per_instance(gamma, self.I, W.device)
        g = self.gamma.cpu()
        # Decided once on the host: no per-step device sync to pick a branch.
        self.any_neg, self.all_neg = bool((g < 0).any()), bool((g < 0).all())
        self.gamma32 = self.gamma.to(torch.float32).view(self.I, 1, 1)
        self.neg_mask = (self.gamma < 0).view(self.I, 1, 1)
        self.mW, self.vW = torch.zeros_like(W), torch.zeros_like(W)
        self.mb, self.vb = torch.zeros_like(b), torch.zeros_like(b)
        self.t = 0

    def decay_(self, W3: torch.Tensor, lr_W: torch.Tensor) -> None:
        """Step 1 on W viewed as (I, n, M), lr_W (I,) float64."""
        if not self.all_neg:
            mul = (1.0 - lr_W * self.gamma).to(torch.float32).view(self.I, 1, 1)
            if not self.any_neg:
                W3.mul_(mul)
                return
        r = torch.linalg.vector_norm(W3, dim=-1, keepdim=True).add_(self.eps)
        grown = W3 + lr_W.to(torch.float32).view(self.I, 1, 1) * (
            self.gamma32 * W3 * (1.0 - 1.0 / r))
        if self.all_neg:
            W3.copy_(grown)
        else:
            W3.copy_(torch.where(self.neg_mask, grown, W3 * mul))

    def _adam_(self, p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
               lr: torch.Tensor) -> None:
        bc1 = 1.0 - self.beta1 ** self.t
        bc2 = 1.0 - self.beta2 ** self.t
        m.mul_(self.beta1).add_(g, alpha=1.0 - self.beta1)
        v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
        denom = (v.sqrt() / math.sqrt(bc2)).add_(self.eps)
        shape = (self.I,) + (1,) * (p.dim() - 1) if self.batched else ()
        neg_step = (-(lr / bc1)).to(torch.float32).view(shape)
        p.add_(neg_step * m / denom)

    @torch.no_grad()
    def step(self, W: torch.Tensor, b: torch.Tensor, gW: torch.Tensor, gb: torch.Tensor,
             lr_W: Scalars, lr_b: Scalars) -> None:
        """One step in place: decay W with lr_W, then Adam on W (lr_W) and b (lr_b).

        Args:
            W, b: the parameters this state was built for. gW, gb: their gradients.
            lr_W, lr_b: current learning rates, scalars or (I,) (float64 preferred).
        """
        self.t += 1
        lr_W = _per_instance(lr_W, self.I, W.device)
        lr_b = _per_instance(lr_b, self.I, W.device)
        self.decay_(W if self.batched else W.unsqueeze(0), lr_W)
        if not self.batched:
            lr_W, lr_b = lr_W[0], lr_b[0]
        self._adam_(W, gW, self.mW, self.vW, lr_W)
        self._adam_(b, gb, self.mb, self.vb, lr_b)
