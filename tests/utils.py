"""Shared test helpers: fp64 gold computations and comparisons that print numbers."""
from __future__ import annotations

import torch


def round_operand(X: torch.Tensor, precision: str) -> torch.Tensor:
    """fp64 values of X (fp64 holding fp32 values) rounded to nearest even onto the input
    format of ``precision``'s products: tf32 by its 11 significant bits (written here with
    frexp, apart from the package's bit trick), bf16 and fp16 by torch's own casts."""
    if precision == "tf32":
        mant, e = torch.frexp(X)  # mant in [1/2, 1): 2^11 mant carries tf32's 11 bits
        return torch.ldexp(torch.round(mant * 2048.0) / 2048.0, e)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return X.to(dtype).double()


def gold_overlaps(W: torch.Tensor, rows=None, center: bool = False, precision: str = "fp64"):
    """fp64 gold: (idx of used rows, full cosine matrix C (N, N) in fp64) for small inputs.

    ``precision`` other than fp64: the cosines of the operands as the op rounds them,
    computed exactly: tf32 and bf16 round the raw rows and divide by the unrounded norms,
    fp16 rounds the unit rows."""
    W = W.detach().cpu().double()
    idx = torch.arange(W.shape[0]) if rows is None else torch.as_tensor(rows)
    if idx.dtype == torch.bool:
        idx = torch.nonzero(idx).flatten()
    X = W[idx]
    if center:  # zero rows are left out of the mean (and of the pairs)
        nz = X.ne(0).any(dim=1)
        X, idx = X[nz], idx[nz]
        X = X - X.mean(0)
    r = torch.linalg.vector_norm(X, dim=1)
    keep = r > 0
    X, r, idx = X[keep], r[keep], idx[keep]
    U = X / r[:, None]
    if precision in ("tf32", "bf16"):
        R = round_operand(X, precision)
        return idx, (R @ R.T) / (r[:, None] * r[None, :])
    if precision == "fp16":
        U = round_operand(U, precision)
    return idx, U @ U.T


def gold_stats(W: torch.Tensor, bins: int = 0, rows=None, center: bool = False,
               precision: str = "fp64") -> dict:
    idx, C = gold_overlaps(W, rows, center, precision)
    N = C.shape[0]
    iu = torch.triu_indices(N, N, 1)
    c = C[iu[0], iu[1]]
    out = {"idx": idx, "C": C, "c": c, "iu": iu, "N": N, "P": c.numel()}
    if c.numel():
        out.update(mean_cos=float(c.mean()), mean_abs=float(c.abs().mean()),
                   mean_sq=float((c * c).mean()), max_abs=float(c.abs().max()))
        out["var_abs"] = out["mean_sq"] - out["mean_abs"] ** 2
    A = C.abs().clone()
    A.fill_diagonal_(-1.0)
    out["row_max_abs"] = A.max(1).values if N > 1 else torch.full((N,), float("nan"))
    out["row_sum_sq"] = (C * C).sum(1) - torch.diagonal(C) ** 2
    if bins:
        b = torch.floor((c + 1.0) * (bins / 2)).long().clamp(0, bins - 1)
        out["hist"] = torch.bincount(b, minlength=bins)
        edges = torch.linspace(-1, 1, bins + 1, dtype=torch.float64)
        # Overlaps within rounding distance of an interior edge may fall on either side.
        d = (c[:, None] - edges[None, 1:-1]).abs().min(1).values if bins > 1 else c * 0 + 1
        out["hist_ambiguous"] = int((d < 1e-5).sum())
    return out


def assert_close(name: str, got: float, want: float, rtol: float, atol: float = 0.0) -> None:
    err = abs(got - want)
    tol = atol + rtol * abs(want)
    assert err <= tol, (f"{name}: got {got!r}, want {want!r}, abs err {err:.3e}, "
                        f"rel err {err / max(abs(want), 1e-300):.3e}, tol {tol:.3e}")


def assert_allclose(name: str, got: torch.Tensor, want: torch.Tensor, rtol: float,
                    atol: float = 0.0) -> None:
    got = got.detach().cpu().double()
    want = want.detach().cpu().double()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    err = (got - want).abs()
    tol = atol + rtol * want.abs()
    bad = err > tol
    if bool(bad.any()):
        i = int(torch.nonzero(bad.flatten())[0])
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.numel()} mismatch; max abs err "
            f"{float(err.max()):.3e}; first at flat index {i}: got {float(got.flatten()[i])!r}, "
            f"want {float(want.flatten()[i])!r}")


def assert_argmax_attains(name: str, got: torch.Tensor, want: torch.Tensor,
                          row_max: torch.Tensor, X: torch.Tensor, scale: torch.Tensor,
                          tol: float) -> None:
    """Per-row argmax ``got`` against a reference ``want``: equal, or (a near tie that the
    two summation orders broke differently) another partner j != i whose fp64 overlap
    |scale_i scale_j X_i . X_j| reaches the reference row max within ``tol``."""
    got, want = got.detach().cpu().long(), want.detach().cpu().long()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    rows = torch.nonzero(got != want).flatten()
    if rows.numel() == 0:
        return
    j = got[rows]
    assert bool(((j >= 0) & (j < X.shape[0]) & (j != rows)).all()), \
        f"{name}: rows {rows.tolist()[:5]} have partners {j.tolist()[:5]}"
    Xd, sd = X.detach().cpu().double(), scale.detach().cpu().double()
    c = (Xd[rows] * Xd[j]).sum(1) * sd[rows] * sd[j]
    short = row_max.detach().cpu().double()[rows] - c.abs()
    assert bool((short <= tol).all()), (
        f"{name}: {rows.numel()} rows differ; row {int(rows[short.argmax()])} has partner "
        f"{int(j[short.argmax()])}, {float(short.max()):.3e} below its row max")


# Per-precision tolerances on a single overlap (elementwise) and on means.
TOL = {"fp32": 2e-5, "tf32": 4e-3, "fp16": 4e-3, "bf16": 3e-2}

def check_against_gold(st, gold, precision, bins=0, topk=0, per_row=False, tol=None):
    """``tol``: instead of the precision's (e.g. against a gold of the rounded operands)."""
    tol = TOL[precision] if tol is None else tol
    assert st.n_used == gold["N"] and st.n_pairs == gold["P"]
    if gold["P"] == 0:
        return
    assert_close("mean_cos", st.mean_cos, gold["mean_cos"], rtol=tol, atol=tol / 10)
    assert_close("mean_abs", st.mean_abs, gold["mean_abs"], rtol=tol, atol=tol / 10)
    assert_close("mean_sq", st.mean_sq, gold["mean_sq"], rtol=2 * tol, atol=tol / 10)
    assert_close("max_abs", st.max_abs, gold["max_abs"], rtol=0, atol=tol)
    i, j = st.max_pair
    loc = {int(v): k for k, v in enumerate(gold["idx"])}
    assert i < j and abs(abs(float(gold["C"][loc[i], loc[j]])) - gold["max_abs"]) <= tol
    if bins:
        assert int(st.hist.sum()) == gold["P"], "histogram must count every pair once"
        diff = int((st.hist - gold["hist"]).abs().sum())
        assert diff <= 2 * gold["hist_ambiguous"] + (0 if precision == "fp32" else gold["P"] // 50), (
            f"histogram L1 diff {diff} > allowed (ambiguous {gold['hist_ambiguous']})")
    if topk:
        want = gold["c"].abs().sort(descending=True).values[:topk]
        assert_allclose("topk |c|", st.topk_values.abs(), want, rtol=0, atol=tol)
        pairs = st.topk_pairs
        assert (pairs[:, 0] < pairs[:, 1]).all()
        assert len({tuple(p) for p in pairs.tolist()}) == topk, "top-k pairs must be distinct"
        cg = torch.tensor([float(gold["C"][loc[int(a)], loc[int(b)]]) for a, b in pairs])
        assert_allclose("topk values vs their pairs", st.topk_values, cg, rtol=0, atol=tol)
    if per_row:
        used = gold["idx"]
        assert_allclose("row_max_abs", st.row_max_abs[used], gold["row_max_abs"], rtol=0, atol=tol)
        assert_allclose("row_sum_sq", st.row_sum_sq[used], gold["row_sum_sq"], rtol=2 * tol,
                        atol=tol)
        # The reported argmax attains the row max.
        for r in range(gold["N"]):
            j = int(st.row_argmax[used[r]])
            assert j != int(used[r]) and abs(abs(float(gold["C"][r, loc[j]]))
                                             - float(gold["row_max_abs"][r])) <= tol


def run_compiled_triton(code: str, timeout: float = 900.0):
    """Run ``code`` in a fresh Python without TRITON_INTERPRET, so ``@triton.jit`` functions are
    real JIT functions that ``triton.compile`` can build for a GPU target offline (Triton's
    bundled ptxas; no GPU needed). Skips when Triton's NVIDIA backend is missing; fails with
    the child's stderr otherwise."""
    import os
    import subprocess
    import sys

    import pytest

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0 and "ptxas" in proc.stderr and "not found" in proc.stderr.lower():
        pytest.skip("Triton's bundled ptxas is not available here")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc
