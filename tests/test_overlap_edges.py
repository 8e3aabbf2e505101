"""overlap_stats at the edges of the number formats and of its dispatch: centring that would
leave fp32's range, exact power-of-two rescaling (a bf16 head stays exact), errors that name
SUPERKERN_BACKEND when it chose the backend, and unsigned row indices."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import superkern
from tests.test_overlap import _need, _rand
from tests.utils import check_against_gold, gold_stats

BACKENDS = ["torch", "cpu", "triton", "cuda"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_centring_huge_finite_fp32_rows_gives_their_true_cosines(backend):
    """x - mean of finite fp32 rows can pass fp32's maximum (3e38 - -3e38): such rows are
    scaled by a power of two, never turned into inf (which gave NaN sums, an empty top-k or
    an index error)."""
    dev = _need(backend)
    W = _rand(60, 8, seed=4) * 1e37
    W[::7, 0] = 3.3e38
    W[:8:7, 0] = -3.3e38  # two of nine negative: they sit ~3.6e38 below the column mean
    W = W.float().to(dev)
    assert torch.isfinite(W).all()
    Wd = W.double().cpu()
    assert (Wd - Wd.mean(0)).abs().max() > torch.finfo(torch.float32).max  # the trap
    gold = gold_stats(Wd, bins=16, center=True)
    st = superkern.overlap_stats(W, center=True, bins=16, topk=5, per_row=True,
                                 backend=backend)
    check_against_gold(st, gold, "fp32", bins=16, topk=5, per_row=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_centring_leaves_zero_rows_out_before_the_mean(backend):
    """Zero (padding) rows are excluded, also with center=True: centred first, they became
    copies of -mean, pairs with c = 1 that filled max and top-k and moved every mean."""
    dev = _need(backend)
    W = _rand(50, 6, seed=9) + 1.0      # a shared direction, as in real heads
    W[40:] = 0
    gold = gold_stats(W[:40].double(), bins=16, center=True)
    st = superkern.overlap_stats(W.to(dev), center=True, bins=16, topk=5, per_row=True,
                                 backend=backend)
    assert (st.n_zero, st.n_used) == (10, 40)
    st.row_max_abs, st.row_argmax, st.row_sum_sq = (st.row_max_abs[:40], st.row_argmax[:40],
                                                    st.row_sum_sq[:40])
    check_against_gold(st, gold, "fp32", bins=16, topk=5, per_row=True)
    ex = superkern.overlap_moments_exact(W, center=True)
    assert ex["n_zero"] == 10 and ex["mean_sq"] == pytest.approx(gold["mean_sq"], rel=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_power_of_two_rescaled_rows_give_identical_results(backend, precision):
    """Rows with norms outside [2^-40, 2^40] are scaled by 2^-e, not normalised and rounded
    again: a bf16 head read at bf16 gives bit for bit what the unscaled head gives."""
    dev = _need(backend)
    W = torch.randn(200, 64, generator=torch.Generator().manual_seed(11)).bfloat16().to(dev)
    V = W.clone()
    V[::2] *= 2.0 ** 41
    V[1::4] *= 2.0 ** -45
    got = [superkern.overlap_stats(X, bins=50, topk=7, per_row=True, precision=precision,
                                   backend=backend) for X in (W, V)]
    a, b = got
    for f in ("hist", "row_argmax", "row_max_abs", "row_sum_sq", "topk_values", "topk_pairs"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert (a.mean_cos, a.mean_sq, a.max_pair) == (b.mean_cos, b.mean_sq, b.max_pair)


def test_errors_name_the_variable_that_chose_the_backend(monkeypatch):
    monkeypatch.setenv("SUPERKERN_BACKEND", "cpu")
    if superkern.backend.available("cpu")["cpu"] is not None:
        pytest.skip("the cpu extension is not built")
    with pytest.raises(ValueError, match=r"does not implement.*\[backend 'cpu' set by "
                                         r"SUPERKERN_BACKEND=cpu\]"):
        superkern.overlap_stats(torch.randn(300, 8), block_rows=128)
    with pytest.raises(ValueError, match="does not implement") as err:  # named explicitly
        superkern.overlap_stats(torch.randn(300, 8), block_rows=128, backend="cpu")
    assert "SUPERKERN_BACKEND" not in str(err.value)
    monkeypatch.setenv("SUPERKERN_BACKEND", "auto")  # "auto" chooses freely, as unset does
    assert superkern.overlap_stats(torch.randn(300, 8), block_rows=128).backend != "cpu"


def test_unsigned_row_indices_are_range_checked_before_any_wrap():
    W = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"\[0, 10\), got range \[18446744073709551615, "):
        superkern.overlap_stats(W, rows=np.array([2 ** 64 - 1], dtype=np.uint64))
    st = superkern.overlap_stats(W, rows=np.array([1, 2, 9], dtype=np.uint64))
    assert st.n_used == 3


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_fp64_rows_at_the_ends_of_the_range_stay_finite(backend):
    """Norms of 2^1023 and more, or subnormal: the power-of-two scaling goes in two halves
    (2^1024 itself is inf in fp64), so the results equal the unscaled rows' (bit for bit for
    the exact 2^1022 multiple; subnormal rows keep only the bits they have)."""
    _need(backend)
    base = torch.randn(6, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    base[0] *= 1.5 / float(base[0].norm())
    W = base.clone()
    W[0] *= 2.0 ** 1023  # norm ~1.5 * 2^1023 = 1.3e308 (frexp exponent 1024)
    W[1] = base[1] / float(base[1].norm()) * 1e-309  # subnormal values
    want = superkern.overlap_stats(base, backend=backend, topk=15, per_row=True)
    got = superkern.overlap_stats(W, backend=backend, topk=15, per_row=True)
    assert torch.isfinite(W).all()
    assert torch.frexp(superkern.row_norm_stats(W).norms[0]).exponent == 1024
    assert got.n_zero == 0 and math.isfinite(got.mean_sq) and math.isfinite(got.mean_abs)
    assert torch.isfinite(got.row_max_abs).all()
    assert got.mean_sq == pytest.approx(want.mean_sq, rel=1e-3)
    only0 = superkern.overlap_stats(W[[0, 2, 3]], backend=backend, bins=8, per_row=True)
    ref0 = superkern.overlap_stats(base[[0, 2, 3]], backend=backend, bins=8, per_row=True)
    assert torch.equal(only0.row_max_abs, ref0.row_max_abs) and only0.mean_sq == ref0.mean_sq


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_deeply_subnormal_fp64_rows_match_the_gold_of_their_own_bits(backend, precision):
    """Rows scaled to norms near 2^-1066 keep only a few bits per value; the results must be
    those of the bits they have (the gold of the same rows scaled up exactly), which needs
    the cosine scale taken from the rescaled row, not the subnormal norm's 7-bit mantissa."""
    dev = _need(backend)
    base = _rand(37, 12, seed=11).double()
    W = base.clone()
    W[::3] = torch.ldexp(W[::3], torch.tensor(-1068.0, dtype=torch.float64))
    assert (W[::3].abs() < 2.0 ** -1022).all() and (W[::3] != 0).any(dim=1).all()
    exact = W.clone()  # the same bits scaled back up: exact for these powers of two
    exact[::3] = torch.ldexp(torch.ldexp(W[::3], torch.tensor(534.0, dtype=torch.float64)),
                             torch.tensor(534.0, dtype=torch.float64))
    assert not torch.equal(exact, base)  # the subnormal rows did lose bits
    st = superkern.overlap_stats(W.to(dev), backend=backend, precision=precision, bins=16,
                                 topk=5, per_row=True)
    check_against_gold(st, gold_stats(exact, bins=16), precision, bins=16, topk=5,
                       per_row=True)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "cuda"])
@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp16"])
def test_precision_rounds_the_operands_exactly_as_documented(backend, precision):
    """Against the gold of the rounded operands (not the looser gold of the exact rows), so a
    backend that ignored ``precision``, or rounded another way, fails: the rounding moves
    the per-row maxima by far more than the tolerance here."""
    dev = _need(backend)
    W = _rand(97, 40, seed=8, device=dev).float()
    st = superkern.overlap_stats(W, bins=16, topk=3, per_row=True, precision=precision,
                                 backend=backend)
    gold = gold_stats(W, bins=16, precision=precision)
    tol = 2e-6
    check_against_gold(st, gold, precision, bins=16, topk=3, per_row=True, tol=tol)
    exact = gold_stats(W, bins=16)
    moved = float((gold["row_max_abs"] - exact["row_max_abs"]).abs().max())
    assert moved > 10 * tol, f"{precision} rounding moves the row maxima by only {moved:.2e}"


def test_torch_reference_over_several_blocks(monkeypatch):
    """The reference that the other backends are checked against, with blocks of 64 rows:
    300 rows make 5 blocks (the last ragged) and every off-diagonal block pair, and a
    duplicate pair that spans blocks 0 and 3 carries the maximum."""
    import functools

    import superkern.ops.overlap as overlap_mod
    from superkern.ops.overlap_ref import overlap_partials_torch

    monkeypatch.setattr(overlap_mod, "overlap_partials_torch",
                        functools.partial(overlap_partials_torch, block=64))
    W = _rand(300, 36, seed=21).float()
    W[250] = 3.0 * W[10]
    st = superkern.overlap_stats(W, bins=50, topk=6, per_row=True, backend="torch")
    check_against_gold(st, gold_stats(W, bins=50), "fp32", bins=50, topk=6, per_row=True)
    assert st.max_pair == (10, 250) and int(st.row_argmax[250]) == 10
