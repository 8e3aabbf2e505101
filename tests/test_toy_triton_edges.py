"""Toy-model Triton kernels at the edges the main file's small cases leave out: widths that
span several width chunks (also with the GPU's tile sizes, run by the interpreter), the
smallest and empty shapes, identical models in one launch, and probabilities out of range.
References and helpers are those of tests/test_toy_triton.py (fp64 torch, written there)."""
from __future__ import annotations

import pytest
import torch

from tests.test_toy_triton import (DEV, check_each, each_err, loss_grad_ref, make_models,
                                   run_adamw_vs_fp64, sample_ref, toy)

GPU_TILES = "bb=64,bn=64,bk=64,bmc=64"  # superkern.triton._toy_common.toy_config on CUDA


def _check_vs_fp64(W, b, x, group, scale, got, ms):
    gold = loss_grad_ref(W, b, x, group, scale)
    t32 = loss_grad_ref(W, b, x, group, scale, torch.float32)  # torch's own fp32 error
    for name, g, want, mine in zip(("loss", "dW", "db"), got, gold, t32):
        check_each(name, g, want, max(4 * each_err(mine, want), 1e-6))
    for i, m in enumerate(ms):
        assert bool((got[1][i, :, m:] == 0).all()), f"instance {i}: padded columns nonzero"


@pytest.mark.parametrize("tiles", ["interpreter", "gpu"])
@pytest.mark.parametrize("path", ["fused", "stored"])
def test_wide_models_span_several_width_chunks(path, tiles, monkeypatch):
    """Widths 40, 100 and 70 padded to 100: the stored path walks 7 width chunks of 16 (2 of
    64 with the GPU's tiles), n = 150 and B = 130 leave ragged feature and batch tiles."""
    if tiles == "gpu":
        monkeypatch.setenv("SUPERKERN_TRITON_TOY", GPU_TILES)
    ms = (40, 100, 70)
    W, b, p, group, seeds, scale = make_models(ms=ms, M=100, n=150, G=2)
    x = toy.toy_sample_triton(p, seeds, 5, 130)
    got = toy.toy_loss_grad_triton(W, b, p, group, seeds, 5, 130, scale, "fp32", x,
                                   path=path)
    _check_vs_fp64(W, b, x, group, scale, got, ms)
    drawn = toy.toy_loss_grad_triton(W, b, p, group, seeds, 5, 130, scale, path=path)
    assert all(torch.equal(a, c) for a, c in zip(got, drawn)), "in-kernel data != sampled x"


def test_adamw_rows_wider_than_one_chunk():
    """The growth branch (gamma < 0) scales by the whole row's norm: widths up to 100 span
    two 64-wide chunks of the optimizer kernel."""
    run_adamw_vs_fp64((5, 100, 70), 3, 33, 100, torch.tensor([1e-2, 2e-2, 5e-3]),
                      torch.tensor([1e-2, 1e-3, 0.1]), torch.tensor([-1.0, -0.5, 0.7]), 2,
                      seed=4)


@pytest.mark.parametrize("path", ["fused", "stored"])
def test_one_feature_one_sample_width_one(path):
    ms = (1,)
    W, b, p, group, seeds, scale = make_models(ms=ms, M=1, n=1, G=1, E=2.0)
    assert float(p) == 1.0  # clamped: the feature is always active
    x = toy.toy_sample_triton(p, seeds, 3, 1)
    assert torch.equal(x.cpu(), sample_ref(p.cpu(), seeds.cpu(), 3, 1)) and float(x) > 0
    got = toy.toy_loss_grad_triton(W, b, p, group, seeds, 3, 1, scale, path=path)
    _check_vs_fp64(W, b, x, group, scale, got, ms)


@pytest.mark.parametrize("path", ["fused", "stored"])
def test_identical_models_in_one_launch_get_identical_results(path):
    W, b, p, group, seeds, scale = make_models(ms=(7, 7, 7), M=7, n=30, G=1, seed=6)
    W[2], b[2], scale[:] = W[0], b[0], 1.0
    loss, dW, db = toy.toy_loss_grad_triton(W, b, p, group, seeds, 2, 40, scale, path=path)
    assert float(loss[0]) == float(loss[2]) and float(loss[0]) != float(loss[1])
    assert torch.equal(dW[0], dW[2]) and torch.equal(db[0], db[2])


def test_empty_shapes_and_a_zero_batch():
    seeds = torch.tensor([1], dtype=torch.int64, device=DEV)
    W, b = torch.zeros(2, 0, 4, device=DEV), torch.zeros(2, 0, device=DEV)
    group, scale = torch.zeros(2, dtype=torch.int32, device=DEV), torch.ones(2, device=DEV)
    loss, dW, db = toy.toy_loss_grad_triton(W, b, torch.zeros(1, 0, device=DEV), group, seeds,
                                            1, 8, scale)
    assert loss.tolist() == [0.0, 0.0] and dW.shape == (2, 0, 4) and db.shape == (2, 0)
    E = torch.zeros(0, 5, 4, device=DEV)  # no models: the optimizer step does nothing
    e, z = torch.zeros(0, 5, device=DEV), torch.zeros(0, device=DEV)
    toy.toy_adamw_step_triton(E, e, E, e, E, E, e, e, z, z, z, 1)
    W, b, p, group, seeds, scale = make_models(ms=(3,), M=4, n=10, G=1)
    with pytest.raises(ValueError, match="batch=0 must be >= 1"):
        toy.toy_loss_grad_triton(W, b, p, group, seeds, 1, 0, scale)
    with pytest.raises(ValueError, match="batch=0 must be >= 1"):
        toy.toy_sample_triton(p, seeds, 1, 0)


@pytest.mark.parametrize("value", [1.5, -0.5, float("nan")])
def test_probabilities_out_of_range_are_named(value):
    W, b, p, group, seeds, scale = make_models(ms=(3,), M=4, n=10, G=1)
    p[0, 6] = value
    want = rf"p\[0, 6\] = {value} is not a probability in \[0, 1\] \(1 of 10 entries are not\)"
    with pytest.raises(ValueError, match=want):
        toy.toy_sample_triton(p, seeds, 1, 8)
    with pytest.raises(ValueError, match=want):
        toy.toy_loss_grad_triton(W, b, p, group, seeds, 1, 8, scale)
    with pytest.raises(ValueError, match=want):
        toy.toy_nnz_cap(p, 8)


def test_cpu_tensors_without_the_interpreter_are_a_clear_error():
    """Compiled (no TRITON_INTERPRET), a CPU launch would fail inside Triton with "0 active
    drivers"; every launch guard says what to do instead."""
    import os
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("compiled Triton has a driver here")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import torch\nfrom superkern.triton import toy\n"
            "toy.toy_sample_triton(torch.full((1, 8), 0.3), torch.tensor([1]), 1, 4)\n")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0
    assert ("ValueError: superkern's Triton kernels run cpu tensors only in Triton's "
            "interpreter: set TRITON_INTERPRET=1") in run.stderr, run.stderr[-2000:]
