"""Reduced-precision operands of the Triton toy kernels: tf32 rounding (against an
independent oracle), the "already rounded" flags, and bf16 / tf32 / tf32x3 against the fp64
gold. CPU: the Triton interpreter, which truncates tf32 operands as the tensor cores do."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_toy_triton import CUDA, DEV, check, loss_grad_ref, make_models

triton = pytest.importorskip("triton")
toy = pytest.importorskip("superkern.triton.toy")
toy_common = pytest.importorskip("superkern.triton._toy_common")
tl = triton.language


@pytest.mark.parametrize("precision,tol", [("tf32", 5e-3), ("tf32x3", 5e-6), ("bf16", 3e-2)])
def test_loss_grad_precisions_run(precision, tol):
    """tf32 and bf16 round the operands (a visible difference from the fp64 gold, within the
    format's error); tf32x3 recovers fp32."""
    W, b, p, group, seeds, scale = make_models(ms=(6, 16), M=16, G=1)
    x = toy.toy_sample_triton(p, seeds, 4, 32)
    loss, dW, db = toy.toy_loss_grad_triton(W, b, p, group, seeds, 4, 32, scale, precision, x)
    L0, dW0, db0 = loss_grad_ref(W, b, x, group, scale)
    check(f"{precision} loss", loss, L0, tol)
    check(f"{precision} dW", dW, dW0, tol * 3)
    check(f"{precision} db", db, db0, tol * 3)
    if precision != "tf32x3":  # the rounding really happens (fp32 products agree to ~1e-7)
        rel = float((dW.cpu().double() - dW0).abs().max() / dW0.abs().max())
        assert rel > 2e-5, f"{precision}: dW within {rel:.1e} of fp64, operands not rounded"


@triton.jit
def _round_kernel(x_ptr, y_ptr, n, BF16: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + offs, mask=offs < n)
    y = toy_common.bf16_rne(v) if BF16 else toy_common.tf32_rne(v)
    tl.store(y_ptr + offs, y, mask=offs < n)


@pytest.mark.parametrize("fmt, drop", [("tf32", 13), ("bf16", 16)])
def test_operands_rounded_to_nearest_even(fmt, drop):
    """The toy kernels' in-register tf32 and bf16 rounding against an independent oracle
    (frexp, then numpy's round-half-even to 24 - drop significant bits) on random values,
    exact ties of both parities and values that carry; inf and NaN (the GPU's canonical
    0x7FFFFFFF too) pass unchanged. The overlap engine's host rounding (tf32) and torch's
    fp32 -> bf16 cast, the GPU's, must give the same bits; the interpreter's cast truncates,
    which this rounding replaces there."""
    from superkern.ops.overlap_ref import round_to_precision

    g = torch.Generator().manual_seed(5)
    base = torch.randn(1000, generator=g) * torch.logspace(-20, 20, 1000)
    low, half = (1 << drop) - 1, 1 << (drop - 1)
    bits = base.view(torch.int32) & ~low
    ties = torch.cat([bits | half, (bits | (1 << drop)) | half, bits | low]).view(torch.float32)
    finite = torch.cat([base, ties, -ties, torch.tensor([0.0, -0.0, 1.0])])
    special = torch.tensor([0x7FFFFFFF, -1, 0x7F800001, 0x7F800000, -8388608],
                           dtype=torch.int32).view(torch.float32)   # NaNs, inf, -inf
    x = torch.cat([finite, special]).to(DEV)
    y = torch.empty_like(x)
    _round_kernel[(triton.cdiv(x.numel(), 256),)](x, y, x.numel(), BF16=fmt == "bf16",
                                                   BLOCK=256)
    y = y.cpu()
    xd = finite.double().numpy()
    q = np.ldexp(1.0, np.frexp(xd)[1] - (24 - drop))
    want = torch.from_numpy(np.round(xd / q) * q).float()
    assert torch.equal(y[:finite.numel()].view(torch.int32), want.view(torch.int32))
    assert not torch.equal(want, finite)  # ties moved
    assert torch.equal(y[finite.numel():].view(torch.int32), special.view(torch.int32))
    host = (round_to_precision(x.cpu(), "tf32") if fmt == "tf32"
            else finite.to(torch.bfloat16).float())
    assert torch.equal(host.view(torch.int32), y[:host.numel()].view(torch.int32))


@pytest.mark.skipif(CUDA, reason="interpreter only: the flags' check patches a jit global")
@pytest.mark.parametrize("path", ["fused", "stored"])
def test_tf32_flags_name_only_rounded_operands(monkeypatch, path):
    """_mm skips the tf32 rounding of operands flagged as already rounded. In the interpreter
    it truncates like the tensor cores, so an operand flagged but never rounded would be
    truncated, a bias no tolerance test sees. A run that ignores the flags must therefore give
    the same bits, and one wrongly flagged operand must not."""
    W, b, p, group, seeds, scale = make_models(ms=(6, 16), M=16, G=1)
    x = toy.toy_sample_triton(p, seeds, 4, 32)

    def run():
        return toy.toy_loss_grad_triton(W, b, p, group, seeds, 4, 32, scale, "tf32", x,
                                        path=path)

    flagged = run()
    monkeypatch.setattr(toy_common, "IGNORE_RND_FLAGS", tl.constexpr(True))
    for name, f, a in zip(("loss", "dW", "db"), flagged, run()):
        assert torch.equal(f, a), f"{name}: a tf32 flag names an operand that is not rounded"
    if path == "fused":  # the check can fail: the fused kernels' roundings skipped, flags kept
        import superkern.triton._toy_fused as F
        monkeypatch.setattr(toy_common, "IGNORE_RND_FLAGS", tl.constexpr(False))
        monkeypatch.setattr(F, "tf32_op", _no_rounding)
        wrong = run()
        assert not all(torch.equal(f, w) for f, w in zip(flagged, wrong))


@triton.jit
def _no_rounding(x, PREC: tl.constexpr):
    return x
