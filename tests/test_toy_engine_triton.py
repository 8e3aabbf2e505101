"""The engine's triton backend against its torch backend, replaying the same batches.

The fused kernels (superkern/triton/toy.py) draw x from their own Philox stream, so the two
backends are compared step by step on the x that ``toy_sample_triton`` returns. Runs on CUDA,
or on CPU under TRITON_INTERPRET=1 (tests/conftest.py) with tiny shapes. Skipped while the
kernel module is missing.
"""
import pytest
import torch

from superkern.toy import ToyConfig, train_many
from superkern.toy.backend import triton_toy
from superkern.toy.batched import BatchedTrainer
from superkern.toy.config import ADAM_BETA1, ADAM_BETA2, ADAM_EPS
from superkern.toy.loss import toy_loss_grad_torch
from superkern.toy.optim import ToyAdamW
from tests.utils import assert_allclose

tri, why = triton_toy()
pytestmark = pytest.mark.skipif(tri is None, reason=f"triton toy kernels unavailable: {why}")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _configs(steps=3):
    kw = dict(preset=None, n=32, steps=steps, batch=16, log_every=1, backend="triton")
    return [ToyConfig(m=4, gamma=-1.0, seed=0, **kw),
            ToyConfig(m=6, gamma=0.5, seed=0, **kw),
            ToyConfig(m=5, gamma=0.0, seed=1, loss_scale=100.0, **kw)]


def test_loss_grad_replayed_x_matches_torch():
    tr = BatchedTrainer(_configs(), DEV, backend="triton", triton_mod=tri)
    x = tri.toy_sample_triton(tr.p, tr.seeds, 1, tr.B)
    assert x.shape == (tr.G, tr.B, tr.n) and x.dtype == torch.float32
    got = tri.toy_loss_grad_triton(tr.W, tr.b, tr.p, tr.group.to(torch.int32), tr.seeds, 1,
                                   tr.B, tr.loss_scale, "fp32", x)
    want = toy_loss_grad_torch(tr.W, tr.b, x, tr.loss_scale, tr.group)
    for name, g, w in zip(("loss", "dW", "db"), got, want):
        assert_allclose(f"{name} triton vs torch", g, w, rtol=1e-4, atol=1e-6)
    # The fused kernel with x=None draws the same x as toy_sample_triton.
    fused = tri.toy_loss_grad_triton(tr.W, tr.b, tr.p, tr.group.to(torch.int32), tr.seeds, 1,
                                     tr.B, tr.loss_scale, "fp32")
    assert_allclose("fused loss vs replayed", fused[0], got[0], rtol=1e-5, atol=1e-7)


def test_adamw_step_matches_torch_optimizer():
    g = torch.Generator().manual_seed(0)
    I, n, M = 4, 9, 5
    W = torch.randn(I, n, M, generator=g).to(DEV)
    b = torch.randn(I, n, generator=g).to(DEV)
    dW = torch.randn(I, n, M, generator=g).to(DEV)
    db = torch.randn(I, n, generator=g).to(DEV)
    gammas = [-1.0, -0.2, 0.0, 0.7]
    ref = ToyAdamW(W, b, gammas)
    st = ToyAdamW(W, b, gammas)
    W2, b2 = W.clone(), b.clone()
    lr_W = torch.tensor([0.01, 0.02, 0.03, 0.04], dtype=torch.float64, device=DEV)
    lr_b = lr_W * 3
    for s in (1, 2):
        ref.step(W, b, dW * s, db * s, lr_W, lr_b)
        tri.toy_adamw_step_triton(W2, b2, dW * s, db * s, st.mW, st.vW, st.mb, st.vb,
                                  lr_W.float(), lr_b.float(), st.gamma.float(), s,
                                  ADAM_BETA1, ADAM_BETA2, ADAM_EPS)
        assert_allclose(f"W step {s}", W2, W, rtol=1e-5, atol=1e-7)
        assert_allclose(f"b step {s}", b2, b, rtol=1e-5, atol=1e-7)


def test_engine_backends_agree_on_replayed_batches():
    configs = _configs(steps=3)
    t_tri = BatchedTrainer(configs, DEV, backend="triton", triton_mod=tri)
    t_ref = BatchedTrainer([c.replace(backend="torch") for c in configs], DEV)
    t_ref.sample = lambda s: tri.toy_sample_triton(t_ref.p, t_ref.seeds, s, t_ref.B)
    for _ in range(3):
        lt, lr = t_tri.step(), t_ref.step()
        assert_allclose(f"loss at step {t_tri.s}", lt, lr, rtol=1e-4, atol=1e-6)
    assert_allclose("W after 3 steps", t_tri.W, t_ref.W, rtol=1e-3, atol=1e-5)
    assert bool((t_tri.W[0, :, 4:] == 0).all()), "padding must stay zero on triton too"


def test_train_many_runs_on_triton():
    """The public path (in-kernel data) trains the same models as the torch engine replaying
    the kernels' batches, and reports the same losses."""
    configs = _configs(steps=3)
    res = train_many(configs, device=DEV)
    ref = BatchedTrainer([c.replace(backend="torch") for c in configs], DEV)
    ref.sample = lambda s: tri.toy_sample_triton(ref.p, ref.seeds, s, ref.B)
    want = ref.results(ref.run())
    for c, r, w in zip(configs, res, want):
        assert r.backend == "triton" and r.W.shape == (32, c.m)
        assert_allclose(f"W (m={c.m})", r.W, w.W, rtol=1e-3, atol=1e-5)
        assert_allclose(f"b (m={c.m})", r.b, w.b, rtol=1e-3, atol=1e-5)
        assert r.final_loss == pytest.approx(w.final_loss, rel=1e-4)


def test_train_many_group_by_policies_agree_on_triton():
    """The Philox stream is keyed by (data seed, step), so a data group split across launches
    draws the same batches: every grouping policy gives the same models (up to rounding)."""
    kw = dict(preset=None, n=32, steps=3, batch=16, log_every=1, backend="triton")
    configs = [ToyConfig(m=3, gamma=-1.0, seed=0, **kw),     # bucket 16, data group A
               ToyConfig(m=20, gamma=0.5, seed=0, **kw),     # bucket 32, data group A
               ToyConfig(m=8, gamma=0.0, seed=1, **kw)]      # bucket 16
    runs = {g: train_many(configs, device=DEV, group_by=g) for g in ("none", "bucket", "width")}
    assert [r.group_size for r in runs["bucket"]] == [2, 1, 2]
    for g in ("bucket", "width"):
        for c, a, r in zip(configs, runs["none"], runs[g]):
            assert r.backend == "triton" and r.W.shape == (c.n, c.m)
            assert_allclose(f"W ({g}, m={c.m})", r.W, a.W, rtol=1e-5, atol=1e-6)
            assert_allclose(f"b ({g}, m={c.m})", r.b, a.b, rtol=1e-5, atol=1e-6)
            assert_allclose(f"curve ({g}, m={c.m})", torch.tensor([v for _, v in r.curve]),
                            torch.tensor([v for _, v in a.curve]), rtol=1e-5, atol=1e-7)


def test_launch_limits_checked_before_any_work(monkeypatch):
    """A group the kernels cannot take fails in planning, not after other groups trained."""
    import superkern.toy.api as api
    from superkern.toy.api import plan_groups

    small = ToyConfig(preset=None, n=16, m=2, steps=3, batch=4, backend="triton")
    huge = ToyConfig(preset=None, n=65536, m=1, steps=3, batch=32768, backend="triton")
    started = []
    monkeypatch.setattr(api, "BatchedTrainer", lambda *a, **k: started.append(a))
    with pytest.raises(ValueError, match=r"configs\[1\].*batch \* n = 32768 \* 65536"):
        train_many([small, huge], device=DEV)
    assert started == []
    # The stored path's width chunks on grid axis 1 (with the GPU's 64-wide chunks here).
    from superkern.triton.toy import launch_limits

    monkeypatch.setenv("SUPERKERN_TRITON_TOY", "bmc=64")
    why = launch_limits(100, 500, 64 * 65535 + 1, 1, DEV)
    assert why is not None and "needs 65536 width chunks of 64" in why, why
    assert launch_limits(100, 500, 64 * 65535, 1, DEV) is None
    many = [small.replace(seed=s) for s in range(65537)]  # past a launch's 65535 models
    sizes = [len(idx) for _, idx in plan_groups(many, torch.device(DEV))]
    assert sizes == [65535, 2]


def test_auto_never_picks_the_interpreter_and_says_so():
    if torch.cuda.is_available():
        pytest.skip("auto picks triton on CUDA")
    bf16 = ToyConfig(preset=None, n=16, m=2, steps=2, batch=4, precision="bf16")
    with pytest.raises(ValueError, match="does not use the CPU interpreter; pass "
                                         "backend='triton'"):
        train_many([bf16], device="cpu")


def test_interpreter_flag_is_latched_when_the_kernels_are_defined():
    """Setting TRITON_INTERPRET after the kernels were compiled-mode does not make CPU
    tensors look runnable (that would crash inside Triton)."""
    import subprocess
    import sys

    code = ("import os, superkern.triton.toy\n"
            "os.environ['TRITON_INTERPRET'] = '1'\n"
            "from superkern.backend import triton_interpreting\n"
            "from superkern.toy import ToyConfig, train\n"
            "assert not triton_interpreting()\n"
            "try:\n"
            "    train(ToyConfig(preset=None, n=16, m=2, steps=2, batch=4, backend='triton'),"
            " device='cpu')\n"
            "except ValueError as exc:\n"
            "    assert 'set before the kernels are imported' in str(exc), exc\n"
            "    print('refused')\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "refused" in out.stdout, out.stderr[-2000:]


def test_entry_capacity_follows_p_not_its_address():
    """The per-group entry capacity is cached per p. A p whose memory once held another p
    (same address, in-place version 0) must get its own: the earlier, smaller E's cap drops
    entries of the larger E's batches (NaN losses, truncated gradients)."""
    import numpy as np

    import superkern.triton.toy as T
    from superkern.triton._toy_sample import nnz_cap_from_p

    buf = np.full((1, 32), 1.0 / 32, dtype=np.float32)  # E = 1
    small = T._auto_cap(torch.from_numpy(buf), 32)
    buf[:] = 6.0 / 32  # E = 6 in the same memory, no torch version bump
    p = torch.from_numpy(buf)
    assert p.data_ptr() == buf.ctypes.data and p._version == 0
    assert T._auto_cap(p, 32) == nnz_cap_from_p(p, 32) > small


def test_a_run_after_another_trains_as_it_does_alone():
    from superkern.toy import train

    a = ToyConfig(preset=None, backend="triton", n=32, m=4, batch=32, steps=4, log_every=1)
    c = a.replace(E=6.0, alpha=0.0)
    alone = train(c, device=DEV)
    train(a, device=DEV)
    after = train(c, device=DEV)
    assert not after.diverged and after.curve == alone.curve
