"""The modified AdamW (decay / growth first, then Adam) and the learning-rate schedules."""
import math

import pytest
import torch

from superkern.toy import ToyConfig
from superkern.toy.optim import ToyAdamW
from superkern.toy.schedule import lr_at, lr_multiplier, lr_multipliers
from tests.utils import assert_allclose


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_decay_branch_hand_computed():
    W = _rand(5, 3)
    b = _rand(5, seed=1)
    W0 = W.double().clone()
    opt = ToyAdamW(W, b, gamma=0.7)
    opt.step(W, b, torch.zeros_like(W), torch.zeros_like(b), lr_W=0.05, lr_b=0.3)
    # Zero gradients: Adam's update is 0 / (0 + eps) = 0, only the decay acts.
    assert_allclose("W after decay", W, W0 * (1 - 0.05 * 0.7), rtol=1e-6)
    assert torch.equal(b, _rand(5, seed=1)), "b must not decay"


def test_growth_branch_hand_computed():
    W = torch.tensor([[2.0, 0.0, 0.0], [0.3, 0.4, 0.0], [0.6, 0.0, 0.8], [1e-3, 0.0, 0.0]])
    b = torch.zeros(4)
    opt = ToyAdamW(W, b, gamma=-1.0)
    lr = 0.1
    opt.step(W, b, torch.zeros_like(W), torch.zeros_like(b), lr_W=lr, lr_b=lr)
    want = []
    for row, r in [((2.0, 0, 0), 2.0), ((0.3, 0.4, 0), 0.5), ((0.6, 0, 0.8), 1.0),
                   ((1e-3, 0, 0), 1e-3)]:
        f = 1.0 + lr * (-1.0) * (1.0 - 1.0 / (r + 1e-8))
        want.append([v * f for v in row])
    assert_allclose("W after growth", W, torch.tensor(want, dtype=torch.float64), rtol=2e-6,
                    atol=1e-12)
    norms = torch.linalg.vector_norm(W, dim=1)
    assert norms[0] < 2.0 and norms[1] > 0.5, f"norms must move towards 1: {norms.tolist()}"
    assert abs(float(norms[2]) - 1.0) < 1e-6, "a unit row is a fixed point"


def test_full_step_hand_computed_two_steps():
    """Decay with the current lr, then bias-corrected Adam, for t = 1, 2 (fp64 formulas)."""
    torch.manual_seed(0)
    W, b = _rand(4, 2), _rand(4, seed=1)
    g1, g2 = _rand(4, 2, seed=2), _rand(4, 2, seed=3)
    gb1, gb2 = _rand(4, seed=4), _rand(4, seed=5)
    gamma, b1, b2, eps = 0.3, 0.9, 0.999, 1e-8
    w, bb = W.double().clone(), b.double().clone()
    m = v = torch.zeros_like(w)
    mb = vb = torch.zeros_like(bb)
    opt = ToyAdamW(W, b, gamma)
    for t, (g, gb, lr, lrb) in enumerate([(g1, gb1, 0.01, 0.02), (g2, gb2, 0.005, 0.04)], 1):
        opt.step(W, b, g, gb, lr, lrb)
        w = w * (1 - lr * gamma)
        m = b1 * m + (1 - b1) * g.double()
        v = b2 * v + (1 - b2) * g.double() ** 2
        w = w - lr * (m / (1 - b1 ** t)) / (torch.sqrt(v / (1 - b2 ** t)) + eps)
        mb = b1 * mb + (1 - b1) * gb.double()
        vb = b2 * vb + (1 - b2) * gb.double() ** 2
        bb = bb - lrb * (mb / (1 - b1 ** t)) / (torch.sqrt(vb / (1 - b2 ** t)) + eps)
        assert_allclose(f"W at t={t}", W, w, rtol=1e-5, atol=1e-7)
        assert_allclose(f"b at t={t}", b, bb, rtol=1e-5, atol=1e-7)


def test_adam_matches_torch_adam_at_gamma_zero():
    W, b = _rand(6, 3), _rand(6, seed=1)
    Wt = W.clone().requires_grad_(True)
    bt = b.clone().requires_grad_(True)
    ref = torch.optim.Adam([{"params": [Wt]}, {"params": [bt]}], lr=1.0, betas=(0.9, 0.999),
                           eps=1e-8, foreach=False)
    opt = ToyAdamW(W, b, gamma=0.0)
    for t in range(1, 9):
        gW, gb = _rand(6, 3, seed=10 + t) * 10 ** (t % 3 - 1), _rand(6, seed=30 + t)
        lr_W, lr_b = 0.01 * t, 0.003 / t
        ref.param_groups[0]["lr"], ref.param_groups[1]["lr"] = lr_W, lr_b
        Wt.grad, bt.grad = gW.clone(), gb.clone()
        ref.step()
        opt.step(W, b, gW, gb, lr_W, lr_b)
        assert_allclose(f"W vs torch Adam, t={t}", W, Wt.detach(), rtol=1e-6, atol=1e-7)
        assert_allclose(f"b vs torch Adam, t={t}", b, bt.detach(), rtol=1e-6, atol=1e-7)


def test_instance_axis_matches_single_and_keeps_padding_zero():
    gammas = [-1.0, -0.3, 0.0, 0.5]
    ms = [3, 5, 2, 5]
    n, M = 7, 5
    Ws, bs, opts = [], [], []
    Wb = torch.zeros(len(gammas), n, M)
    bb = torch.zeros(len(gammas), n)
    for i, (g, m) in enumerate(zip(gammas, ms)):
        Ws.append(_rand(n, m, seed=i))
        bs.append(_rand(n, seed=100 + i))
        opts.append(ToyAdamW(Ws[-1], bs[-1], g))
        Wb[i, :, :m], bb[i] = Ws[-1], bs[-1]
    ob = ToyAdamW(Wb, bb, gammas)
    for t in range(1, 6):
        lr_W = torch.tensor([0.01, 0.02, 0.03, 0.04], dtype=torch.float64) / t
        lr_b = lr_W * 2
        gWb = torch.zeros_like(Wb)
        gbb = torch.zeros_like(bb)
        for i, m in enumerate(ms):
            gW, gb = _rand(n, m, seed=1000 * t + i), _rand(n, seed=2000 * t + i)
            gWb[i, :, :m], gbb[i] = gW, gb
            opts[i].step(Ws[i], bs[i], gW, gb, float(lr_W[i]), float(lr_b[i]))
        ob.step(Wb, bb, gWb, gbb, lr_W, lr_b)
        for i, m in enumerate(ms):
            assert_allclose(f"instance {i} W, t={t}", Wb[i, :, :m], Ws[i], rtol=1e-6, atol=1e-8)
            assert_allclose(f"instance {i} b, t={t}", bb[i], bs[i], rtol=1e-6, atol=1e-8)
            assert bool((Wb[i, :, m:] == 0).all()), f"padding of instance {i} left zero"
            assert bool((ob.mW[i, :, m:] == 0).all() and (ob.vW[i, :, m:] == 0).all())


def _authors_get_lr_small(step, lr, n_steps, warmup_steps=2000):
    """Transcription of the authors' exp-10 get_lr (step counted from 0 there)."""
    step = step + 1
    min_lr = 0.05 * lr
    if warmup_steps < n_steps:
        if step < warmup_steps:
            return lr * step / warmup_steps
        return (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps)
                                                   / (n_steps - warmup_steps))) + min_lr
    return (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / n_steps)) + min_lr


def _authors_get_lr_large(step, n_steps, warmup_ratio=0.05):
    warmup_steps = int(n_steps * warmup_ratio)
    step = step + 1
    if step < warmup_steps:
        return step / warmup_steps
    return 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps)
                                      / (n_steps - warmup_steps))) + 0.05


def test_small_schedule_known_values():
    c = ToyConfig(m=10)
    assert lr_at(c, 1)[0] == pytest.approx(1e-2 / 2000, rel=1e-12)
    assert lr_at(c, 1000)[0] == pytest.approx(5e-3, rel=1e-12)
    assert lr_at(c, 2000)[0] == pytest.approx(1e-2, rel=1e-12)
    assert lr_at(c, 11000)[0] == pytest.approx((1e-2 + 5e-4) / 2, rel=1e-12)
    assert lr_at(c, 20000)[0] == pytest.approx(5e-4, rel=1e-12)
    assert lr_at(c, 20000)[1] == lr_at(c, 20000)[0]
    tab = lr_multipliers(20000, 2000)
    for s in (1, 2, 1999, 2000, 2001, 7777, 19999, 20000):
        assert 1e-2 * float(tab[s - 1]) == pytest.approx(_authors_get_lr_small(s - 1, 1e-2, 20000),
                                                         rel=1e-13), s
    # Shorter than the warm-up: the authors' code drops the warm-up (pure cosine).
    short = ToyConfig(m=10, steps=500)
    for s in (1, 250, 500):
        assert lr_at(short, s)[0] == pytest.approx(_authors_get_lr_small(s - 1, 1e-2, 500),
                                                   rel=1e-13), s
    assert lr_at(short, 500)[0] == pytest.approx(5e-4, rel=1e-12)


def test_large_schedule_known_values():
    c = ToyConfig(preset="large", m=64)
    lw, lb = 0.02 * (8 / 64) ** 0.25, 2 / 64
    assert lr_at(c, 2000) == pytest.approx((lw, lb), rel=1e-12)
    assert lr_at(c, 40000) == pytest.approx((0.05 * lw, 0.05 * lb), rel=1e-12)
    assert lr_at(c, 1000) == pytest.approx((0.5 * lw, 0.5 * lb), rel=1e-12)
    for steps in (40000, 20000, 333):
        cc = ToyConfig(preset="large", m=64, steps=steps)
        for s in sorted({1, steps // 20, steps // 20 + 1, steps // 2, steps}):
            assert lr_at(cc, s)[0] == pytest.approx(lw * _authors_get_lr_large(s - 1, steps),
                                                    rel=1e-13), (steps, s)
    assert lr_multiplier(5, 10, 0, schedule="constant") == 1.0
    with pytest.raises(ValueError, match="outside 1..10"):
        lr_multiplier(0, 10, 2)
