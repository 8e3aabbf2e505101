"""ToyConfig presets, validation, run ids, and the feature frequencies p (SPEC section 2)."""
import json
import math

import numpy as np
import pytest
import torch

from superkern.toy import ToyConfig, toy_probabilities
from superkern.toy.config import data_seed


def test_small_preset_fills_spec_numbers():
    c = ToyConfig(m=39, gamma=-1.0)
    assert (c.n, c.batch, c.steps, c.warmup) == (1000, 2048, 20000, 2000), c
    assert (c.lr, c.lr_b, c.loss_scale, c.lr_min_ratio) == (1e-2, 1e-2, 1.0, 0.05), c
    assert (c.dist, c.alpha, c.E, c.precision) == ("power", 1.0, 1.0, "fp32"), c


@pytest.mark.parametrize("m", [8, 64, 1024])
def test_large_preset_fills_spec_numbers(m):
    c = ToyConfig(preset="large", m=m, gamma=0.1, dist="exponential")
    assert (c.n, c.batch, c.steps, c.warmup, c.loss_scale) == (10240, 8192, 40000, 2000, 100.0)
    assert c.lr == pytest.approx(0.02 * (8 / m) ** 0.25, rel=1e-15), c.lr
    assert c.lr_b == pytest.approx(2.0 / m, rel=1e-15), c.lr_b
    assert ToyConfig(preset="large", m=m).alpha == 1.2
    # The paper's prose setting: B = 2048, 20000 steps -> warm-up int(0.05 * 20000) = 1000.
    c2 = ToyConfig(preset="large", m=m, steps=20000, batch=2048)
    assert (c2.steps, c2.batch, c2.warmup) == (20000, 2048, 1000), c2


def test_explicit_fields_override_preset():
    c = ToyConfig(preset="large", m=64, lr=0.1, loss_scale=1.0, n=2000)
    assert (c.lr, c.lr_b, c.loss_scale, c.n) == (0.1, 2.0 / 64, 1.0, 2000), c
    c = ToyConfig(m=10, lr=3e-3)
    assert (c.lr, c.lr_b) == (3e-3, 3e-3), c       # small: b follows W's lr
    c = ToyConfig(m=10, lr=3e-3, lr_b=1e-3)
    assert (c.lr, c.lr_b) == (3e-3, 1e-3), c
    c = ToyConfig(preset=None, n=50, m=5, steps=10, batch=4)
    assert (c.lr, c.lr_b, c.warmup, c.loss_scale) == (1e-2, 1e-2, 0, 1.0), c
    # TOML has no null: "none" is None (it was refused, while the CLI took it)
    assert ToyConfig(preset="none", n=50, m=5, steps=10, batch=4) == c


def test_run_id_stable_and_sensitive():
    c = ToyConfig(m=39)
    assert c.run_id == "610177f5c29e2ab7", "run_id format changed: finished sweeps would rerun"
    explicit = ToyConfig(preset=None, n=1000, m=39, steps=20000, batch=2048, lr=1e-2,
                         warmup=2000, alpha=1.0)
    assert explicit.run_id == c.run_id
    assert ToyConfig(m=39, log_every=7).run_id == c.run_id
    zero = ToyConfig(m=39, gamma=0.0)  # -0.0 == 0.0: one model, one run id (it was two)
    assert ToyConfig(m=39, gamma=-0.0).run_id == zero.run_id
    assert str(ToyConfig(m=39, gamma=-0.0).gamma) == "0.0"
    for change in ({"seed": 1}, {"gamma": 0.1}, {"m": 40}, {"alpha": 1.1}, {"lr": 0.02},
                   {"precision": "tf32"}, {"steps": 19999}, {"E": 2.0}):
        assert c.replace(**change).run_id != c.run_id, change


def test_to_dict_round_trip():
    for c in (ToyConfig(m=10, gamma=-0.5, seed=3),
              ToyConfig(preset="large", m=16, dist="linear"),
              ToyConfig(preset=None, n=4, m=2, steps=5, batch=3, dist=(0.5, 0.25, 0.2, 0.05)),
              ToyConfig(m=10, density_s=0.5)):
        d = c.to_dict()
        back = ToyConfig.from_dict(json.loads(json.dumps(d)))
        assert back == c and back.run_id == c.run_id, (c, back)
    with pytest.raises(ValueError, match="unknown ToyConfig field"):
        ToyConfig.from_dict({"m": 3, "width": 4})


@pytest.mark.parametrize("kwargs, match", [
    (dict(m=1001), "m=1001 exceeds n=1000"),
    (dict(m=0), "m must be an integer >= 1"),
    (dict(m=5, n=0), "n must be an integer >= 1"),
    (dict(m=5, steps=0), "steps must be an integer >= 1"),
    (dict(m=5, steps=-3), "steps must be an integer >= 1"),
    (dict(m=5, batch=0), "batch must be an integer >= 1"),
    (dict(m=5, preset="medium"), "unknown preset 'medium'"),
    (dict(m=5, dist="zipf"), "unknown dist 'zipf'"),
    (dict(m=5, precision="fp8"), "unknown precision 'fp8'"),
    (dict(m=5, backend="cuda"), "unknown backend 'cuda'"),
    (dict(m=5, backend="torch", precision="bf16"), "needs the triton backend"),
    (dict(m=5, gamma=float("nan")), "gamma must be a finite number"),
    (dict(m=5, E=0.0), "E .* must be > 0"),
    (dict(m=5, lr=-1.0), "lr must be > 0"),
    (dict(m=5, density_s=1.5), r"density_s must lie in \[0, 1\]"),
    (dict(m=5, density_s=0.5, alpha=2.0), "starts from dist='power', alpha=1"),
    (dict(m=None), "m .* is required"),
    (dict(preset=None, m=5, n=10, steps=10), "batch is required"),
    (dict(preset=None, n=3, m=2, steps=1, batch=1, dist=(0.5, 0.5, 0.5)), "sums to 1.5"),
    (dict(preset=None, n=3, m=2, steps=1, batch=1, dist=(0.5, 0.5)), "2 entries but n=3"),
    (dict(preset=None, n=3, m=2, steps=1, batch=1, dist=(1.000000001, 0.0, 0.0),
          E=1.000000001), r"p\[0\] .* = 1.000000001 > 1 .*explicit\); every p_i must be <= 1"),
    (dict(preset=None, n=8, m=2, steps=1, batch=1, alpha=0.0, E=20.0),
     r"= 2.5 > 1 with E=20 \(dist=power, alpha=0.0\); lower E or alpha"),
])
def test_bad_configs_raise_with_numbers(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToyConfig(**kwargs)


def test_p_above_one_reports_index_value_and_E():
    # alpha = 2, E = 3 on n = 100: p_1 = 3 / H_100^(2) = 3 / 1.6350 = 1.835 > 1.
    with pytest.raises(ValueError) as err:
        ToyConfig(n=100, m=10, alpha=2.0, E=3.0)
    msg = str(err.value)
    assert "p[0]" in msg and "1.83" in msg and "E=3" in msg, msg
    # A later index: explicit p with a single bad entry.
    with pytest.raises(ValueError, match=r"p\[2\] \(feature 3 of n=3\) = 1.5"):
        toy_probabilities((3, (0.25, 0.25, 1.5), 1.0, 2.0))


def test_probabilities_match_formulas():
    n = 1000
    i = torch.arange(1, n + 1, dtype=torch.float64)
    for alpha in (0.0, 0.5, 1.0, 1.2, 2.0):
        p = toy_probabilities((n, "power", alpha))
        want = i ** -alpha / (i ** -alpha).sum()
        assert p.dtype == torch.float64 and p.shape == (n,)
        assert torch.allclose(p, want, rtol=1e-14, atol=0), (alpha, (p - want).abs().max())
    p = toy_probabilities((n, "exponential", 0.0, 2.0))
    e = torch.exp(-torch.arange(n, dtype=torch.float64) / 400)
    assert torch.allclose(p, 2.0 * e / e.sum(), rtol=1e-14)
    p = toy_probabilities((n, "linear", 0.0))
    lin = (n - torch.arange(n, dtype=torch.float64)) / n
    assert torch.allclose(p, lin / lin.sum(), rtol=1e-14)
    for E in (1.0, 2.5):
        assert float(toy_probabilities((n, "linear", 0.0, E)).sum()) == pytest.approx(E, 1e-13)


def test_density_sweep_spans_one_to_harmonic_number():
    n = 1000
    H = float((1.0 / torch.arange(1, n + 1, dtype=torch.float64)).sum())
    assert H == pytest.approx(7.4855, abs=1e-4)
    p0 = toy_probabilities((n, "power", 1.0, 1.0, 0.0))
    p1 = toy_probabilities((n, "power", 1.0, 1.0, 1.0))
    assert float(p0.sum()) == pytest.approx(1.0, 1e-13)
    assert float(p1.sum()) == pytest.approx(H, 1e-12)
    assert float(p1[0]) == pytest.approx(1.0, abs=1e-15) and bool((p1 <= 1.0).all())
    for s in (0.25, 0.5):
        ps = toy_probabilities(ToyConfig(m=10, density_s=s))
        assert float(ps.sum()) == pytest.approx(1.0 + s * (H - 1.0), 1e-12), s


def test_seeds_are_separate_streams():
    assert data_seed(0) != 0 and data_seed(0) != data_seed(1)
    assert all(0 <= data_seed(s) < 2 ** 63 for s in (0, 1, 2 ** 62))
    assert math.isfinite(ToyConfig(m=3).lr)


def test_replace_refills_preset_fields_only():
    c = ToyConfig(preset="large", m=8)
    d = c.replace(m=64)
    assert d.lr == pytest.approx(0.02 * (8 / 64) ** 0.25, rel=1e-15) and d.lr_b == 2 / 64, d
    assert d == ToyConfig(preset="large", m=64)
    assert c.replace(steps=20000).warmup == 1000
    e = ToyConfig(preset="large", m=8, lr=0.5).replace(m=64)
    assert (e.lr, e.lr_b) == (0.5, 2 / 64), e          # explicit lr kept, lr_b refilled
    f = ToyConfig(preset=None, m=1, steps=1, batch=1, dist=(0.5, 0.5))   # n from len(p)
    assert f.replace(dist=(0.2, 0.3, 0.5)).n == 3
    # Through JSON (a results row, a weights file): the same refilling.
    g = ToyConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert g == c and g.replace(m=64) == d and g.replace(steps=20000).warmup == 1000
    h = ToyConfig.from_dict(json.loads(json.dumps(e.to_dict())))
    assert h.replace(m=8).lr == 0.5  # an lr that is not the preset's stays explicit
    for preset in ("small", None):  # lr_b = lr when filled: it follows a new lr
        k = ToyConfig(preset=preset, m=64, n=128, steps=10, batch=4)
        k2 = ToyConfig.from_dict(json.loads(json.dumps(k.to_dict())))
        assert k2.replace(lr=0.05) == k.replace(lr=0.05) and k2.replace(lr=0.05).lr_b == 0.05


def test_numpy_scalars_and_extreme_alpha():
    c = ToyConfig(n=np.int64(64), m=np.int64(2), preset=None, steps=np.int32(5), batch=4,
                  seed=np.int64(3), gamma=np.float32(0.5), dist=np.full(64, 1 / 64))
    assert type(c.m) is int and type(c.seed) is int and c.gamma == 0.5
    assert c == ToyConfig(n=64, m=2, preset=None, steps=5, batch=4, seed=3, gamma=0.5,
                          dist=tuple([1 / 64] * 64))
    with pytest.raises(ValueError, match="m must be an integer >= 1, got True"):
        ToyConfig(n=64, m=True, preset=None, steps=5, batch=4)
    # i^-alpha overflows fp64 for alpha << 0: the same law, computed in log space.
    p = toy_probabilities((1000, "power", -330.0))
    assert bool(torch.isfinite(p).all()) and float(p.sum()) == pytest.approx(1.0)
    i = torch.arange(1, 1001, dtype=torch.float64)
    top = slice(900, None)  # the rest underflow to 0, as exp of -2000 must
    assert torch.allclose(p[top].log() - p[-1].log(), 330.0 * (i[top].log() - i[-1].log()))
    # An E whose frequencies all underflow fp32 (the samplers' type) trained on zero data.
    with pytest.raises(ValueError, match=r"every feature frequency is 0 in fp32 \(E=5e-324"):
        ToyConfig(n=64, m=2, preset=None, steps=5, batch=4, E=5e-324)
    assert float(toy_probabilities((64, "power", 1.0, 1e-40)).float().sum()) > 0
