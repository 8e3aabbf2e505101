"""Manual forward/backward of the instance-batched engine against autograd and gradcheck."""
import pytest
import torch

from superkern.toy.loss import toy_loss_grad_torch, toy_loss_ref
from tests.utils import assert_allclose


def _inputs(I, n, M, B, G=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(I, n, M, generator=g, dtype=dtype) / M ** 0.5
    b = torch.randn(I, n, generator=g, dtype=dtype) * 0.5
    G = I if G is None else G
    u = torch.rand(G, B, n, generator=g, dtype=dtype) < 0.3
    x = u * torch.rand(G, B, n, generator=g, dtype=dtype) * 2
    return W, b, x


class _ManualLoss(torch.autograd.Function):
    """Wraps the manual backward so that gradcheck tests it directly."""

    @staticmethod
    def forward(ctx, W, b, x, scale):
        loss, dW, db = toy_loss_grad_torch(W, b, x, scale)
        ctx.save_for_backward(dW, db, scale)
        return loss

    @staticmethod
    def backward(ctx, gout):
        dW, db, scale = ctx.saved_tensors
        k = (gout / scale)  # the manual gradients are of scale * loss
        return dW * k[:, None, None], db * k[:, None], None, None


@pytest.mark.parametrize("I, n, M, B", [(1, 1, 1, 1), (3, 7, 2, 5), (2, 33, 7, 9)])
def test_manual_grad_matches_autograd_fp64(I, n, M, B):
    W, b, x = _inputs(I, n, M, B, seed=I * n)
    scale = torch.tensor([1.0, 100.0, 3.0][:I], dtype=torch.float64)
    loss, dW, db = toy_loss_grad_torch(W, b, x, scale)
    for i in range(I):
        Wi = W[i].clone().requires_grad_(True)
        bi = b[i].clone().requires_grad_(True)
        li = toy_loss_ref(Wi, bi, x[i])
        (li * scale[i]).backward()
        assert_allclose(f"loss[{i}]", loss[i], li.detach(), rtol=1e-12, atol=1e-15)
        assert_allclose(f"dW[{i}]", dW[i], Wi.grad, rtol=1e-10, atol=1e-13)
        assert_allclose(f"db[{i}]", db[i], bi.grad, rtol=1e-10, atol=1e-13)


def test_gradcheck_reference_and_manual():
    W, b, x = _inputs(2, 6, 3, 4, seed=5)
    W.requires_grad_(True)
    b.requires_grad_(True)
    scale = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(_ManualLoss.apply, (W, b, x, scale), eps=1e-6, atol=1e-7)
    W0 = W[0].detach().clone().requires_grad_(True)
    b0 = b[0].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w, bb: toy_loss_ref(w, bb, x[0]), (W0, b0),
                                    eps=1e-6, atol=1e-7)


def test_groups_and_chunking_match_per_instance_batches():
    """Shared batches via the group map, and instance chunks, give the same numbers."""
    I, G, n, M, B = 5, 2, 9, 4, 6
    W, b, x = _inputs(I, n, M, B, G=G, dtype=torch.float32, seed=9)
    group = torch.tensor([1, 0, 1, 1, 0])
    scale = torch.ones(I)
    want = toy_loss_grad_torch(W, b, x[group], scale)
    for chunk in (B * n, 2 * B * n, 10 ** 9):
        got = toy_loss_grad_torch(W, b, x, scale, group=group, chunk_elems=chunk)
        for name, g, w in zip(("loss", "dW", "db"), got, want):
            assert_allclose(f"{name} (chunk {chunk})", g, w, rtol=1e-6, atol=1e-7)


def test_zero_padded_columns_get_zero_gradient():
    W, b, x = _inputs(2, 8, 5, 7, dtype=torch.float32, seed=3)
    W[0, :, 3:] = 0.0
    loss, dW, db = toy_loss_grad_torch(W, b, x, torch.ones(2))
    assert bool((dW[0, :, 3:] == 0).all()), float(dW[0, :, 3:].abs().max())
    l3, dW3, db3 = toy_loss_grad_torch(W[:1, :, :3].contiguous(), b[:1], x[:1], torch.ones(1))
    assert_allclose("padded loss", loss[:1], l3, rtol=1e-6)
    assert_allclose("padded dW", dW[0, :, :3], dW3[0], rtol=1e-5, atol=1e-7)
    assert_allclose("padded db", db[0], db3[0], rtol=1e-5, atol=1e-7)


def test_shape_errors():
    W, b, x = _inputs(2, 4, 3, 5)
    with pytest.raises(ValueError, match="shape mismatch"):
        toy_loss_grad_torch(W, b[:, :3], x, torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="no group map"):
        toy_loss_grad_torch(W, b, x[:1], torch.ones(2, dtype=torch.float64))
