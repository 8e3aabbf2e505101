"""The Triton overlap kernel beyond the shared backend tests: schedules, histogram paths,
determinism (interpreter), and realistic sizes on a GPU (marked gpu). Top-k passes and ties:
tests/test_overlap_triton_topk.py."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import superkern
from superkern import backend as B
from superkern.ops.overlap_ref import overlap_partials_torch
from tests.utils import assert_allclose, assert_argmax_attains, assert_close, gold_stats

if B.available("cuda" if torch.cuda.is_available() else "cpu")["triton"] is not None:
    pytest.skip("triton backend unavailable here", allow_module_level=True)

import superkern.triton.overlap as T  # noqa: E402  (needs triton)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# Same products, fp32 sums in another order: the interpreter's dot is exact fp32 in numpy's
# order; tensor cores accumulate in theirs.
TOL = 2e-6 if DEV == "cpu" else 1e-5


def _operands(W: torch.Tensor, dtype=torch.float32):
    norms = torch.linalg.vector_norm(W.double(), dim=1)
    return W.to(dtype).contiguous(), (1.0 / norms).float().to(W.device)


def _rand(n, m, seed, device=DEV, anisotropic=False):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, m, generator=g, dtype=torch.float64)
    if anisotropic:
        W += 3.0 * torch.randn(1, m, generator=g, dtype=torch.float64)
    return W.float().to(device)


def _cfg(m, **kw):
    return dataclasses.replace(T.overlap_config(torch.float32, m, DEV), **kw)


def assert_partials_match(got, ref, tol, X, s, hist_slack=0):
    """Triton partials vs the torch reference on the same inputs X, s (both fp32 tiles)."""
    P = ref.row_max_abs.numel() * (ref.row_max_abs.numel() - 1) / 2
    for f in ("sum_cos", "sum_abs", "sum_sq"):
        assert_close(f, getattr(got, f), getattr(ref, f), rtol=tol, atol=tol * P ** 0.5)
    assert_allclose("row_max_abs", got.row_max_abs, ref.row_max_abs, rtol=0, atol=tol)
    assert_allclose("row_sum_sq", got.row_sum_sq, ref.row_sum_sq, rtol=tol, atol=tol)
    assert_argmax_attains("row_argmax", got.row_argmax, ref.row_argmax, ref.row_max_abs, X, s,
                          tol)
    if ref.hist is not None:
        assert int(got.hist.sum()) == int(ref.hist.sum()) == int(P)
        diff = int((got.hist - ref.hist).abs().sum())
        assert diff <= hist_slack, f"histogram L1 diff {diff} > {hist_slack}"
    assert got.topk_pairs.shape == ref.topk_pairs.shape
    assert_allclose("topk |c|", got.topk_values.abs(), ref.topk_values.abs(), rtol=0, atol=tol)


# --- interpreter-sized correctness ------------------------------------------------------

CONFIGS = {
    "default": {},
    "split2": {"split": 2},
    "tma": {"tma": True, "split": 2},
    "one_program": {"programs": 1},
    "seven_programs_band1": {"programs": 7, "group": 1},
    "block32_band3": {"block": 32, "group": 3, "programs": 5},
    # the CUDA default's tiles (overlap_config): 128-row blocks, a 64-bin window, two column
    # halves, bands of 8 block-rows; 300 rows leave a ragged third block-row
    "gpu_tiles": {"block": 128, "group": 8, "win": 64, "split": 2, "programs": 3},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ragged_multitile_schedules_against_gold(name):
    if DEV == "cuda" and name not in ("default", "tma"):
        pytest.skip("interpreter schedule sweep (each config is a GPU compile)")
    # 300 rows: not a multiple of 64 or 32; m = 36: not a multiple of the K step; with
    # 64-row tiles 15 tiles on 4 programs walk 3 bands of 2 block-rows.
    W = _rand(300, 36, seed=1)
    X, s = _operands(W)
    cfg = _cfg(36, **CONFIGS[name])
    got = T.overlap_partials_triton(X, s, bins=50, topk=6, precision="fp32", config=cfg)
    ref = overlap_partials_torch(X, s, bins=50, topk=6)
    gold = gold_stats(W, bins=50)
    assert_partials_match(got, ref, TOL, X, s, hist_slack=2 * gold["hist_ambiguous"])
    P = gold["P"]
    assert_close("mean_abs vs gold", got.sum_abs / P, gold["mean_abs"], rtol=1e-6)
    assert_close("mean_sq vs gold", got.sum_sq / P, gold["mean_sq"], rtol=1e-6)
    assert_allclose("row_sum_sq vs gold", got.row_sum_sq, gold["row_sum_sq"], rtol=1e-5)
    assert torch.equal(got.topk_pairs, ref.topk_pairs)


def test_rows_padded_to_16_columns(monkeypatch):
    """Rows of m % 16 != 0 reach the kernel zero-padded to a multiple of 16 (so compiled
    Triton can prove the loads aligned), with the statistics of the unpadded rows."""
    X = torch.randn(5, 36)
    P = T.pad_columns(X)
    assert P.shape == (5, 48) and torch.equal(P[:, :36], X) and not P[:, 36:].any()
    assert T.pad_columns(P) is P
    seen = []
    launch = T._launch
    monkeypatch.setattr(T, "_launch", lambda X, *a, **k: seen.append(X.shape) or
                        launch(X, *a, **k))
    W = _rand(70, 21, seed=4)
    got = T.overlap_partials_triton(*_operands(W), bins=8, topk=2, precision="fp32")
    gold = gold_stats(W, bins=8)
    assert seen and all(shape == (70, 32) for shape in seen)
    assert_close("mean_sq vs gold", got.sum_sq / gold["P"], gold["mean_sq"], rtol=1e-6)
    assert int(got.hist.sum()) == gold["P"]
    assert int((got.hist - gold["hist"]).abs().sum()) <= 2 * gold["hist_ambiguous"]


@pytest.mark.parametrize("m, anisotropic, paths", [(512, False, {32}), (512, True, {32, 64}),
                                                    (96, False, {64}), (8, False, {128})])
def test_histogram_window_and_full_paths(m, anisotropic, paths, monkeypatch):
    # 128 bins, window 32: a tile's c spans < 32 bins at m = 512 (window; also around the
    # offset of a shared direction), 32..63 at m = 96 (double window), most of [-1, 1] at
    # m = 8 (all bins). Masked elements count as c = 0 in the window choice, so diagonal
    # tiles far from 0 take the double window. Every path must give the reference counts,
    # and the very same counts as with the windows disabled.
    W = _rand(140, m, seed=2, anisotropic=anisotropic)
    X, s = _operands(W)
    sizes = []
    if DEV == "cpu":  # which histogram sizes ran (interpreter internals; a spy only)
        from triton.runtime import interpreter
        orig = interpreter.InterpreterBuilder.create_histogram

        def spy(self, data, bins, mask):
            sizes.append(bins)
            return orig(self, data, bins, mask)

        monkeypatch.setattr(interpreter.InterpreterBuilder, "create_histogram", spy)
    win = T.overlap_partials_triton(X, s, bins=128, topk=0, config=_cfg(m, win=32))
    if DEV == "cpu":
        assert set(sizes) == paths, f"expected {paths}-bin histograms, ran {set(sizes)}"
    full = T.overlap_partials_triton(X, s, bins=128, topk=0, config=_cfg(m, win=128))
    ref = overlap_partials_torch(X, s, bins=128, topk=0)
    amb = gold_stats(W, bins=128)["hist_ambiguous"]
    assert torch.equal(win.hist, full.hist), (win.hist - full.hist).nonzero()
    assert int((win.hist - ref.hist).abs().sum()) <= 2 * amb


@pytest.mark.parametrize("bins", [1, 7, 100, 300])
def test_odd_bin_counts(bins):
    W = _rand(90, 24, seed=3)
    X, s = _operands(W)
    got = T.overlap_partials_triton(X, s, bins=bins, topk=0)
    ref = overlap_partials_torch(X, s, bins=bins, topk=0)
    assert got.hist.shape == (bins,) and got.hist.dtype == torch.int64
    amb = gold_stats(W, bins=bins)["hist_ambiguous"]
    assert int((got.hist - ref.hist).abs().sum()) <= 2 * amb


def test_bin_limit_named_and_auto_moves_past_it(monkeypatch):
    """The histogram lives in shared memory: 4096 bins run, 4097 are refused with the
    numbers, and a plain "auto" that would pick triton hands such a histogram to the next
    backend instead (on CPU the interpreter stands in for the GPU's order)."""
    from superkern.ops.overlap_types import TRITON_MAX_BINS
    W = _rand(40, 24, seed=5)
    X, s = _operands(W)
    got = T.overlap_partials_triton(X, s, bins=TRITON_MAX_BINS, topk=0)
    ref = overlap_partials_torch(X, s, bins=TRITON_MAX_BINS, topk=0)
    assert int((got.hist - ref.hist).abs().sum()) <= 2 * gold_stats(
        W, bins=TRITON_MAX_BINS)["hist_ambiguous"]
    with pytest.raises(ValueError, match=r"bins=4097.*at most 4096.*8192 padded bins"):
        T.overlap_partials_triton(X, s, bins=TRITON_MAX_BINS + 1, topk=0)
    monkeypatch.delenv(B.ENV_BACKEND, raising=False)
    monkeypatch.setitem(B._AUTO_ORDER, W.device.type, ("triton", "cpu", "torch"))
    assert superkern.overlap_stats(W, bins=64).backend == "triton"
    big = superkern.overlap_stats(W, bins=TRITON_MAX_BINS + 1)
    assert big.backend != "triton" and int(big.hist.sum()) == 40 * 39 // 2
    with pytest.raises(ValueError, match="at most 4096"):
        superkern.overlap_stats(W, bins=TRITON_MAX_BINS + 1, backend="triton")


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16),
                                              ("tf32", torch.float32)])
def test_low_precisions_match_reference(precision, dtype):
    # The interpreter upcasts exactly (rounds to tf32 for "tf32"): same products as torch.
    W = _rand(100, 40, seed=4)
    X, s = _operands(W, dtype)
    if precision == "fp16":  # the caller normalises fp16 rows
        X = (W.double() * s.double()[:, None]).to(dtype)
        s = torch.ones_like(s)
    got = T.overlap_partials_triton(X, s, bins=16, topk=4, precision=precision)
    ref = overlap_partials_torch(X, s, bins=16, topk=4, precision=precision)
    assert_partials_match(got, ref, TOL, X, s, hist_slack=4)


@pytest.mark.parametrize("grow", [True, False])
def test_deterministic_bits_with_overflow_and_many_programs(grow, monkeypatch):
    """Identical runs give identical bits, the top-k overflow settled by a grown buffer or
    (GROW_MAX = 0) by raised thresholds (on a GPU: over candidates stored in atomic order)."""
    if not grow:
        monkeypatch.setattr(T._topk, "GROW_MAX", 0)
    W = _rand(230, 20, seed=8, anisotropic=True)
    X, s = _operands(W)
    cfg = _cfg(20, programs=6, split=2)
    a = T.overlap_partials_triton(X, s, bins=32, topk=5, config=cfg, topk_capacity=9)
    b = T.overlap_partials_triton(X, s, bins=32, topk=5, config=cfg, topk_capacity=9)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        same = torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        assert same, f"{f.name} differs between identical runs"


def test_env_config_and_validation(monkeypatch):
    monkeypatch.setenv(T.ENV_CONFIG, "block=32,tma=1,num_stages=4")
    cfg = T.overlap_config(torch.bfloat16, 576, "cpu")
    assert (cfg.block, cfg.tma, cfg.num_stages) == (32, True, 4)
    monkeypatch.setenv(T.ENV_CONFIG, "blok=32")
    with pytest.raises(ValueError, match="unknown key 'blok'"):
        T.overlap_config(torch.bfloat16, 576, "cpu")
    monkeypatch.delenv(T.ENV_CONFIG)
    with pytest.raises(ValueError, match="power of two"):
        dataclasses.replace(T.overlap_config(torch.float32, 8, "cpu"), block=48).validate()
    with pytest.raises(ValueError, match="must exceed topk"):
        T._topk.capacity(5, 100, 5.0, 5)


def test_public_api_with_env_config(monkeypatch):
    # Through the public op; on the GPU this is the one-part epilogue (default: two halves).
    monkeypatch.setenv(T.ENV_CONFIG, "block=32,programs=3,split=2" if DEV == "cpu" else "split=1")
    W = _rand(75, 12, seed=9)
    st = superkern.overlap_stats(W, bins=8, topk=3, per_row=True, backend="triton")
    ref = superkern.overlap_stats(W, bins=8, topk=3, per_row=True, backend="torch")
    assert st.max_pair == ref.max_pair and torch.equal(st.topk_pairs, ref.topk_pairs)
    assert_close("mean_abs", st.mean_abs, ref.mean_abs, rtol=1e-6)


# --- GPU, realistic sizes -----------------------------------------------------------------

def _near_edges(X: torch.Tensor, s: torch.Tensor, bins: int, width: float) -> int:
    """Pairs i < j whose c (fp32 Gram of X's values) lies within ``width`` of an interior
    histogram edge -1 + 2k/bins, in row blocks (no N x N matrix)."""
    Xf, sf = X.float(), s.float()
    N, count = X.shape[0], 0
    for r0 in range(0, N, 1024):
        c = (Xf[r0:r0 + 1024] @ Xf.T) * sf[r0:r0 + 1024, None] * sf[None, :]
        t = (c.double() + 1) * (bins / 2)
        near = (t - t.round()).abs() * (2 / bins) < width
        near &= (t.round() > 0) & (t.round() < bins)
        rows = torch.arange(r0, r0 + c.shape[0], device=X.device)
        count += int((near & (rows[:, None] < torch.arange(N, device=X.device))).sum())
    return count


def test_near_edges_counts_pairs_by_hand():
    X = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    s = torch.ones(3)
    # c: (0,1) = 0.6, (0,2) = 0, (1,2) = 0.8; 10 bins have edges at -1, -0.8, ..., 0.8, 1
    assert _near_edges(X, s, 10, 1e-6) == 3
    assert _near_edges(X, s, 4, 1e-6) == 1        # edges -0.5, 0, 0.5: only c = 0
    assert _near_edges(X, s, 3, 1e-6) == 0        # edges -1/3, 1/3


@pytest.mark.gpu
@pytest.mark.parametrize("tma", [False, True])
def test_gpu_head_size_bf16_vs_torch(tma, monkeypatch):
    monkeypatch.setenv(T.ENV_CONFIG, f"tma={int(tma)}")
    W = _rand(8192, 576, seed=10, device="cuda", anisotropic=True)
    X, s = _operands(W, torch.bfloat16)
    got = T.overlap_partials_triton(X, s, bins=256, topk=100, precision="bf16")
    ref = overlap_partials_torch(X, s, bins=256, topk=100, precision="bf16")
    # Same exact bf16 products, fp32 sums in a different order: ~1e-6 relative. Pairs that
    # close to a bin edge may land on either side (each such pair moves the L1 diff by 2).
    assert_partials_match(got, ref, 2e-5, X, s, hist_slack=2 * _near_edges(X, s, 256, 4e-6))
    overlap = len({tuple(p) for p in got.topk_pairs.tolist()}
                  & {tuple(p) for p in ref.topk_pairs.tolist()})
    assert overlap >= 98, f"top-100 pairs share only {overlap} with torch's"


@pytest.mark.gpu
def test_gpu_deterministic_and_fp32_tf32():
    W = _rand(6000, 768, seed=11, device="cuda")
    for precision in ("fp32", "tf32"):
        X, s = _operands(W)
        a = T.overlap_partials_triton(X, s, bins=64, topk=10, precision=precision)
        b = T.overlap_partials_triton(X, s, bins=64, topk=10, precision=precision)
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y), f.name
        ref = overlap_partials_torch(X, s, bins=64, topk=10, precision=precision)
        tol = 2e-6 if precision == "fp32" else 2e-3
        assert_partials_match(a, ref, tol, X, s, hist_slack=a.hist.sum().item() // 10**4)


@pytest.mark.gpu
def test_gpu_n_times_m_beyond_int32():
    # 266240 x 8192 bf16 (4.4 GB): element offsets pass 2^31. Check the exact identities,
    # every pair counted once, and the row max of rows beyond the 2^31 boundary directly.
    N, m = 266240, 8192
    assert N * m > 2 ** 31
    g = torch.Generator(device="cuda").manual_seed(12)
    W = torch.randn(N, m, device="cuda", dtype=torch.bfloat16, generator=g)
    W[-1] = W[5]  # a duplicate pair spanning the 2^31 boundary
    X, s = _operands(W, torch.bfloat16)
    got = T.overlap_partials_triton(X, s, bins=256, topk=3, precision="bf16")
    P = N * (N - 1) // 2
    assert int(got.hist.sum()) == P
    ex = superkern.overlap_moments_exact(W.float(), block=1 << 14)
    assert_close("mean_sq", got.sum_sq / P, ex["mean_sq"], rtol=1e-3)
    assert tuple(got.topk_pairs[0].tolist()) == (5, N - 1)
    assert int(got.row_argmax[N - 1]) == 5 and int(got.row_argmax[5]) == N - 1
    U = X.float() * s[:, None]
    for r in (0, N // 2, 262144, N - 2):
        a = (U @ U[r]).abs()
        a[r] = -1
        assert_close(f"row_max_abs[{r}]", float(got.row_max_abs[r]), float(a.max()), rtol=0,
                     atol=1e-3)
    assert_allclose("row_sum_sq", got.row_sum_sq.double(), ex["row_sum_sq"], rtol=2e-2,
                    atol=1e-2)


def test_integer_arguments_used_as_tensors_are_not_specialised():
    # Compiled Triton turns an int argument equal to 1 into a constant with no .to(); the
    # interpreter does not, so this is checked on the source: every argument the kernel
    # calls .to() on must be excluded from specialisation (1 tile: a head of <= 128 rows, or
    # a 128-row first part in split mode).
    import inspect
    import re

    from superkern.triton._overlap_kernel import _overlap_kernel as K
    src = inspect.getsource(K.fn)
    used = {a for a in K.arg_names if re.search(rf"\b{a}\.to\(", src)}
    assert used >= {"NB", "NUM_TILES", "NBA"}
    if hasattr(K, "params"):  # compiled JITFunction
        kept = {p.name for p in K.params if p.do_not_specialize}
    else:  # the interpreter keeps the decorator's arguments
        kept = set(K.kwargs.get("do_not_specialize") or ())
    assert used <= kept, f"specialisable arguments used as tensors: {sorted(used - kept)}"


_COMPILE_OVERLAP = r'''
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from superkern.triton._overlap_kernel import _NO_SPECIALIZE, _overlap_kernel as K
from superkern.triton.overlap import (PAD, gpu_input_precision, kernel_constexprs,
                                      overlap_config)

PTRS = {"scale_ptr": "*fp32", "part_sums_ptr": "*fp64", "part_hist_ptr": "*i64",
        "row_key_ptr": "*i64", "row_sq_ptr": "*i64", "cand_cnt_ptr": "*i64",
        "cand_val_ptr": "*fp32", "cand_i_ptr": "*i32", "cand_j_ptr": "*i32",
        "thr_val": "fp32", "half_bins": "fp32"}
DT = {"fp32": (torch.float32, "fp32"), "tf32": (torch.float32, "fp32"),
      "bf16": (torch.bfloat16, "bf16"), "fp16": (torch.float16, "fp16")}
# (precision, m, bins, topk, split, tma, every specialisable int = 1): each precision at the
# probe's defaults (bins 100 -> a 64-bin window, odd K), then one factor at a time.
VARIANTS = [(p, 4001, 100, 50, 0, False, False) for p in DT] + [
    ("bf16", 8192, 0, 0, 0, False, False), ("bf16", 8192, 64, 0, 0, False, False),
    ("bf16", 8192, 256, 0, 0, False, False), ("bf16", 8192, 0, 10, 0, False, False),
    ("bf16", 8192, 256, 100, 1024, False, False), ("bf16", 8192, 256, 100, 0, True, False),
    ("bf16", 8192, 0, 0, 1024, True, False), ("tf32", 576, 256, 100, 0, True, False),
    ("bf16", 8192, 256, 100, 0, False, True), ("fp32", 39, 0, 0, 0, False, True)]
done = 0
for prec, m_head, bins, topk, split, tma, ones in VARIANTS:
    dtype, ty = DT[prec]
    m = -(-m_head // PAD) * PAD  # the launcher pads the rows (pad_columns)
    cfg = overlap_config(dtype, m, "cuda")
    c = kernel_constexprs(cfg, 152064, m, bins=bins, topk=topk, split=split, tma=tma,
                          input_precision=gpu_input_precision(prec))
    sig = {a: "constexpr" if a in c else PTRS.get(a) or
           ("*" + ty if a in ("x_ptr", "x_desc") else "i32") for a in K.arg_names}
    if tma:
        sig["x_desc"] = f"tensordesc<{ty}[{cfg.block}, {cfg.block_k}]>"
    fixed = {}
    if not bins:
        fixed["n_bins"] = 1  # the launcher passes max(bins, 1)
    if not topk:
        fixed["cand_cap"] = 1
    if ones:
        fixed.update({a: 1 for a, t in sig.items() if t == "i32" and a not in _NO_SPECIALIZE})
    for a, v in fixed.items():
        sig[a], c[a] = "constexpr", v
    # what a launch adds: 16-byte alignment of every pointer, and of the ints that are
    # multiples of 16 (m and the row stride, padded to be), which enables the pipelined loads
    div = [a for a, t in sig.items() if t.startswith("*")]
    div += [a for a in ("M", "stride_x") if sig[a] == "i32" and m % 16 == 0]
    attrs = {(K.arg_names.index(a),): [["tt.divisibility", 16]] for a in div}
    variant = (prec, m_head, bins, topk, split, tma, ones)
    try:
        k = triton.compile(ASTSource(fn=K, signature=sig, constexprs=c, attrs=attrs),
                           target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
    except Exception as exc:
        raise SystemExit(f"variant {variant}: {type(exc).__name__}: {exc}"[:3000])
    if not (tma or ones):  # padded rows: 16-byte asynchronous copies, several stages
        copies = [ln for ln in k.asm["ptx"].splitlines()
                  if "cp.async.c" in ln and "shared.global" in ln]
        if not copies:
            raise SystemExit(f"variant {variant}: row loads not asynchronous")
        if any(", 0x10," not in ln for ln in copies):
            raise SystemExit(f"variant {variant}: row loads narrower than 16 bytes: "
                             f"{[ln.strip() for ln in copies if ', 0x10,' not in ln][:2]}")
        if k.metadata.shared < 2 * 2 * cfg.block * cfg.block_k * (4 if ty == "fp32" else 2):
            raise SystemExit(f"variant {variant}: {k.metadata.shared} bytes of shared "
                             "memory hold fewer than two stages")
    done += 1
print(done, "variants")
'''


def test_kernel_compiles_for_sm90_in_every_variant():
    """The interpreter never specialises, so compile the real kernel offline for sm_90 (no
    GPU needed), with the launcher's own constexprs (``kernel_constexprs``): every precision
    at the probe's defaults (odd K, 100 bins), then histogram alone, top-k alone, neither,
    256 bins, split (RECT) schedules, TMA-descriptor loads, and every specialisable integer
    argument equal to 1 (compiled Triton makes those constexprs; bins = 0 passes n_bins = 1)."""
    from tests.utils import run_compiled_triton

    proc = run_compiled_triton(_COMPILE_OVERLAP)
    assert "14 variants" in proc.stdout, proc.stdout
