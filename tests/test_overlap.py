"""overlap_stats on every backend against an fp64 gold (full C in fp64, small shapes)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import superkern
from superkern import backend as B
from tests.utils import assert_allclose, assert_close, check_against_gold, gold_stats

SHAPES = [(1, 5), (2, 3), (7, 33), (130, 20), (255, 507), (1000, 96)]


def _device_for(name: str) -> str:
    return "cuda" if name in ("cuda", "triton") and torch.cuda.is_available() else "cpu"


def _need(name: str) -> str:
    dev = _device_for(name)
    why = B.available(dev)[name]
    if why is not None:
        pytest.skip(f"backend {name} unavailable: {why}")
    return dev


def _rand(n, m, seed, device="cpu", anisotropic=False):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, m, generator=g, dtype=torch.float64)
    if anisotropic:  # a shared offset direction, as in many real embeddings
        W += 3.0 * torch.randn(1, m, generator=g, dtype=torch.float64)
    return W.to(device)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "cuda"])
@pytest.mark.parametrize("shape", SHAPES)
def test_fp32_all_stats(backend, shape):
    dev = _need(backend)
    n, m = shape
    if backend == "triton" and not torch.cuda.is_available() and n * n * m > 3e7:
        pytest.skip("too large for the Triton interpreter")
    W = _rand(n, m, seed=n * 1000 + m, device=dev).float()
    P = n * (n - 1) // 2
    topk = min(5, P)
    st = superkern.overlap_stats(W, bins=64, topk=topk, per_row=True, backend=backend)
    assert st.backend == backend
    check_against_gold(st, gold_stats(W, bins=64), "fp32", bins=64, topk=topk, per_row=True)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "cuda"])
@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_precisions_and_dtypes(backend, precision, dtype):
    dev = _need(backend)
    W = _rand(97, 40, seed=7, device=dev).to(dtype)
    st = superkern.overlap_stats(W, bins=16, topk=3, per_row=True, precision=precision,
                                 backend=backend)
    assert st.precision == precision
    check_against_gold(st, gold_stats(W.double(), bins=16), precision, bins=16, topk=3,
                       per_row=True)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "cuda"])
def test_zero_duplicate_anisotropic_rows(backend):
    dev = _need(backend)
    W = _rand(70, 24, seed=3, device=dev, anisotropic=True)
    W[5] = 0.0
    W[40] = 0.0
    W[11] = W[3]          # exact duplicate: |cos| = 1
    W[12] = -2.5 * W[3]   # antiparallel multiple: cos = -1
    W = W.float()
    st = superkern.overlap_stats(W, bins=32, topk=4, per_row=True, backend=backend)
    assert st.n_zero == 2 and st.n_used == 68
    assert abs(st.max_abs - 1.0) < 1e-5
    assert set(st.max_pair) <= {3, 11, 12}
    assert torch.isnan(st.row_max_abs[5]) and int(st.row_argmax[40]) == -1
    check_against_gold(st, gold_stats(W, bins=32), "fp32", bins=32, topk=4, per_row=True)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "cuda"])
@pytest.mark.parametrize("nonzero", [0, 1])
def test_fewer_than_two_nonzero_rows(backend, nonzero):
    """No pair to reduce over: every statistic is NaN (not 0), the histogram empty, each row's
    max NaN and argmax -1; a used row's sum over no partners is 0, a zero row's NaN; the exact
    moments agree."""
    dev = _need(backend)
    W = torch.zeros(3, 4, device=dev)
    W[1, :nonzero * 4] = 1.0
    st = superkern.overlap_stats(W, bins=4, per_row=True, backend=backend)
    assert (st.n_used, st.n_zero, st.n_pairs) == (nonzero, 3 - nonzero, 0)
    assert all(math.isnan(v) for v in (st.mean_cos, st.mean_abs, st.mean_sq, st.max_abs))
    assert st.max_pair is None and st.hist.tolist() == [0, 0, 0, 0]
    assert torch.isnan(st.row_max_abs).all() and st.row_argmax.tolist() == [-1, -1, -1]
    assert torch.isnan(st.row_sum_sq).tolist() == [True, not nonzero, True]
    assert not nonzero or float(st.row_sum_sq[1]) == 0.0
    with pytest.raises(ValueError, match=r"topk=1 exceeds the number of pairs P=0"):
        superkern.overlap_stats(W, topk=1, backend=backend)
    ex = superkern.overlap_moments_exact(W)
    assert (ex["n_used"], ex["n_pairs"]) == (nonzero, 0)
    assert math.isnan(ex["mean_sq"]) and math.isnan(ex["mean_cos"])
    assert torch.isnan(ex["row_sum_sq"]).sum() == 3 - nonzero
    if nonzero:
        assert float(ex["row_sum_sq"][1]) == 0.0  # one row: no partner, nothing to sum


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "cuda"])
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_tiny_and_huge_row_norms(backend, precision):
    """Rows whose raw dot products would underflow or overflow fp32 (norms 1e-30, 1e30;
    weight-decayed toy rows reach the first) still give their true cosines, in one call and
    (torch, triton, cuda) streamed in row blocks."""
    dev = _need(backend)
    W = _rand(300, 24, seed=11, device=dev)
    W[:10] *= 1e-30
    W[10:20] *= 1e30
    W[25] = W[3] * 1e30   # a duplicate across the scales: |cos| = 1
    W[200] = W[150] * 1e-30
    W = W.float()
    assert torch.isfinite(W).all() and (W[:10] != 0).all()
    before = W.clone()
    gold = gold_stats(W.double(), bins=32)
    for block_rows in (None, 128):
        if block_rows and backend == "cpu":
            continue  # the cpu backend does not stream
        st = superkern.overlap_stats(W, bins=32, topk=4, per_row=True, precision=precision,
                                     backend=backend, block_rows=block_rows)
        assert torch.equal(W, before)  # the rescaled rows are a copy, never the caller's
        assert st.n_zero == 0 and abs(st.max_abs - 1.0) < 1e-2
        assert {3, 25} in [set(p) for p in st.topk_pairs.tolist()]
        assert st.block_rows == (block_rows or 0)
        check_against_gold(st, gold, precision, bins=32, topk=4, per_row=True)


def test_fp64_rows_whose_squares_leave_fp64_keep_exact_norms():
    """Squares that overflow (1e200) or fall into subnormals (1e-161, 1e-200) would give wrong
    norms; such rows are measured scaled, so their cosines equal the unscaled rows'."""
    base = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    W = base.clone()
    W[2] *= 1e200
    W[3] *= 1e-161
    W[4] *= 1e-200
    want = superkern.overlap_stats(base, backend="torch", topk=15, per_row=True)
    for backend in ("torch", "cpu"):
        got = superkern.overlap_stats(W, backend=backend, topk=15, per_row=True)
        assert got.n_zero == 0
        assert torch.allclose(got.topk_values.double(), want.topk_values.double(), atol=1e-6)
        assert got.mean_sq == pytest.approx(want.mean_sq, rel=1e-6)
    ns = superkern.row_norm_stats(W)
    assert ns.n_zero == 0 and ns.norms[4] == pytest.approx(float(base[4].norm()) * 1e-200)
    W[5] = 1e308  # the norm itself (2.8e308) is beyond fp64: an error naming the row
    with pytest.raises(ValueError, match=r"row 5 has a norm beyond fp64's range"):
        superkern.overlap_stats(W, backend="torch")
    with pytest.raises(ValueError, match=r"row 5 has a norm beyond fp64's range"):
        superkern.row_norm_stats(W)
    W[5] = 0.0      # a true zero row is still just excluded
    assert superkern.overlap_stats(W, backend="torch").n_zero == 1


def test_center_is_exact_for_narrow_dtypes_and_ops_keep_no_graph():
    g = torch.Generator().manual_seed(5)
    W = (torch.randn(200, 64, generator=g) + 30 * torch.randn(1, 64, generator=g)).bfloat16()
    Wd = W.double()
    C = torch.nn.functional.normalize(Wd - Wd.mean(0))
    G = C @ C.T
    gold = float((G.sum() - 200) / (200 * 199))
    st = superkern.overlap_stats(W, center=True, backend="torch")
    assert st.mean_cos == pytest.approx(gold, abs=1e-8)  # bf16-rounded: 3e-3 (mean), 6e-7 (rows)
    P = torch.nn.Parameter(torch.randn(50, 8, generator=g))
    out = superkern.overlap_stats(P, topk=3, per_row=True, backend="torch")
    assert not out.topk_values.requires_grad and not out.row_sum_sq.requires_grad
    assert not superkern.row_norm_stats(P).norms.requires_grad
    assert not superkern.overlap_moments_exact(P)["row_sum_sq"].requires_grad


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "cuda"])
def test_rows_mask_and_center(backend):
    dev = _need(backend)
    W = _rand(90, 16, seed=11, device=dev, anisotropic=True).float()
    mask = torch.zeros(90, dtype=torch.bool)
    mask[::3] = True
    for center in (False, True):
        st = superkern.overlap_stats(W, rows=mask, center=center, bins=8, topk=2, per_row=True,
                                     backend=backend)
        gold = gold_stats(W, bins=8, rows=mask, center=center)
        check_against_gold(st, gold, "fp32", bins=8, topk=2, per_row=True)
        assert torch.isnan(st.row_max_abs[1])  # row 1 is not in the mask
        assert set(st.topk_pairs.flatten().tolist()) <= set(range(0, 90, 3))
    # An index list selects the same rows as the mask: the same statistics.
    idx_st = superkern.overlap_stats(W, rows=list(range(0, 90, 3)), backend=backend)
    mask_st = superkern.overlap_stats(W, rows=mask, backend=backend)
    assert idx_st.n_used == mask_st.n_used == 30
    assert idx_st.mean_abs == mask_st.mean_abs and idx_st.max_pair == mask_st.max_pair


def test_centering_removes_shared_direction():
    W = _rand(300, 32, seed=5, anisotropic=True).float()
    raw = superkern.overlap_stats(W, backend="torch")
    cen = superkern.overlap_stats(W, center=True, backend="torch")
    assert raw.mean_abs > 0.5 and cen.mean_abs < 0.3 and cen.centered


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "cuda"])
def test_mean_sq_matches_exact_identities(backend):
    dev = _need(backend)
    W = _rand(300, 48, seed=19, device=dev).float()
    st = superkern.overlap_stats(W, per_row=True, backend=backend)
    ex = superkern.overlap_moments_exact(W)
    assert_close("mean_sq vs identity", st.mean_sq, ex["mean_sq"], rtol=1e-5)
    assert_close("mean_cos vs identity", st.mean_cos, ex["mean_cos"], rtol=1e-4, atol=1e-7)
    assert_allclose("row_sum_sq vs identity", st.row_sum_sq, ex["row_sum_sq"], rtol=1e-5,
                    atol=1e-7)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "cuda"])
def test_deterministic(backend):
    dev = _need(backend)
    W = _rand(200, 64, seed=23, device=dev).float()
    a = superkern.overlap_stats(W, bins=32, topk=5, per_row=True, backend=backend)
    b = superkern.overlap_stats(W, bins=32, topk=5, per_row=True, backend=backend)
    for f in ("mean_cos", "mean_abs", "mean_sq", "max_abs", "max_pair"):
        assert getattr(a, f) == getattr(b, f), f"{f} differs between identical runs"
    for f in ("hist", "topk_values", "topk_pairs", "row_max_abs", "row_argmax", "row_sum_sq"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f"{f} differs between identical runs"
    if dev == "cpu" and backend in ("torch", "cpu"):  # and on another thread count
        W = (_rand(2049, 64, seed=24) + 0.3 * _rand(1, 64, seed=25)).float()
        runs = []
        old = torch.get_num_threads()
        try:
            for threads in (1, 2, 3):
                torch.set_num_threads(threads)
                runs.append(superkern.overlap_stats(W, bins=16, per_row=True, backend=backend))
        finally:
            torch.set_num_threads(old)
        for r in runs[1:]:
            assert (r.mean_cos, r.mean_abs, r.mean_sq) == \
                (runs[0].mean_cos, runs[0].mean_abs, runs[0].mean_sq)
            assert torch.equal(r.row_sum_sq, runs[0].row_sum_sq)


def test_isotropic_random_baseline():
    # E c^2 = 1/m for iid isotropic unit vectors: a statistical check that can fail.
    m = 64
    st = superkern.overlap_stats(_rand(1500, m, seed=29).float(), backend="torch")
    assert abs(st.mean_sq * m - 1.0) < 0.03, st.mean_sq * m


def test_one_row_and_no_pairs():
    st = superkern.overlap_stats(torch.randn(1, 8), bins=4, per_row=True)
    assert st.n_pairs == 0 and st.max_pair is None and int(st.hist.sum()) == 0
    assert st.mean_abs != st.mean_abs  # NaN
    zero = superkern.overlap_stats(torch.zeros(3, 4))
    assert zero.n_zero == 3 and zero.n_pairs == 0
    d = st.to_dict()
    assert d["mean_abs"] is None and d["n_rows"] == 1
    assert d["row_max_abs"] == [None] and json.loads(json.dumps(d, allow_nan=False)) == d


def test_exact_moments_against_gold():
    W = _rand(120, 10, seed=31)
    g = gold_stats(W)
    ex = superkern.overlap_moments_exact(W)
    assert_close("mean_sq", ex["mean_sq"], g["mean_sq"], rtol=1e-12)
    assert_close("mean_cos", ex["mean_cos"], g["mean_cos"], rtol=1e-10, atol=1e-14)
    assert_allclose("row_sum_sq", ex["row_sum_sq"], g["row_sum_sq"], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("bad, match", [
    (torch.randn(4), "2-D"),
    (torch.randn(2, 3, 4), "2-D"),
    (torch.zeros(0, 4), "empty"),
    (torch.zeros(4, 0), "empty"),
    (torch.ones(4, 4, dtype=torch.int32), "floating"),
    (torch.ones(4, 4, dtype=torch.complex64), "floating"),
    ([[1.0, 2.0]], "torch.Tensor or numpy"),
])
def test_bad_matrix(bad, match):
    with pytest.raises(ValueError, match=match):
        superkern.overlap_stats(bad)


def test_nan_inf_named():
    W = torch.randn(10, 4)
    W[6, 1] = float("nan")
    W[8, 0] = float("inf")
    with pytest.raises(ValueError, match=r"2 non-finite.*first in row 6"):
        superkern.overlap_stats(W)
    with pytest.raises(ValueError, match="non-finite"):
        superkern.row_norm_stats(W)
    # Only the rows that take part must be finite; a bad one among them is named in W.
    keep = [0, 1, 2, 3, 4, 5, 7, 9]
    want = superkern.overlap_stats(W[keep].clone())
    got = superkern.overlap_stats(W, rows=keep)
    assert got.mean_sq == pytest.approx(want.mean_sq, rel=1e-12) and got.n_used == 8
    with pytest.raises(ValueError, match=r"1 non-finite.*first in row 8 of 10"):
        superkern.overlap_stats(W, rows=[0, 1, 8])


def test_bad_options():
    W = torch.randn(5, 3)
    with pytest.raises(ValueError, match="bins must be >= 0"):
        superkern.overlap_stats(W, bins=-1)
    with pytest.raises(ValueError, match=r"topk=11 exceeds .* P=10"):
        superkern.overlap_stats(W, topk=11)
    with pytest.raises(ValueError, match="length n=5"):
        superkern.overlap_stats(W, rows=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        superkern.overlap_stats(W, rows=[0, 7])
    with pytest.raises(ValueError, match="unknown precision"):
        superkern.overlap_stats(W, precision="fp8")
    with pytest.raises(ValueError, match="unknown backend"):
        superkern.overlap_stats(W, backend="metal")
    with pytest.raises(ValueError, match=r"bins=16777217 exceeds 2\^24"):
        superkern.overlap_stats(W, bins=(1 << 24) + 1, backend="torch")
    with pytest.raises(ValueError, match="block must be an integer >= 1"):
        superkern.overlap_moments_exact(W, block=0)
    empty = superkern.overlap_stats(W, rows=[])  # an empty selection: no pairs, no error
    assert empty.n_used == 0 and empty.n_pairs == 0
    A = np.asarray(W.double().numpy(), dtype=np.longdouble)
    for arr in (A, W.numpy().astype(">f4")):  # extended precision, byte-swapped
        st = superkern.overlap_stats(arr, backend="torch")
        assert st.mean_sq == pytest.approx(superkern.overlap_stats(W, backend="torch").mean_sq,
                                           rel=1e-6)
    # Streaming asked for with backend="auto" on CPU tensors: a backend that streams.
    assert superkern.overlap_stats(torch.randn(300, 8), block_rows=128).backend == "torch"


def test_explicit_unavailable_backend_lists_alternatives():
    if B.available("cpu")["cuda"] is None:
        pytest.skip("cuda usable for cpu tensors?!")
    with pytest.raises(ValueError, match="not available.*Usable here"):
        superkern.overlap_stats(torch.randn(5, 3), backend="cuda")


def test_env_override(monkeypatch):
    monkeypatch.setenv("SUPERKERN_BACKEND", "torch")
    assert superkern.overlap_stats(torch.randn(6, 3)).backend == "torch"
    monkeypatch.setenv("SUPERKERN_BACKEND", "metal")
    with pytest.raises(ValueError, match=r"unknown backend 'metal' \(set by SUPERKERN_BACKEND\)"):
        superkern.overlap_stats(torch.randn(6, 3))


def test_row_norm_stats():
    W = torch.tensor([[0.3, 0.0], [0.0, 0.8], [1.5, 0.0], [0.0, 0.0]])
    ns = superkern.row_norm_stats(W, bins=4)
    assert ns.n_zero == 1 and ns.phi_half == 0.5 and ns.phi_1 == 0.25
    assert abs(ns.median - 0.8) < 1e-7  # fp32 inputs; median of the nonzero (.3, .8, 1.5)
    # norms / 0.8: 0, .375, 1, 1.875; phi counts over all 4 rows, the zero row included
    assert ns.phi_half_median == 0.5 and ns.phi_1_median == 0.25
    assert int(ns.hist.sum()) == 4 and abs(ns.max - 1.5) < 1e-12
