"""The C++ CPU overlap kernel called directly: binding validation, multi-tile ragged shapes on both
micro-kernels against an fp64 gold, exact ties, the bin rule, and bitwise thread invariance."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import superkern
from superkern import backend as B
from superkern.ops.overlap_ref import hist_bins, overlap_partials_torch
from tests.utils import assert_allclose, assert_close, gold_stats

ext = B.extension()
pytestmark = pytest.mark.skipif(ext is None or not hasattr(ext, "overlap_partials_cpu"),
                                reason="superkern._C with the CPU overlap kernel is not built")
KERNELS = ["generic"] + (["avx2"] if ext is not None and getattr(ext, "cpu_has_avx2", False)
                         else [])
FIELDS = ("sums", "hist", "row_max", "row_arg", "row_sq", "topk_vals", "topk_pairs")


def _operands(n: int, m: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m)).astype(np.float32)
    X += 0.5 * rng.standard_normal((1, m)).astype(np.float32)  # a shared direction: c not ~0
    s = (1.0 / np.linalg.norm(X.astype(np.float64), axis=1)).astype(np.float32)
    return X, s


def _run(X, s, bins=0, topk=0, **kw):
    return dict(zip(FIELDS, ext.overlap_partials_cpu(X, s, bins, topk, **kw)))


def _assert_bitwise(a: dict, b: dict, what: str) -> None:
    for f in FIELDS:
        x, y = np.asarray(a[f]), np.asarray(b[f])
        same = x.shape == y.shape and np.array_equal(x.view(np.uint8), y.view(np.uint8))
        if not same:
            diff = np.nonzero(x.reshape(-1) != y.reshape(-1))[0] if x.shape == y.shape else []
            first = int(diff[0]) if len(diff) else -1
            raise AssertionError(f"{what}: field {f} differs ({len(diff)} elements, first flat "
                                 f"index {first}: {x.reshape(-1)[first] if first >= 0 else x.shape}"
                                 f" vs {y.reshape(-1)[first] if first >= 0 else y.shape})")


# ---------------------------------------------------------------- binding validation


def test_binding_rejects_bad_arguments_with_numbers():
    X, s = _operands(5, 3, 0)
    f = ext.overlap_partials_cpu
    with pytest.raises(ValueError, match=r"X must be float32, got dtype float64"):
        f(X.astype(np.float64), s, 0, 0)
    with pytest.raises(ValueError, match=r"X must be C-contiguous \(shape \(5, 2\)\)"):
        f(np.ones((5, 4), np.float32)[:, ::2], s, 0, 0)
    with pytest.raises(ValueError, match=r"X must be C-contiguous \(shape \(3, 5\)\)"):
        f(X.T, s[:3], 0, 0)
    with pytest.raises(ValueError, match=r"X must be 2-D, got 3-D with shape \(5, 3, 1\)"):
        f(X[:, :, None], s, 0, 0)
    with pytest.raises(ValueError, match=r"scale must be float32, got dtype float64"):
        f(X, s.astype(np.float64), 0, 0)
    with pytest.raises(ValueError, match=r"scale must have length N=5 \(rows of X\), got 4"):
        f(X, s[:4], 0, 0)
    with pytest.raises(ValueError, match=r"topk=11 exceeds the number of pairs P=10 \(N=5\)"):
        f(X, s, 0, 11)
    with pytest.raises(ValueError, match=r"topk must be >= 0, got -1"):
        f(X, s, 0, -1)
    with pytest.raises(ValueError, match=r"bins must be >= 0, got -3"):
        f(X, s, -3, 0)
    with pytest.raises(ValueError, match=r"bins=16777217 exceeds 2\^24"):
        f(X, s, (1 << 24) + 1, 0)
    with pytest.raises(ValueError,
                       match=r"tile must be 0 \(auto\) or a positive multiple of 48, got 50"):
        f(X, s, 0, 0, tile=50)
    with pytest.raises(ValueError, match=r"num_threads must be >= 0 .* got -2"):
        f(X, s, 0, 0, num_threads=-2)
    with pytest.raises(ValueError, match=r"kernel must be 'auto', 'avx2' or 'generic', got 'sse'"):
        f(X, s, 0, 0, kernel="sse")
    f(X, s, 0, 10)  # topk == P is allowed


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_tile_past_the_rows_is_one_tile(kernel):
    """Any multiple of 48 is a valid tile; one past the rows (up to 2^62, where T * T and the
    scratch sizes overflowed: a heap overrun found by AddressSanitizer) is one tile, as the
    smallest tile that holds every row."""
    X, s = _operands(50, 8, 3)
    one = _run(X, s, bins=10, topk=5, kernel=kernel, tile=96)
    for tile in (48 * 1000, (1 << 62) + 32):
        _assert_bitwise(_run(X, s, bins=10, topk=5, kernel=kernel, tile=tile), one, f"{tile}")


_CAPPED = """
import importlib.util, resource, sys
import numpy as np
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # 3 GiB of address space
spec = importlib.util.spec_from_file_location("superkern._C", sys.argv[1])
C = importlib.util.module_from_spec(spec)
spec.loader.exec_module(C)
X = np.random.default_rng(0).standard_normal((12000, 4)).astype(np.float32)
s = (1 / np.linalg.norm(X, axis=1)).astype(np.float32)
a = C.overlap_partials_cpu(X, s, 4, 2, tile=48, num_threads=10 ** 6)
b = C.overlap_partials_cpu(X, s, 4, 2, tile=48, num_threads=1)
assert all(np.array_equal(x, y) for x, y in zip(a, b))
print("ok")
"""


def test_a_huge_thread_count_is_capped_not_allocated():
    """num_threads=10**6 with 31375 tiles (N = 12000, tile 48) started 31375 threads of
    O(N) partials each (about 11 GB): capped at 4 per processor, it runs in a 3 GiB address
    space, with the same bits as one thread."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _CAPPED, ext.__file__], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


@pytest.mark.slow
def test_one_tile_past_2_32_pairs_keeps_an_exact_histogram():
    """The uint32 sub-histograms are flushed per 16-column strip: with one tile of every row
    (92736 rows, 4.3e9 pairs, all in one bin and, with bins > 65536, one lane) the count came
    back 2^32 short when the flush was checked per tile. About 12 s on one core."""
    if "avx2" not in KERNELS:
        pytest.skip("needs the AVX2 kernel (the generic one takes twice as long)")
    N = 92736
    X = np.ones((N, 1), dtype=np.float32)
    r = _run(X, np.ones(N, dtype=np.float32), bins=70000, kernel="avx2", tile=(N + 47) // 48 * 48)
    assert int(r["hist"][-1]) == N * (N - 1) // 2 == int(r["hist"].sum())


@pytest.mark.parametrize("kernel", KERNELS)
def test_sums_past_the_fixed_point_range_are_nan_not_wrapped(kernel):
    """The low-level call takes any scale, so |c| can exceed 1: a total past the 128-bit fixed
    point's range (2^63) is NaN (it wrapped silently to a wrong value: UndefinedBehavior-
    Sanitizer), the same on any thread count; sums within range stay exact."""
    N = 480
    X = np.full((N, 1), 6000.0, dtype=np.float32)  # c = 3.6e7 for every pair, c^2 = 1.3e15
    s = np.ones(N, dtype=np.float32)
    P = N * (N - 1) // 2
    runs = [_run(X, s, kernel=kernel, tile=48, num_threads=t) for t in (1, 2)]
    _assert_bitwise(runs[0], runs[1], "threads")
    r = runs[0]
    assert r["sums"][0] == r["sums"][1] == P * 3.6e7  # 4.1e12: in range, exact
    assert np.isnan(r["sums"][2])                     # 1.5e20 > 2^63
    assert np.allclose(r["row_sq"], (N - 1) * 3.6e7 ** 2, rtol=1e-5)  # 6.2e17 < 2^63 (fp32
    # within a tile)
    X = np.full((2000, 1), 1e4, dtype=np.float32)    # row_sq = 1999 * 1e16 = 2e19 > 2^63
    r = _run(X, np.ones(2000, dtype=np.float32), kernel=kernel)
    assert np.isnan(r["row_sq"]).all() and np.isnan(r["sums"][2])
    assert r["sums"][1] == 1999000 * 1e8               # sum |c| = 2e14: exact


def test_few_rows():
    X, s = _operands(1, 4, 1)
    r = _run(X, s, bins=3, topk=0)
    assert r["sums"].tolist() == [0.0, 0.0, 0.0] and r["hist"].tolist() == [0, 0, 0]
    assert np.isnan(r["row_max"][0]) and r["row_arg"].tolist() == [-1] and r["row_sq"][0] == 0
    assert r["topk_vals"].shape == (0,) and r["topk_pairs"].shape == (0, 2)
    assert _run(X[:0], s[:0], bins=2)["row_max"].shape == (0,)
    X, s = _operands(2, 4, 2)
    r = _run(X, s, bins=0, topk=1)
    c = float(X[0].astype(np.float64) @ X[1] * s[0] * s[1])
    assert r["hist"].shape == (0,) and r["row_arg"].tolist() == [1, 0]
    assert abs(r["topk_vals"][0] - c) < 1e-6 and r["topk_pairs"].tolist() == [[0, 1]], (r, c)


# ---------------------------------------------------------------- accuracy against fp64


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n, m, tile", [(250, 37, 48), (203, 130, 96), (97, 8, 0)])
def test_multi_tile_ragged_against_gold(kernel, n, m, tile):
    # 250 = 5 tiles of 48 + 10 rows: ragged in rows and columns, ragged micro-tiles (6 x 16),
    # diagonal and off-diagonal tiles; m not a multiple of 8.
    X, s = _operands(n, m, seed=n + m)
    P, bins, k = n * (n - 1) // 2, 40, 25
    r = _run(X, s, bins=bins, topk=k, kernel=kernel, tile=tile)
    g = gold_stats(torch.from_numpy(X).double(), bins=bins)
    tol = 2e-5
    assert_close("sum c", r["sums"][0] / P, g["mean_cos"], rtol=tol, atol=tol / 10)
    assert_close("sum |c|", r["sums"][1] / P, g["mean_abs"], rtol=tol)
    assert_close("sum c^2", r["sums"][2] / P, g["mean_sq"], rtol=2 * tol)
    assert int(r["hist"].sum()) == P, f"histogram counts {int(r['hist'].sum())} pairs, want {P}"
    diff = int(np.abs(r["hist"] - g["hist"].numpy()).sum())
    assert diff <= 2 * g["hist_ambiguous"], f"hist L1 diff {diff}, ambiguous {g['hist_ambiguous']}"
    assert_allclose("row_max", torch.from_numpy(r["row_max"]), g["row_max_abs"], rtol=0, atol=tol)
    assert_allclose("row_sq", torch.from_numpy(r["row_sq"]), g["row_sum_sq"], rtol=tol, atol=1e-7)
    C = g["C"]
    for i, j in enumerate(r["row_arg"].tolist()):
        assert j != i and abs(abs(float(C[i, j])) - float(g["row_max_abs"][i])) <= tol, (i, j)
    want = g["c"].abs().sort(descending=True).values[:k]
    assert_allclose("topk |c|", torch.from_numpy(np.abs(r["topk_vals"])), want, rtol=0, atol=tol)
    pairs = r["topk_pairs"]
    assert (pairs[:, 0] < pairs[:, 1]).all() and len({tuple(p) for p in pairs.tolist()}) == k
    cg = torch.tensor([float(C[a, b]) for a, b in pairs])
    assert_allclose("topk values at their pairs", torch.from_numpy(r["topk_vals"]), cg, rtol=0,
                    atol=tol)
    # Against the torch reference too: the same canonical top-k order wherever |c| is distinct.
    ref = overlap_partials_torch(torch.from_numpy(X), torch.from_numpy(s), bins=bins, topk=k)
    a = np.abs(r["topk_vals"])
    clear = np.ones(k, bool)
    clear[1:] &= np.diff(a) < -1e-5
    clear[:-1] &= np.diff(a) < -1e-5
    assert clear.sum() >= k // 2, f"only {clear.sum()} of {k} top-k values are distinct"
    assert (pairs[clear] == ref.topk_pairs.numpy()[clear]).all()


def test_all_pairs_topk_and_tile_size_agree():
    # topk = P: the heap keeps everything; the order is the canonical one over all pairs.
    X, s = _operands(60, 20, 5)
    P = 60 * 59 // 2
    r = _run(X, s, topk=P, tile=48)
    ref = overlap_partials_torch(torch.from_numpy(X), torch.from_numpy(s), bins=0, topk=P)
    got = {tuple(p) for p in r["topk_pairs"].tolist()}
    assert len(got) == P and all(i < j for i, j in got)
    assert np.all(np.diff(np.abs(r["topk_vals"])) <= 0), "top-k not sorted by |c| descending"
    assert_allclose("topk", torch.from_numpy(r["topk_vals"]), ref.topk_values, rtol=0, atol=2e-6)
    big = _run(X, s, topk=P, tile=240)
    assert_allclose("row_sq tile 48 vs 240", torch.from_numpy(r["row_sq"]),
                    torch.from_numpy(big["row_sq"]), rtol=1e-6)


# ---------------------------------------------------------------- exact ties and the bin rule


@pytest.mark.parametrize("kernel", KERNELS)
def test_identical_rows_give_canonical_ties(kernel):
    # Every pair has the same |c| to the last bit (the sign alternates): the top-k must be the
    # first k pairs in (i, j) order, and every argmax the smallest other index.
    n, k = 150, 400
    v = np.random.default_rng(9).standard_normal(21).astype(np.float32)
    sign = np.where(np.arange(n) % 3 == 1, -1.0, 1.0).astype(np.float32)
    X = np.ascontiguousarray(sign[:, None] * v[None, :])
    s = np.full(n, 1.0 / np.linalg.norm(v.astype(np.float64)), np.float32)
    r = _run(X, s, bins=8, topk=k, kernel=kernel, tile=48, num_threads=2)
    first = [(i, j) for i in range(n) for j in range(i + 1, n)][:k]
    assert r["topk_pairs"].tolist() == [list(p) for p in first], r["topk_pairs"][:8]
    a = np.abs(r["topk_vals"])
    assert np.all(a == a[0]) and abs(a[0] - 1) < 1e-6
    assert np.all(np.sign(r["topk_vals"]) == [sign[i] * sign[j] for i, j in first])
    assert r["row_arg"].tolist() == [1] + [0] * (n - 1)
    assert np.all(r["row_max"] == a[0])
    assert int(r["hist"][0] + r["hist"][-1]) == n * (n - 1) // 2
    ref = overlap_partials_torch(torch.from_numpy(X), torch.from_numpy(s), bins=8, topk=k)
    assert torch.equal(torch.from_numpy(r["topk_pairs"]), ref.topk_pairs)
    assert torch.equal(torch.from_numpy(r["row_arg"]), ref.row_argmax)


@pytest.mark.parametrize("bins", [1, 3, 4, 7, 65537])  # 65537: one shared sub-histogram
def test_histogram_bin_rule_on_exact_values(bins):
    # Dot products of these small dyadic rows are exact: c in {-1, -0.5, -0.25, 0, 0.25, 0.5, 1},
    # several exactly on bin edges, which must follow hist_bins() of overlap_ref.py.
    X = np.array([[1, 0], [0.5, 0.5], [-1, 0], [0, 1], [0.5, -0.5], [0.25, 0], [-0.5, 0.5]],
                 np.float32)
    X = np.ascontiguousarray(np.tile(X, (8, 1)))  # 56 rows: several micro-tiles
    s = np.ones(len(X), np.float32)
    C = X.astype(np.float64) @ X.T.astype(np.float64)
    c = torch.from_numpy(C[np.triu_indices(len(X), 1)].astype(np.float32))
    want = torch.bincount(hist_bins(c, bins), minlength=bins).numpy()
    for kernel in KERNELS:
        got = _run(X, s, bins=bins, kernel=kernel)["hist"]
        assert np.array_equal(got, want), f"{kernel}: {got} != {want}"


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("kernel", KERNELS)
def test_bitwise_identical_for_any_thread_count(kernel):
    X, s = _operands(333, 52, 13)
    runs = {t: _run(X, s, bins=64, topk=30, kernel=kernel, tile=48, num_threads=t)
            for t in (1, 2, 3, 7)}
    for t in (2, 3, 7):
        _assert_bitwise(runs[1], runs[t], f"{kernel}: 1 vs {t} threads")
    _assert_bitwise(runs[2], _run(X, s, bins=64, topk=30, kernel=kernel, tile=48, num_threads=2),
                    f"{kernel}: repeated run")


def test_pair_counts_beyond_int32():
    # P = 2.2e9 > 2^31 pairs (m = 1, c = +-1 exactly): int64 counts and fixed-point sums are exact.
    n = 66_400
    X = np.where(np.arange(n) % 3 == 0, -1.0, 1.0).astype(np.float32)[:, None]
    s = np.ones(n, np.float32)
    r = _run(X, s, bins=4, topk=3)
    P, b = n * (n - 1) // 2, (n + 2) // 3
    a = n - b
    assert P > 2**31
    assert r["sums"].tolist() == [a * (a - 1) // 2 + b * (b - 1) // 2 - a * b, P, P], r["sums"]
    assert r["hist"].tolist() == [a * b, 0, 0, P - a * b], r["hist"]
    assert r["topk_pairs"].tolist() == [[0, 1], [0, 2], [0, 3]] and r["row_arg"][-1] == 0
    assert r["row_sq"][0] == n - 1 and r["row_sq"][-1] == n - 1


def test_non_finite_input_is_contained():
    # The public op rejects NaN/Inf first; the raw kernel must still not crash or corrupt memory:
    # sums turn NaN, every pair is still counted once, the NaN row reports NaN / -1.
    X, s = _operands(100, 10, 17)
    X[7, 3], X[50, 0] = np.nan, np.inf
    for kernel in KERNELS:
        r = _run(X, s, bins=8, topk=5, kernel=kernel)
        assert np.isnan(r["sums"]).all() and int(r["hist"].sum()) == 100 * 99 // 2
        assert np.isnan(r["row_max"][7]) and r["row_arg"][7] == -1 and np.isnan(r["row_sq"][7])
        # Only NaN overlaps: no pair enters the top-k heaps, an error rather than reading past
        # the candidates' end.
        with pytest.raises(RuntimeError, match="0 candidates for k = 3"):
            _run(np.full((4, 10), np.nan, np.float32), s[:4], topk=3, kernel=kernel)


@pytest.mark.parametrize("kernel", KERNELS)
def test_error_within_twice_torch_error(kernel):
    # Both the kernel and the torch reference compute fp32 products; against the fp64 gold the
    # kernel may be at most ~2x as wrong as torch (plus a floor of a few fp32 ulps).
    X, s = _operands(250, 37, 21)
    g = gold_stats(torch.from_numpy(X).double())
    P = 250 * 249 // 2
    r = _run(X, s, kernel=kernel, tile=48)
    ref = overlap_partials_torch(torch.from_numpy(X), torch.from_numpy(s), bins=0, topk=0)
    gold_sums = [g["mean_cos"] * P, g["mean_abs"] * P, g["mean_sq"] * P]
    for x, (ours, theirs, want) in enumerate(zip(r["sums"], [ref.sum_cos, ref.sum_abs,
                                                             ref.sum_sq], gold_sums)):
        e, e_ref = abs(ours - want), abs(theirs - want)
        assert e <= 2 * e_ref + 1e-9 * abs(want), f"sum {x}: error {e:.3e} vs torch {e_ref:.3e}"
    for name, ours, theirs, want in [
            ("row_max", r["row_max"], ref.row_max_abs.numpy(), g["row_max_abs"].numpy()),
            ("row_sq", r["row_sq"], ref.row_sum_sq.numpy(), g["row_sum_sq"].numpy())]:
        e = float(np.abs(ours - want).max())
        e_ref = float(np.abs(theirs - want).max())
        assert e <= 2 * e_ref + 4 * 2.0**-24 * float(np.abs(want).max()), (
            f"{name}: max error {e:.3e} vs torch {e_ref:.3e}")


def test_fixed_point_sums_round_to_nearest():
    """Cross-tile sums are 2^-64 fixed point: a partial of 0.75 quanta rounds to 1 quantum
    (truncation would give 0 and bias every tiny sum low)."""
    c = math.sqrt(0.75) * 2.0 ** -32  # c^2 = 0.75 * 2^-64
    W = torch.tensor([[1.0, 0.0], [c, 1.0]])
    st = superkern.overlap_stats(W, backend="cpu", per_row=True)
    assert st.mean_sq == 2.0 ** -64 and st.row_sum_sq.tolist() == [2.0 ** -64] * 2


# ---------------------------------------------------------------- 16-bit rows


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_half_value_widens_exactly(kernel):
    """fmt='f16' packs half rows without an fp32 copy. Each finite half value v on its own
    (subnormals and both zeros included; in a large sum the small ones would vanish): the
    pair ([v], [1]) gives c = v, so row 0's max |c| is |v| widened, bit for bit as numpy's
    float32 and as the fp32 route."""
    v = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    v = v[np.isfinite(v)]
    s = np.ones(2, dtype=np.float32)
    for x in v:
        X16 = np.array([[x], [1.0]], dtype=np.float16)
        got = _run(X16, s, kernel=kernel, fmt="f16")
        want = np.abs(np.float32(x))
        assert got["row_max"][0].view(np.uint32) == want.view(np.uint32), hex(x.view(np.uint16))
        assert got["sums"][0] == float(np.float32(x)), hex(x.view(np.uint16))


@pytest.mark.parametrize("kernel", KERNELS)
def test_bf16_bits_give_the_fp32_results(kernel):
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 1 << 16, size=(301, 70), dtype=np.uint32)
    f32 = (bits << 16).view(np.float32)
    bits[~(np.isfinite(f32) & (np.abs(f32) < 1e15) & (np.abs(f32) > 1e-15))] = 0
    f32 = (bits << 16).view(np.float32)
    s = (1.0 / np.linalg.norm(f32.astype(np.float64), axis=1)).astype(np.float32)
    _assert_bitwise(_run(bits.astype(np.uint16), s, 32, 7, kernel=kernel, fmt="bf16"),
                    _run(f32, s, 32, 7, kernel=kernel), "bf16")


def test_a_16bit_head_reaches_the_kernel_without_an_fp32_copy(monkeypatch):
    """The launcher made an fp32 copy of a bf16 head (4.6 GiB of a 152064 x 8192 head) even
    where the precision keeps its values; now the kernel widens the rows as it packs them.
    Same bits as the fp32 route."""
    from superkern.ops import overlap_cpu as L

    seen = []
    real = ext.overlap_partials_cpu

    def spy(X, *a, **kw):
        seen.append((X.dtype, kw["fmt"]))
        return real(X, *a, **kw)

    W = torch.randn(500, 40, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    sc = 1 / W.float().norm(dim=1)
    monkeypatch.setattr(L._backend, "extension", lambda: type("E", (), {
        "overlap_partials_cpu": staticmethod(spy), "built_with_openmp": True})())
    for prec, fmt in (("fp32", "bf16"), ("tf32", "bf16"), ("bf16", "bf16"), ("fp16", "f32")):
        seen.clear()
        a = L.overlap_partials_cpu(W, sc, bins=32, topk=5, precision=prec)
        b = L.overlap_partials_cpu(W.float(), sc, bins=32, topk=5, precision=prec)
        assert seen[0][1] == fmt and seen[1][1] == "f32", (prec, seen)
        assert a.sum_sq == b.sum_sq and torch.equal(a.hist, b.hist)
        assert torch.equal(a.row_sum_sq, b.row_sum_sq) and torch.equal(a.topk_pairs, b.topk_pairs)
    seen.clear()
    L.overlap_partials_cpu(W.half(), sc, bins=0, topk=0, precision="fp16")
    assert seen == [(np.dtype(np.float16), "f16")]


def test_16bit_formats_are_checked():
    X = np.ones((4, 3), dtype=np.float32)
    s = np.ones(4, dtype=np.float32)
    for arr, fmt, msg in ((X, "bf16", "uint16 \\(bf16 bits\\)"), (X, "f16", "float16"),
                          (X.astype(np.uint16), "f32", "float32"), (X, "fp8", "fmt must be")):
        with pytest.raises(ValueError, match=msg):
            ext.overlap_partials_cpu(arr, s, 0, 0, fmt=fmt)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_overlap_stats_hands_16bit_heads_to_the_kernel_at_fp32(dtype, monkeypatch):
    """At the default fp32 (and tf32) a 16-bit head was widened to an fp32 copy before the cpu
    kernel; its values are exact there, so the kernel now takes the rows as they are, with
    the fp32 head's bits. Rows with odd norms (scaled by powers of two) keep the fp32 route."""
    from superkern.ops import overlap_cpu as L

    seen = []
    real = L._kernel_rows
    monkeypatch.setattr(L, "_kernel_rows", lambda X, p: seen.append(X.dtype) or real(X, p))
    W = torch.randn(700, 48, generator=torch.Generator().manual_seed(3)).to(dtype)
    kw = dict(backend="cpu", bins=50, topk=4, per_row=True)
    for prec in ("fp32", "tf32"):
        seen.clear()
        a = superkern.overlap_stats(W, precision=prec, **kw)
        b = superkern.overlap_stats(W.float(), precision=prec, **kw)
        assert seen == [dtype, torch.float32], (prec, seen)
        assert (a.mean_sq, a.mean_abs, a.max_pair) == (b.mean_sq, b.mean_abs, b.max_pair)
        assert torch.equal(a.hist, b.hist) and torch.equal(a.row_sum_sq, b.row_sum_sq)
    if dtype == torch.bfloat16:  # a norm past 2^40 (fp16 cannot hold one): the fp32 route
        W[5] *= 2.0 ** 60
        seen.clear()
        superkern.overlap_stats(W, **kw)
        assert seen == [torch.float32]
