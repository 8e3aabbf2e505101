"""Triton toy kernels past their first tile, on CPU: n = 150 features span three sampler
feature tiles of 64 (the last ragged) and five product tiles of 32, so the count and fill
kernels carry positions from one feature tile to the next. Also the empty cases: an all-zero
batch (no active entries) and no models at all. The references are those of
tests/test_toy_triton.py (fp64 autograd and a numpy Philox), independent of the package.
"""
from __future__ import annotations

import pytest
import torch

from tests.test_toy_triton import check_each, each_err, loss_grad_ref, make_models, sample_ref

toy = pytest.importorskip("superkern.triton.toy")

DEV = "cuda" if torch.cuda.is_available() else "cpu"
N, B = 150, 40
MS = (5, 16, 9)


@pytest.fixture(scope="module")
def case():
    W, b, p, group, seeds, scale = make_models(ms=MS, M=16, n=N, G=2, E=2.0)
    assert toy.toy_config(16, W.device).bf < N  # the point of the test: several tiles
    x = toy.toy_sample_triton(p, seeds, 3, B)
    return W, b, p, group, seeds, scale, x


def test_sampler_over_several_feature_tiles_is_the_philox_stream(case):
    W, b, p, group, seeds, scale, x = case
    want = sample_ref(p.cpu(), seeds.cpu(), 3, B)
    assert torch.equal(x.cpu(), want)
    assert int((want[:, :, 64:] != 0).sum()) > 0  # features past the first tile are drawn


@pytest.mark.parametrize("path", ["fused", "stored"])
def test_loss_grad_over_several_tiles_vs_fp64(case, path):
    W, b, p, group, seeds, scale, x = case
    gold = loss_grad_ref(W, b, x, group, scale)
    t32 = loss_grad_ref(W, b, x, group, scale, torch.float32)
    drawn = toy.toy_loss_grad_triton(W, b, p, group, seeds, 3, B, scale, "fp32", path=path)
    given = toy.toy_loss_grad_triton(W, b, p, group, seeds, 3, B, scale, "fp32", x, path=path)
    for name, d, g in zip(("loss", "dW", "db"), drawn, given):
        assert torch.equal(d, g), f"{name}: in-kernel data differ from the sampled x"
    for name, got, want, mine in zip(("loss", "dW", "db"), given, gold, t32):
        check_each(name, got, want, max(4 * each_err(mine, want), 1e-6))
    for i, m in enumerate(MS):
        assert bool((given[1][i, :, m:] == 0).all()), f"instance {i}: padded columns nonzero"


@pytest.mark.parametrize("path", ["fused", "stored"])
def test_all_zero_batch(case, path):
    """p = 0: no active entry anywhere. x = 0 gives y = ReLU(b), so dW is exactly zero and db
    and the loss come from the bias alone."""
    W, b, p, group, seeds, scale, _ = case
    zero_p = torch.zeros_like(p)
    loss, dW, db = toy.toy_loss_grad_triton(W, b, zero_p, group, seeds, 3, B, scale, "fp32",
                                            path=path)
    L0, _, db0 = loss_grad_ref(W, b, torch.zeros(p.shape[0], B, N), group, scale)
    assert bool((dW == 0).all())
    check_each("loss", loss[:, None], L0[:, None], 1e-6)
    check_each("db", db, db0, 1e-6)


def test_no_models(case):
    W, b, p, group, seeds, scale, _ = case
    loss, dW, db = toy.toy_loss_grad_triton(
        torch.zeros(0, N, 16, device=DEV), torch.zeros(0, N, device=DEV), p,
        torch.zeros(0, dtype=torch.int32, device=DEV), seeds, 1, B,
        torch.ones(0, device=DEV))
    assert loss.shape == (0,) and dW.shape == (0, N, 16) and db.shape == (0, N)
