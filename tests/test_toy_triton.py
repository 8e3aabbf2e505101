"""Triton toy-model kernels (superkern.triton.toy) against fp64 torch references written here.

CPU: Triton's interpreter at small sizes (n = 40, B = 48, three models of widths 5, 16, 9
padded to M = 16), both kernel paths. GPU (marked gpu): the paper's sizes and the fast
precisions. Every reference is a few lines of torch in fp64, independent of the package.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")
toy = pytest.importorskip("superkern.triton.toy")

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"


# ----------------------------------------------------------------------------- references

def philox_ref(seed: int, c0, c1, c2, c3):
    """Philox-4x32-10 in numpy (first two outputs), key = the 64-bit seed split lo/hi."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & 0xFFFFFFFF for c in (c0, c1, c2, c3))
    k0, k1 = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p2 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = ((p2 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p2 & np.uint64(0xFFFFFFFF),
                          (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & np.uint64(0xFFFFFFFF))
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c0.astype(np.uint32), c1.astype(np.uint32)


def uniform_ref(r: np.ndarray) -> np.ndarray:
    x = r.view(np.int32).astype(np.int64)
    x = np.where(x < 0, -x - 1, x)
    return x.astype(np.float32) * np.float32(4.6566127342e-10)


def sample_ref(p: torch.Tensor, seeds, step: int, B: int) -> torch.Tensor:
    """The documented stream: counter (i, s, step, 0), key seeds[g]."""
    G, n = p.shape
    s, i = np.meshgrid(np.arange(B), np.arange(n), indexing="ij")
    out = np.zeros((G, B, n), dtype=np.float32)
    for g in range(G):
        r1, r2 = philox_ref(int(seeds[g]), i, s, np.full_like(i, step), np.zeros_like(i))
        u1, u2 = uniform_ref(r1), uniform_ref(r2)
        out[g] = np.where(u1 < p[g].cpu().numpy()[None, :], np.float32(2) * u2, np.float32(0))
    return torch.from_numpy(out)


def loss_grad_ref(W, b, x, group, loss_scale, dtype=torch.float64):
    """Autograd (fp64 gold by default): loss (I,), grads of loss_scale * loss; x (G, B, n)."""
    W = W.detach().cpu().to(dtype).requires_grad_(True)
    b = b.detach().cpu().to(dtype).requires_grad_(True)
    X = x.cpu().to(dtype)[group.long().cpu()]
    h = X @ W
    y = torch.relu(h @ W.transpose(1, 2) + b[:, None, :])
    loss = ((y - X) ** 2).mean((1, 2))
    (loss * loss_scale.cpu().to(dtype)).sum().backward()
    return loss.detach(), W.grad, b.grad


def adamw_ref(W, b, dW, db, st, lr_W, lr_b, gamma, t, b1=0.9, b2=0.999, eps=1e-8):
    """SPEC 2 AdamW in fp64, in place on W, b and st = [mW, vW, mb, vb] (all fp64)."""
    for i in range(W.shape[0]):
        lr, g = float(lr_W[i]), float(gamma[i])
        if g >= 0:
            W[i] *= 1 - lr * g
        else:
            r = W[i].norm(dim=1, keepdim=True)
            W[i] += lr * g * W[i] * (1 - 1 / (r + 1e-8))
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    for P, grad, m, v, lr in ((W, dW, st[0], st[1], lr_W.double()[:, None, None]),
                              (b, db, st[2], st[3], lr_b.double()[:, None])):
        m.mul_(b1).add_((1 - b1) * grad)
        v.mul_(b2).add_((1 - b2) * grad * grad)
        P -= lr / bc1 * m / (v.sqrt() / math.sqrt(bc2) + eps)


def rel_err(got, want) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


def check(name, got, want, tol):
    e = rel_err(got, want)
    assert e <= tol, f"{name}: max abs err / max |want| = {e:.3e} > {tol:.1e}"


def check_each(name, got, want, tol):
    """rel_err per instance (leading axis): a model whose loss scale makes its gradients 100x
    smaller than its neighbours' is held to the same relative accuracy."""
    for i in range(want.shape[0]):
        e = rel_err(got[i], want[i])
        assert e <= tol, f"{name}[{i}]: max abs err / max |want| = {e:.3e} > {tol:.1e}"


def each_err(got, want) -> float:
    """The largest per-instance rel_err."""
    return max(rel_err(got[i], want[i]) for i in range(want.shape[0]))


def make_models(ms=(5, 16, 9), M=16, n=40, G=2, E=2.0, seed=0, device=DEV):
    gen = torch.Generator().manual_seed(seed)
    I = len(ms)
    W = torch.zeros(I, n, M)
    for i, m in enumerate(ms):
        W[i, :, :m] = torch.randn(n, m, generator=gen) / math.sqrt(m)
    b = 0.3 * torch.randn(I, n, generator=gen)
    # Power-law-ish probabilities summing to E, distinct per group.
    p = torch.stack([(torch.arange(1, n + 1.0) ** -(0.5 + g)) for g in range(G)])
    p = (p / p.sum(1, keepdim=True) * E).clamp(max=1.0).float()
    group = torch.tensor([i % G for i in range(I)], dtype=torch.int32)
    seeds = torch.tensor([1234 + 7 * g + (g << 40) for g in range(G)], dtype=torch.int64)
    scale = torch.tensor([1.0, 100.0, 3.0, 0.5][:I] + [1.0] * max(0, I - 4))
    return [t.to(device) for t in (W, b, p, group, seeds, scale)]


# ----------------------------------------------------------------------------- sampler

def test_sampler_is_the_documented_philox_stream():
    p = torch.tensor([[0.0, 0.1, 0.5, 0.9, 1.0, 0.3, 0.05] * 3,
                      [0.2] * 21], dtype=torch.float32)
    seeds = torch.tensor([5, (1 << 62) + 12345], dtype=torch.int64)
    for step in (0, 17, 999_999):
        x = toy.toy_sample_triton(p.to(DEV), seeds.to(DEV), step, 40).cpu()
        want = sample_ref(p, seeds, step, 40)
        bad = (x != want)
        assert not bool(bad.any()), (f"step {step}: {int(bad.sum())} of {bad.numel()} differ; "
                                     f"first {torch.nonzero(bad)[0].tolist()}")
    assert bool((x[0, :, 0] == 0).all()) and bool((x[0, :, 4] > 0).all())   # p = 0 and p = 1


def test_sampler_statistics():
    """Frequencies match p (binomial z-scores) and magnitudes are U(0, 2) (KS test)."""
    from scipy import stats
    n, B = 24, 2048
    p = torch.linspace(0.01, 0.9, n).reshape(1, n).float()
    x = toy.toy_sample_triton(p.to(DEV), torch.tensor([99], device=DEV), 3, B).cpu()[0]
    freq = (x != 0).double().mean(0)
    pd = p[0].double()
    z = (freq - pd) / (pd * (1 - pd) / B).sqrt()
    assert float(z.abs().max()) < 5.0, f"frequency z-scores {z.tolist()}"
    v = x[x != 0].double().numpy()
    ks = stats.kstest(v, stats.uniform(loc=0, scale=2).cdf)
    assert ks.pvalue > 1e-4, f"values vs U(0,2): KS stat {ks.statistic:.4f} p {ks.pvalue:.2e}"
    assert abs(v.mean() - 1.0) < 5 * math.sqrt(1 / 3 / v.size), f"mean {v.mean()}"


def test_sampler_determinism_and_independence():
    p = torch.full((2, 16), 0.4, device=DEV)
    seeds = torch.tensor([7, 8], device=DEV)
    a = toy.toy_sample_triton(p, seeds, 5, 32)
    assert torch.equal(a, toy.toy_sample_triton(p, seeds, 5, 32)), "same (seed, step) differs"
    b = toy.toy_sample_triton(p, seeds, 6, 32)
    assert float((a != b).double().mean()) > 0.3, "steps 5 and 6 give (nearly) the same batch"
    assert float((a[0] != a[1]).double().mean()) > 0.3, "seeds 7 and 8 give the same batch"
    # A longer batch extends, not reshuffles, the stream: sample s is the same in both.
    assert torch.equal(a, toy.toy_sample_triton(p, seeds, 5, 48)[:, :32])


# ----------------------------------------------------------------------------- loss / grad

@pytest.mark.parametrize("path", ["fused", "stored"])
def test_loss_grad_explicit_x_vs_fp64(path):
    W, b, p, group, seeds, scale = make_models()
    B = 48
    x = toy.toy_sample_triton(p, seeds, 3, B)
    loss, dW, db = toy.toy_loss_grad_triton(W, b, p, group, seeds, 3, B, scale, "fp32", x,
                                            path=path)
    gold = loss_grad_ref(W, b, x, group, scale)
    # torch's own fp32 error at the same sizes sets the scale of what is acceptable.
    t32 = loss_grad_ref(W, b, x, group, scale, torch.float32)
    for name, got, want, mine in zip(("loss", "dW", "db"), (loss, dW, db), gold, t32):
        check_each(name, got, want, max(4 * each_err(mine, want), 1e-6))
    for i, m in enumerate((5, 16, 9)):
        pad = dW[i, :, m:]
        assert bool((pad == 0).all()), f"instance {i}: padded columns got {pad.abs().max()}"


@pytest.mark.parametrize("path", ["fused", "stored"])
def test_loss_grad_in_kernel_data_equals_sampled_x(path):
    W, b, p, group, seeds, scale = make_models()
    B = 48
    got = toy.toy_loss_grad_triton(W, b, p, group, seeds, 11, B, scale, path=path)
    x = toy.toy_sample_triton(p, seeds, 11, B)
    want = toy.toy_loss_grad_triton(W, b, p, group, seeds, 11, B, scale, x=x, path=path)
    for name, g, w in zip(("loss", "dW", "db"), got, want):
        assert torch.equal(g, w), f"{name}: max diff {float((g - w).abs().max()):.3e}"
    again = toy.toy_loss_grad_triton(W, b, p, group, seeds, 11, B, scale, path=path)
    assert all(torch.equal(g, a) for g, a in zip(got, again)), "not deterministic"


def test_fused_and_stored_paths_agree():
    W, b, p, group, seeds, scale = make_models(ms=(3, 7), M=7, G=1, E=1.0, seed=3)
    f = toy.toy_loss_grad_triton(W, b, p, group, seeds, 2, 32, scale, path="fused")
    s = toy.toy_loss_grad_triton(W, b, p, group, seeds, 2, 32, scale, path="stored")
    for name, a, c in zip(("loss", "dW", "db"), f, s):
        check(name, a, c, 2e-6)


def test_stored_path_in_chunks_of_models_is_exact(monkeypatch):
    """The stored path bounds its (I, B, n) buffer by running chunks of models: three
    models in chunks of two give bit-identical loss and gradients."""
    from superkern.triton import _toy_stored
    W, b, p, group, seeds, scale = make_models(ms=(5, 16, 9), M=16, G=2)
    whole = toy.toy_loss_grad_triton(W, b, p, group, seeds, 3, 48, scale, path="stored")
    monkeypatch.setattr(_toy_stored, "Y_ELEMS", 2 * 48 * 40)
    chunked = toy.toy_loss_grad_triton(W, b, p, group, seeds, 3, 48, scale, path="stored")
    for name, a, c in zip(("loss", "dW", "db"), whole, chunked):
        assert torch.equal(a, c), f"{name} differs when models run in chunks of two"


def test_too_small_nnz_cap_gives_nan_loss():
    W, b, p, group, seeds, scale = make_models(ms=(4, 4), M=4, G=2, E=3.0)
    loss, _, _ = toy.toy_loss_grad_triton(W, b, p, group, seeds, 1, 32, scale, nnz_cap=5)
    assert bool(torch.isnan(loss).all()), f"loss {loss.tolist()} with 5 slots for ~96 entries"


@pytest.mark.parametrize("path", ["fused", "stored"])
def test_a_nan_weight_gives_a_nan_loss(path):
    """A diverged model must report NaN, as torch.relu does, on both paths and precisions
    (compiled, a plain max(z, 0) returns 0 for NaN z; tests/test_toy_triton_compile.py checks
    the PTX). The other model of the launch stays finite and exact."""
    W, b, p, group, seeds, scale = make_models(ms=(4, 4), M=4, G=1, E=2.0)
    clean = toy.toy_loss_grad_triton(W, b, p, group, seeds, 1, 32, scale, path=path)
    W[0, 3, 1] = float("nan")
    for precision in ("fp32", "tf32", "bf16"):  # the interpreter emulates all three
        loss, dW, db = toy.toy_loss_grad_triton(W, b, p, group, seeds, 1, 32, scale,
                                                precision, path=path)
        assert math.isnan(float(loss[0])), f"{precision}: loss {float(loss[0])} of a NaN model"
        if precision == "fp32":
            assert float(loss[1]) == float(clean[0][1]) and torch.equal(dW[1], clean[1][1])


def test_argument_errors_name_the_numbers():
    W, b, p, group, seeds, scale = make_models(ms=(4,), M=4, G=1)
    with pytest.raises(ValueError, match="precision"):
        toy.toy_loss_grad_triton(W, b, p, group, seeds, 1, 8, scale, "fp16")
    with pytest.raises(ValueError, match=r"\(1, 40\)"):
        toy.toy_loss_grad_triton(W, b[:, :3], p, group, seeds, 1, 8, scale)
    with pytest.raises(ValueError, match="x must be"):
        toy.toy_loss_grad_triton(W, b, p, group, seeds, 1, 8, scale, x=torch.zeros(1, 9, 40))
    if not CUDA:
        with pytest.raises(ValueError, match=r"group values must lie in \[0, 1\), got \[2, 2\]"):
            toy.toy_loss_grad_triton(W, b, p, group + 2, seeds, 1, 8, scale)
    with pytest.raises(ValueError, match="seeds"):
        toy.toy_sample_triton(p, seeds.int(), 0, 8)
    with pytest.raises(ValueError, match="step"):
        toy.toy_adamw_step_triton(W, b, W, b, W, W, b, b, scale, scale, scale, 0)
    # more models or data groups than a launch's grid axis holds (65535): refused up front
    I = 65536
    Wb, bb, sb = torch.zeros(I, 1, 1), torch.zeros(I, 1), torch.ones(I)
    with pytest.raises(ValueError, match="I=65536 models exceed the grid limit 65535"):
        toy.toy_loss_grad_triton(Wb, bb, torch.full((1, 1), 0.5), torch.zeros(I, dtype=torch.int32),
                                 torch.zeros(1, dtype=torch.int64), 1, 8, sb)
    with pytest.raises(ValueError, match="I=65536 models exceed the grid limit 65535"):
        toy.toy_adamw_step_triton(Wb, bb, Wb, bb, Wb, Wb, bb, bb, sb, sb, sb, 1)
    with pytest.raises(ValueError, match="G=65536 data groups exceed the grid limit 65535"):
        toy.toy_sample_triton(torch.full((I, 1), 0.5), torch.zeros(I, dtype=torch.int64), 1, 8)
    seed1, g1 = torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int32)
    big = 65535 * 64 + 1  # more feature tiles (64 wide on CPU) than a grid axis holds
    with pytest.raises(ValueError, match=f"n={big} needs 65536 feature tiles of 64"):
        toy.toy_sample_triton(torch.full((1, big), 0.5), seed1, 1, 1)
    big = 65535 * 32 + 1  # more batch tiles (32 rows on CPU)
    with pytest.raises(ValueError, match=f"batch={big} needs 65536 batch tiles of 32"):
        toy.toy_loss_grad_triton(torch.zeros(1, 1, 1), torch.zeros(1, 1), torch.full((1, 1), 0.5),
                                 g1, seed1, 1, big, torch.ones(1))


# ----------------------------------------------------------------------------- optimizer

def _opt_state(I, n, M, ms, seed=0):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(I, n, M, generator=gen) * 0.5
    dW = torch.randn(I, n, M, generator=gen)
    mW = 0.01 * torch.randn(I, n, M, generator=gen)
    vW = 1e-4 * torch.rand(I, n, M, generator=gen)
    for i, m in enumerate(ms):
        for t in (W, dW, mW, vW):
            t[i, :, m:] = 0
    b, db = torch.randn(I, n, generator=gen), torch.randn(I, n, generator=gen)
    mb, vb = 0.01 * torch.randn(I, n, generator=gen), 1e-4 * torch.rand(I, n, generator=gen)
    return W, b, dW, db, mW, vW, mb, vb


def run_adamw_vs_fp64(ms, I, n, M, lr_W, lr_b, gamma, steps, seed=0):
    """Apply the Triton optimizer step `steps` times with one fixed gradient beside the fp64
    reference, check every state tensor, and return the Triton weights."""
    W, b, dW, db, mW, vW, mb, vb = _opt_state(I, n, M, ms, seed=seed)
    Wd, bd = W.double(), b.double()
    st = [t.double() for t in (mW, vW, mb, vb)]
    dev = [t.to(DEV) for t in (W, b, dW, db, mW, vW, mb, vb)]
    for t in range(1, steps + 1):  # the same gradient each step: checks the step count too
        toy.toy_adamw_step_triton(*dev, lr_W.to(DEV), lr_b.to(DEV), gamma.to(DEV), t)
        adamw_ref(Wd, bd, dW.double(), db.double(), st, lr_W, lr_b, gamma, t)
    check("W", dev[0], Wd, 1e-6)
    check("b", dev[1], bd, 1e-6)
    for name, got, want in zip(("mW", "vW", "mb", "vb"), dev[4:], st):
        check(name, got, want, 1e-6)
    return dev[0]


def test_adamw_both_decay_branches_vs_fp64():
    ms = (5, 16, 9)
    W = run_adamw_vs_fp64(ms, 3, 40, 16, torch.tensor([1e-2, 2e-2, 5e-3]),
                          torch.tensor([1e-2, 1e-3, 0.1]), torch.tensor([-1.0, 0.7, 0.0]), 3)
    for i, m in enumerate(ms):
        assert bool((W[i, :, m:] == 0).all()), f"instance {i}: padding no longer zero"


def test_adamw_gamma_zero_is_torch_adam():
    I, n, M = 2, 12, 16
    W, b, dW, db, _, _, _, _ = _opt_state(I, n, M, (16, 16), seed=1)
    z = torch.zeros
    dev = [t.clone().to(DEV) for t in (W, b, dW, db)] + [z(I, n, M, device=DEV),
                                                         z(I, n, M, device=DEV),
                                                         z(I, n, device=DEV), z(I, n, device=DEV)]
    Wt, bt = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
    opt = torch.optim.Adam([Wt, bt], lr=3e-3, betas=(0.9, 0.999), eps=1e-8)
    lr = torch.full((I,), 3e-3, device=DEV)
    for t in range(1, 4):
        toy.toy_adamw_step_triton(*dev, lr, lr, torch.zeros(I, device=DEV), t)
        Wt.grad, bt.grad = dW.clone(), db.clone()
        opt.step()
    check("W vs torch.optim.Adam", dev[0], Wt, 1e-6)
    check("b vs torch.optim.Adam", dev[1], bt, 1e-6)


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize("path", ["fused", "stored"])
def test_fifty_steps_match_fp64_torch_loop(path):
    """Our loss_grad (drawing its own data) + AdamW vs an fp64 torch loop on replayed x."""
    W, b, p, group, seeds, scale = make_models(ms=(5, 12), M=16, n=24, G=1, E=1.0, seed=5)
    scale = torch.tensor([100.0, 100.0], device=DEV)
    B, steps = 32, 50
    lr_W = torch.tensor([1e-2, 2e-2], device=DEV)
    lr_b = torch.tensor([1e-2, 5e-3], device=DEV)
    gamma = torch.tensor([-1.0, 0.3], device=DEV)
    st = [torch.zeros_like(W), torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(b)]
    Wd, bd = W.double().cpu(), b.double().cpu()
    std = [t.double().cpu() for t in st]
    W, b = W.clone(), b.clone()
    losses, ref_losses = [], []
    for s in range(1, steps + 1):
        loss, dW, db = toy.toy_loss_grad_triton(W, b, p, group, seeds, s, B, scale, path=path)
        toy.toy_adamw_step_triton(W, b, dW, db, *st, lr_W, lr_b, gamma, s)
        x = toy.toy_sample_triton(p, seeds, s, B)
        L0, dW0, db0 = loss_grad_ref(Wd, bd, x, group, scale)
        adamw_ref(Wd, bd, dW0, db0, std, lr_W.cpu(), lr_b.cpu(), gamma.cpu(), s)
        losses.append(loss.cpu())
        ref_losses.append(L0)
    check("loss trajectory", torch.stack(losses), torch.stack(ref_losses), 1e-4)
    check("W after 50 steps", W, Wd, 1e-4)
    check("b after 50 steps", b, bd, 1e-4)
    assert float(torch.stack(losses)[-5:].mean()) < float(torch.stack(losses)[:5].mean())


# ----------------------------------------------------------------------------- GPU

def _gpu_case(n, ms, M, B, G, seed=0):
    W, b, p, group, seeds, scale = make_models(ms=ms, M=M, n=n, G=G, E=1.0, seed=seed,
                                               device="cuda")
    return W, b, p, group, seeds, scale


def _ref_gpu(W, b, x, group, scale):
    """fp64 reference on the GPU (the CPU one is too slow at these sizes)."""
    W = W.detach().double().requires_grad_(True)
    b = b.detach().double().requires_grad_(True)
    X = x.double()[group.long()]
    y = torch.relu((X @ W) @ W.transpose(1, 2) + b[:, None, :])
    loss = ((y - X) ** 2).mean((1, 2))
    (loss * scale.double()).sum().backward()
    return loss.detach(), W.grad, b.grad


@pytest.mark.gpu
@pytest.mark.parametrize("n,ms,M,B", [(1000, (39, 10, 100, 63), 100, 2048),
                                      (1000, (39, 39), 64, 2048),
                                      (10240, (256, 100), 256, 2048)])
@pytest.mark.parametrize("precision,tol", [("fp32", 2e-5), ("tf32x3", 2e-5), ("tf32", 5e-3),
                                           ("bf16", 3e-2)])
def test_gpu_realistic_vs_fp64(n, ms, M, B, precision, tol):
    W, b, p, group, seeds, scale = _gpu_case(n, ms, M, B, G=2)
    x = toy.toy_sample_triton(p, seeds, 7, B)
    # the documented stream (a corner of it at n = 10240: counters are per (feature, sample))
    assert torch.equal(x[:, :64, :1024].cpu(), sample_ref(p[:, :1024].cpu(), seeds.cpu(), 7, 64))
    got = toy.toy_loss_grad_triton(W, b, p, group, seeds, 7, B, scale, precision)
    again = toy.toy_loss_grad_triton(W, b, p, group, seeds, 7, B, scale, precision, x)
    for name, g, a in zip(("loss", "dW", "db"), got, again):
        assert torch.equal(g, a), f"{name}: in-kernel data vs sampled x differ"
    L0, dW0, db0 = _ref_gpu(W, b, x, group, scale)
    check(f"{precision} loss", got[0], L0, tol)
    check(f"{precision} dW", got[1], dW0, tol * 5)
    check(f"{precision} db", got[2], db0, tol * 5)
    for i, m in enumerate(ms):
        assert bool((got[1][i, :, m:] == 0).all()), f"instance {i}: padded columns nonzero"


@pytest.mark.gpu
def test_gpu_sampler_statistics_large():
    n, B = 10240, 8192
    p = torch.arange(1, n + 1.0, device="cuda") ** -1.2
    p = (p / p.sum()).float()[None]
    x = toy.toy_sample_triton(p, torch.tensor([3], device="cuda"), 40_000, B)[0]
    freq = (x != 0).double().mean(0)
    pd = p[0].double()
    z = (freq - pd) / (pd * (1 - pd) / B).sqrt()
    assert float(z.abs().max()) < 6.0, f"max |z| {float(z.abs().max()):.2f}"
    assert abs(float(x[x != 0].double().mean()) - 1.0) < 0.02


@pytest.mark.gpu
def test_gpu_training_matches_fp64_loop():
    W, b, p, group, seeds, _ = _gpu_case(1000, (39, 15), 64, 2048, G=1, seed=2)
    scale = torch.tensor([1.0, 1.0], device="cuda")
    lr = torch.tensor([1e-2, 1e-2], device="cuda")
    gamma = torch.tensor([-1.0, 0.5], device="cuda")
    st = [torch.zeros_like(W), torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(b)]
    Wd, bd = W.double(), b.double()
    std = [t.double() for t in st]
    for s in range(1, 101):
        loss, dW, db = toy.toy_loss_grad_triton(W, b, p, group, seeds, s, 2048, scale)
        toy.toy_adamw_step_triton(W, b, dW, db, *st, lr, lr, gamma, s)
        x = toy.toy_sample_triton(p, seeds, s, 2048)
        L0, dW0, db0 = _ref_gpu(Wd, bd, x, group, scale)
        adamw_ref(Wd, bd, dW0, db0, std, lr, lr, gamma, s)
    check("W after 100 steps", W, Wd, 1e-3)
    check("b after 100 steps", b, bd, 1e-3)
