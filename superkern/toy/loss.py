"""Forward, loss and gradients of the toy model y = ReLU(x W W^T + b).

``toy_loss_ref`` is the autograd reference (the authors' ``relu(x @ W @ W.T + b)`` and
``MSELoss()``). ``toy_loss_grad_torch`` is the instance-batched forward + manual backward of the
torch engine; its math, for one instance with s = loss_scale::

    h = x W  (B, M);   z = h W^T + b  (B, n);   y = ReLU(z);   r = y - x
    loss = mean(r^2) over B and n (unscaled; the reported loss is loss * n)
    dz = (2 s / (B n)) r * [z > 0]
    db = sum_B dz;     dW = dz^T h + x^T (dz W)

(W appears twice in z; the mask uses y > 0, which is autograd's ReLU rule at z = 0.)
"""
from __future__ import annotations

from typing import Optional

import torch

# Instances per chunk are limited so that each (chunk, B, n) intermediate stays below this many
# elements (fp32: 1 GiB); the engine needs about four of them at once.
CHUNK_ELEMS = 1 << 28


def toy_forward_ref(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y = ReLU(x W W^T + b) for W (n, m), b (n), x (B, n) (differentiable)."""
    return torch.relu(x @ W @ W.T + b)


def toy_loss_ref(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Training loss: mean over batch and features of (y - x)^2 (torch ``MSELoss()``)."""
    return torch.nn.functional.mse_loss(toy_forward_ref(W, b, x), x)


def toy_loss_grad_torch(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor,
                        loss_scale: torch.Tensor, group: Optional[torch.Tensor] = None,
                        chunk_elems: int = CHUNK_ELEMS
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Instance-batched loss and gradients (no autograd).

    Args:
        W: (I, n, M), b: (I, n), same dtype.
        x: (G, B, n) batches; instance i uses ``x[group[i]]`` (``group=None``: G == I, x[i]).
        loss_scale: (I,) multiplier of the back-propagated loss.
        chunk_elems: memory bound on each (chunk, B, n) intermediate.

    Returns:
        ``(loss (I,), dW (I, n, M), db (I, n))``: the unscaled training loss and the gradients
        of ``loss_scale * loss``.
    """
    I, n, M = W.shape
    B = x.shape[1]
    if b.shape != (I, n) or x.shape[2] != n or loss_scale.shape != (I,):
        raise ValueError(f"shape mismatch: W {tuple(W.shape)}, b {tuple(b.shape)}, x "
                         f"{tuple(x.shape)}, loss_scale {tuple(loss_scale.shape)}")
    if group is None and x.shape[0] != I:
        raise ValueError(f"x has {x.shape[0]} batches for {I} instances and no group map")
    loss = torch.empty(I, dtype=W.dtype, device=W.device)
    dW = torch.empty_like(W)
    db = torch.empty_like(b)
    step = max(1, chunk_elems // max(1, B * n))
    coef = (loss_scale.to(W.dtype) * (2.0 / (B * n))).view(I, 1, 1)
    for s in range(0, I, step):
        e = min(I, s + step)
        Wc = W[s:e]
        xc = x[s:e] if group is None else x.index_select(0, group[s:e])
        h = torch.bmm(xc, Wc)                                        # (c, B, M)
        y = torch.baddbmm(b[s:e].unsqueeze(1), h, Wc.transpose(1, 2)).relu_()
        active = y > 0
        r = y.sub_(xc)                                               # y - x, in place
        loss[s:e] = r.square().sum(dim=(1, 2)) / (B * n)
        dz = r.mul_(active).mul_(coef[s:e])                          # (c, B, n)
        db[s:e] = dz.sum(dim=1)
        torch.bmm(dz.transpose(1, 2), h, out=dW[s:e])
        dW[s:e] += torch.bmm(xc.transpose(1, 2), torch.bmm(dz, Wc))
    return loss, dW, db
