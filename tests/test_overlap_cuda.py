"""The hand-written CUDA overlap backend (csrc/cuda/, superkern/ops/overlap_cuda.py).

CPU part (runs in CI): the extension's CUDA entry point exists when nvcc did, its argument
checks raise ValueError with the numbers before touching a GPU, a call without a driver is a
clean RuntimeError, and the tile schedule covers the triangle once. The launcher's logic runs
against an emulation of the kernel in tests/test_overlap_cuda_launcher.py. GPU part (marked
gpu): the kernel itself against the torch reference.
tests/test_overlap.py runs the public op on backend "cuda" as well.
"""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from superkern import backend as B
from superkern.ops import overlap_cuda as oc
from superkern.ops.overlap_ref import overlap_partials_torch, round_to_precision

EXT = B.extension()
HAS_BINDING = EXT is not None and hasattr(EXT, "overlap_partials_cuda")
needs_binding = pytest.mark.skipif(not HAS_BINDING, reason="extension built without CUDA")
I32_MAX = 2**31 - 1


def test_extension_built_with_cuda_when_nvcc_exists():
    if os.environ.get("SUPERKERN_NO_EXT", "0") not in ("", "0"):
        pytest.skip("SUPERKERN_NO_EXT set")
    assert EXT is not None, f"superkern._C does not import: {B.extension_error()}"
    nvcc = shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc")
    if nvcc and os.environ.get("SUPERKERN_NO_CUDA", "0") in ("", "0"):
        assert EXT.built_with_cuda, "nvcc exists but the extension was built without CUDA"
    if EXT.built_with_cuda:
        assert HAS_BINDING and EXT.overlap_cuda_config["tile"] == 128


def _args(**over):
    base = 1 << 20  # a 16-byte aligned fake address: never dereferenced by the checks
    kw = dict(x_ptr=base, scale_ptr=base, n=10, m=8, ld=8, precision="bf16", stats=True,
              row_key_ptr=base, row_sq_ptr=base, block_sums_ptr=base, max_blocks=4, bins=8,
              hist_ptr=base, topk=3, cand_cap=16, cand_count_ptr=base, cand_val_ptr=base,
              cand_ij_ptr=base, thr_value=-1.0, thr_i=I32_MAX, thr_j=I32_MAX, stream=0)
    kw.update(over)
    return kw


@needs_binding
@pytest.mark.parametrize("over, match", [
    (dict(precision="fp8"), "unknown precision 'fp8'"),
    (dict(x_ptr=0), "x_ptr is a null pointer"),
    (dict(scale_ptr=0), "scale_ptr is a null pointer"),
    (dict(x_ptr=(1 << 20) + 4), r"x_ptr=0x100004 is not 16-byte aligned .* = 4\)"),
    (dict(row_key_ptr=(1 << 20) + 4), "row_key_ptr=.* not 8-byte aligned"),
    (dict(n=-1), "n must be >= 0, got -1"),
    (dict(n=2**30 + 1), r"n=1073741825 exceeds .* 1073741824 rows"),
    (dict(m=0), "m must be >= 1, got 0"),
    (dict(m=9), r"ld=8 must be >= m=9 rounded up to 8 elements \(16\)"),
    (dict(ld=12), "ld=12 must be a multiple of 8 elements"),
    (dict(precision="fp32", ld=6, m=6), "ld=6 must be a multiple of 4 elements"),
    (dict(topk=46), r"topk=46 exceeds the number of pairs P=45 \(n=10\)"),
    (dict(topk=-1), "topk must be >= 0, got -1"),
    (dict(topk=16, cand_cap=16), "cand_cap=16 must exceed topk=16"),
    (dict(topk=0), "cand_cap=16 given with topk=0"),
    (dict(bins=-2), r"bins must be in \[0, 2\^24\], got -2"),
    (dict(stats=False), "bins=8 needs stats=True"),
    (dict(stats=False, bins=0, topk=0, cand_cap=0), "nothing to compute"),
    (dict(max_blocks=0), r"max_blocks must be in \[1, 2\^31\), got 0"),
    (dict(thr_i=-1), r"thr_i must be in \[0, 2147483647\], got -1"),
    (dict(thr_value=float("nan")), "thr_value is NaN"),
    (dict(stream=-5), "stream must be .* got -5"),
    (dict(n=300, split=100), r"split=100 must be 0 \(all pairs\) or a multiple of 128"),
    (dict(n=128, split=128), r"split=128 must be .* in \(0, n=128\)"),
    (dict(n=300, split=128, topk=22017, cand_cap=30000),
     r"topk=22017 exceeds the number of pairs P=22016"),
])
def test_binding_validation(over, match):
    with pytest.raises(ValueError, match=match):
        EXT.overlap_partials_cuda(**_args(**over))


@needs_binding
def test_binding_without_gpu_is_a_clean_error():
    if torch.cuda.is_available():
        # A fake address is not device memory: rejected by cudaPointerGetAttributes.
        with pytest.raises(ValueError, match="x_ptr=0x100000 is not CUDA device memory"):
            EXT.overlap_partials_cuda(**_args())
    else:
        with pytest.raises(RuntimeError, match="CUDA error in cudaGetDevice"):
            EXT.overlap_partials_cuda(**_args())
    assert EXT.overlap_partials_cuda(**_args(n=1, topk=0, cand_cap=0)) == 0  # no pairs: no-op


@needs_binding
@pytest.mark.parametrize("T,ra", [(2, 1), (17, 1), (17, 8), (33, 16), (33, 32), (100, 37)])
def test_tile_schedule_split_rectangle(T, ra):
    g = EXT.overlap_cuda_config["group"]
    tiles = EXT.overlap_cuda_tile_schedule(T, g, ra)
    assert tiles.shape == (ra * (T - ra), 2)
    bi, bj = tiles[:, 0], tiles[:, 1]
    assert (bi >= 0).all() and (bi < ra).all() and (bj >= ra).all() and (bj < T).all()
    assert len({(int(a), int(b)) for a, b in tiles}) == len(tiles), "a tile appears twice"
    band0 = tiles[: min(g, ra) * (T - ra)]
    assert (band0[:, 0] < g).all(), "the first band holds only its g tile rows"
    with pytest.raises(ValueError, match="rect_a=5 must be 0"):
        EXT.overlap_cuda_tile_schedule(5, g, 5)


@needs_binding
@pytest.mark.parametrize("T", [1, 2, 15, 16, 17, 33, 100])
def test_tile_schedule_covers_triangle_once(T):
    g = EXT.overlap_cuda_config["group"]
    tiles = EXT.overlap_cuda_tile_schedule(T, g)
    assert tiles.shape == (T * (T + 1) // 2, 2)
    bi, bj = tiles[:, 0], tiles[:, 1]
    assert (bi >= 0).all() and (bi <= bj).all() and (bj < T).all()
    assert len({(int(a), int(b)) for a, b in tiles}) == len(tiles), "a tile appears twice"
    if T > g:  # L2 locality: the first band runs column by column over its g rows
        assert (tiles[len(tiles) - 1] == [T - 1, T - 1]).all()
        band0 = tiles[: g * (g + 1) // 2 + g]
        assert (band0[:, 0] < g).all()


# Per-block shared-memory limits (cudaDevAttrMaxSharedMemoryPerBlockOptin, CUDA Programming
# Guide): sm_90 227 KiB, sm_80 163 KiB, sm_86 and sm_89 99 KiB, sm_75 64 KiB.
OPTIN = {"sm_90": 232448, "sm_80": 166912, "sm_86": 101376, "sm_75": 65536}


@needs_binding
@pytest.mark.parametrize("arch", list(OPTIN))
def test_histogram_fits_the_devices_shared_memory(arch):
    """A histogram never asks for more shared memory than the device allows one block: on
    99 KiB parts up to 2048 bins stay in shared memory and more go to global atomics."""
    optin, base = OPTIN[arch], EXT.overlap_cuda_config["smem_base_bytes"]
    for bins in (1, 2, 3, 31, 256, 1000, 2048, 2049, 4096, 4097, 10000):
        h = EXT.overlap_cuda_hist_layout(bins, optin)
        if h["global"]:
            assert h["words"] == 0 and h["smem_bytes"] == base
            continue
        assert h["smem_bytes"] == base + 4 * h["words"] <= optin, (arch, bins, h)
        assert h["words"] & (h["words"] - 1) == 0 and bins * h["copies"] <= h["words"]
        assert h["copies"] == 32 or bins * 2 * h["copies"] > h["words"]  # as many as fit
    shared = [b for b in range(1, 5000, 7) if not EXT.overlap_cuda_hist_layout(b, optin)["global"]]
    assert max(shared, default=0) <= {"sm_90": 4096, "sm_80": 4096, "sm_86": 2048,
                                      "sm_75": 0}[arch]
    assert EXT.overlap_cuda_hist_layout(0, optin) == {"words": 0, "copies": 1, "global": False,
                                                      "smem_bytes": base}
    assert EXT.overlap_cuda_hist_layout(4096, OPTIN["sm_90"])["smem_bytes"] == 108544
    assert EXT.overlap_cuda_hist_layout(2049, OPTIN["sm_86"])["global"]


@needs_binding
def test_kernel_tf32_rounding_is_the_references():
    """The bits the kernel feeds its tf32 mma, against round_to_precision: random values,
    ties, subnormals, the largest finite values (rounding up to inf), inf and NaN payloads."""
    g = torch.Generator().manual_seed(3)
    bits = torch.randint(-2**31, 2**31 - 1, (4000,), generator=g, dtype=torch.int64)
    special = [0x00000000, 0x80000000, 0x00001000, 0x00003000, 0x00002FFF, 0x3F801000,
               0x3F803000, 0x3F800FFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
               0x7F800001, 0x7FC00000, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFC00001]
    words = [int(b) & 0xFFFFFFFF for b in bits] + special
    x = torch.tensor([w - (1 << 32) if w >= 1 << 31 else w for w in words],
                     dtype=torch.int32).view(torch.float32)
    want = round_to_precision(x, "tf32").view(torch.int32)
    got = [EXT.overlap_cuda_round_tf32(w) for w in words]
    bad = [(hex(w), hex(g_), hex(int(v) & 0xFFFFFFFF)) for w, g_, v in zip(words, got, want)
           if g_ != int(v) & 0xFFFFFFFF]
    assert not bad, f"{len(bad)} mismatches (input, kernel, reference), first: {bad[:5]}"
    assert EXT.overlap_cuda_round_tf32(0x7FFFFFFF) == 0x7FFFFFFF  # a NaN stays a NaN


def test_devices_older_than_sm80_are_not_offered(monkeypatch):
    """Triton supports compute capability 8.0 and newer, the CUDA kernel needs sm_80's mma:
    on a 7.5 part neither is usable (auto falls back to torch), each saying why."""
    from superkern.toy.backend import _triton_why_not, triton_toy

    checks = {"cuda": lambda d: B._why_not("cuda", d), "triton": lambda d: B._why_not("triton", d),
              "triton toy": _triton_why_not}
    present = {"cuda": HAS_BINDING, "triton": B.triton_error() is None,
               "triton toy": triton_toy()[0] is not None}
    if not any(present.values()):
        pytest.skip("neither the CUDA binding nor Triton is installed")
    cuda = torch.device("cuda")
    if not torch.cuda.is_available():  # on a machine without CUDA: the reason, not a crash
        for name, why_not in checks.items():
            if present[name]:
                assert "torch sees no CUDA device" in why_not(cuda), name
                assert "torch sees no CUDA device" in why_not(torch.device("cuda:3")), name
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert "cuda:99 does not exist" in B.old_gpu(torch.device("cuda:99"), "x")
    for name, why_not in checks.items():
        if not present[name]:
            continue
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
        why = why_not(cuda)
        assert why is not None and "compute capability >= 8.0" in why and "7.5" in why, why
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
        assert why_not(cuda) is None, (name, why_not(cuda))


def test_cuda_operand_layout():
    X = torch.randn(5, 6)
    Xk, ld = oc.cuda_operand(X, "bf16")  # 6 bf16 = 12 bytes: padded to 8 columns
    assert Xk.dtype == torch.bfloat16 and ld == 8 and Xk.shape == (5, 8)
    assert torch.equal(Xk[:, 6:], torch.zeros(5, 2, dtype=torch.bfloat16))
    W = torch.randn(7, 16)
    Xk, ld = oc.cuda_operand(W[:, :8], "fp32")  # row-strided view, whole chunks: no copy
    assert ld == 16 and Xk.data_ptr() == W.data_ptr()
    Xk, ld = oc.cuda_operand(torch.randn(4, 5), "tf32")
    assert ld == 8 and Xk.dtype == torch.float32


def test_launcher_rejects_cpu_tensors():
    with pytest.raises(ValueError, match="CUDA tensor"):
        oc.overlap_partials_cuda(torch.randn(4, 3), torch.ones(4), bins=0, topk=0)


# ---- GPU: the kernel itself -----------------------------------------------------------------

gpu = pytest.mark.gpu
# Per-pair tolerance against the reference on identically rounded inputs: only the fp32
# summation order differs (random-walk error ~ sqrt(m) 2^-24; tensor cores truncate).
PREC_TOL = {"fp32": 1e-5, "tf32": 1e-4, "bf16": 1e-4, "fp16": 1e-4}


def _cuda_ready():
    why = B.available("cuda")["cuda"] if torch.cuda.is_available() else "no CUDA device"
    if why is not None:
        pytest.skip(f"cuda backend unavailable: {why}")


def _inputs(n, m, precision, seed=0, dev="cuda"):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, m, generator=g, dtype=torch.float64)
    W += 0.5 * torch.randn(1, m, generator=g, dtype=torch.float64)  # some large overlaps
    norms = torch.linalg.vector_norm(W, dim=1)
    if precision == "fp16":
        return (W / norms[:, None]).to(torch.float16).to(dev), torch.ones(n, device=dev)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return W.to(dtype).to(dev), (1.0 / norms).float().to(dev)


def _check(part, ref, X, scale, precision, bins):
    """Kernel vs reference on identical rounded inputs: only the summation order differs."""
    tol = PREC_TOL[precision]
    N = X.shape[0]
    Xr = round_to_precision(X, precision).double()
    C = (Xr @ Xr.T) * scale.double()[:, None] * scale.double()[None, :]
    for f in ("sum_cos", "sum_abs", "sum_sq"):
        got, want = getattr(part, f), getattr(ref, f)
        assert abs(got - want) <= tol * N * N, f"{f}: got {got!r} want {want!r}"
    if bins:
        assert int(part.hist.sum()) == N * (N - 1) // 2
        iu = torch.triu_indices(N, N, 1, device=C.device)
        t = (C[iu[0], iu[1]] + 1.0) * (bins / 2)
        ambiguous = int(((t - t.round()).abs() < 4 * tol * bins).sum())
        diff = int((part.hist - ref.hist).abs().sum())
        assert diff <= 2 * ambiguous, f"hist L1 diff {diff}, ambiguous pairs {ambiguous}"
    err = (part.row_max_abs - ref.row_max_abs).abs().max().item()
    assert err <= tol, f"row_max_abs max err {err:.3e}"
    A = C.abs().cpu()
    A.fill_diagonal_(-1.0)
    partner = A[torch.arange(N), part.row_argmax]
    assert ((partner - part.row_max_abs.double()).abs() <= 2 * tol).all(), "argmax misses max"
    rel = ((part.row_sum_sq - ref.row_sum_sq).abs() / ref.row_sum_sq.abs().clamp_min(1e-30)).max()
    assert rel <= 50 * tol, f"row_sum_sq max rel err {float(rel):.3e}"
    if ref.topk_values.numel():
        err = (part.topk_values.abs() - ref.topk_values.abs()).abs().max().item()
        assert err <= tol, f"topk |c| err {err:.3e}"
        i, j = part.topk_pairs[:, 0], part.topk_pairs[:, 1]
        assert (i < j).all() and len({tuple(p) for p in part.topk_pairs.tolist()}) == len(i)
        assert ((C.cpu()[i, j] - part.topk_values.double()).abs() <= 2 * tol).all()


@gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
@pytest.mark.parametrize("shape", [(2, 3), (7, 33), (129, 8), (255, 507), (1000, 96),
                                   (1300, 130)])
def test_kernel_matches_reference(precision, shape):
    _cuda_ready()
    X, scale = _inputs(*shape, precision, seed=shape[0])
    P = shape[0] * (shape[0] - 1) // 2
    for bins in (0, 64):
        part = oc.overlap_partials_cuda(X, scale, bins=bins, topk=min(7, P), precision=precision)
        ref = overlap_partials_torch(X, scale, bins=bins, topk=min(7, P), precision=precision)
        _check(part, ref, X, scale, precision, bins)


@gpu
@pytest.mark.parametrize("bins", [1, 3, 1000, 2048, 2049, 4096, 4097, 10000])
def test_histogram_paths(bins):
    # Up to 4096 bins fit the shared-memory histogram on sm_80/sm_90 (2048 on sm_86/sm_89);
    # more go to global atomics.
    _cuda_ready()
    X, scale = _inputs(600, 40, "bf16", seed=bins)
    part = oc.overlap_partials_cuda(X, scale, bins=bins, topk=0, precision="bf16")
    ref = overlap_partials_torch(X, scale, bins=bins, topk=0, precision="bf16")
    _check(part, ref, X, scale, "bf16", bins)


@gpu
@pytest.mark.parametrize("grow", [True, False])
@pytest.mark.parametrize("capacity", [None, 50, 9])
def test_topk_threshold_paths_agree(capacity, grow, monkeypatch):
    # Small capacities force leading-row thresholds and overflow reruns, settled by a grown
    # buffer or (GROW_MAX = 0) by raised thresholds over candidates stored in the order the
    # GPU's atomics gave; the answer must not change by a single bit (the kernel computes
    # each pair identically in every run).
    _cuda_ready()
    if not grow:
        monkeypatch.setattr(oc, "GROW_MAX", 0)
    X, scale = _inputs(700, 64, "fp32", seed=5)
    a = oc.overlap_partials_cuda(X, scale, bins=0, topk=8, precision="fp32")
    b = oc.overlap_partials_cuda(X, scale, bins=0, topk=8, precision="fp32", capacity=capacity)
    assert torch.equal(a.topk_pairs, b.topk_pairs) and torch.equal(a.topk_values, b.topk_values)
    ref = overlap_partials_torch(X, scale, bins=0, topk=8)
    assert torch.equal(a.topk_pairs, ref.topk_pairs), (a.topk_pairs, ref.topk_pairs)


@gpu
def test_identical_rows_topk_and_ties():
    _cuda_ready()
    X = torch.ones(300, 16, device="cuda")
    scale = torch.full((300,), 0.25, device="cuda")
    part = oc.overlap_partials_cuda(X, scale, bins=8, topk=5, precision="fp32", capacity=20)
    assert torch.equal(part.topk_pairs, torch.tensor([[0, 1], [0, 2], [0, 3], [0, 4], [0, 5]]))
    assert torch.equal(part.row_argmax[:4], torch.tensor([1, 0, 0, 0]))  # ties -> smallest j
    assert (part.row_max_abs == 1.0).all() and int(part.hist[-1]) == 300 * 299 // 2


@gpu
def test_deterministic_and_stream():
    _cuda_ready()
    X, scale = _inputs(3000, 200, "bf16", seed=9)
    runs = []
    for use_side_stream in (False, True, True):
        st = torch.cuda.Stream() if use_side_stream else torch.cuda.current_stream()
        with torch.cuda.stream(st):
            runs.append(oc.overlap_partials_cuda(X, scale, bins=128, topk=10, precision="bf16"))
        torch.cuda.synchronize()
    a = runs[0]
    for b in runs[1:]:
        for f in ("sum_cos", "sum_abs", "sum_sq"):
            assert getattr(a, f) == getattr(b, f), f
        for f in ("hist", "row_max_abs", "row_argmax", "row_sum_sq", "topk_values", "topk_pairs"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f


@gpu
def test_against_triton_backend():
    _cuda_ready()
    if B.available("cuda")["triton"] is not None:
        pytest.skip(f"triton: {B.available('cuda')['triton']}")
    pytest.importorskip("superkern.triton.overlap")
    import superkern
    W = torch.randn(2000, 96, device="cuda")
    for precision in ("fp32", "bf16"):
        a = superkern.overlap_stats(W, bins=32, topk=5, per_row=True, precision=precision,
                                    backend="cuda")
        b = superkern.overlap_stats(W, bins=32, topk=5, per_row=True, precision=precision,
                                    backend="triton")
        assert abs(a.mean_abs - b.mean_abs) <= 1e-5 and abs(a.mean_sq - b.mean_sq) <= 1e-5
        assert abs(a.max_abs - b.max_abs) <= 1e-4
        assert torch.allclose(a.row_max_abs, b.row_max_abs, atol=1e-4)


@gpu
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_int64_offsets(precision):
    # N^2 > 2^31 and N*m*elem > 2^31 bytes (bf16: N*m > 2^31 elements). Each row carries data
    # only in its first and last 32 columns, so a reference on the compact (N, 64) matrix is
    # cheap; a 32-bit offset anywhere would read the wrong rows.
    _cuda_ready()
    N = 46341
    m = 46344 if precision == "bf16" else 11600
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    elem = 2 if dtype is torch.bfloat16 else 4
    if torch.cuda.get_device_properties(0).total_memory < 3 * N * m * elem:
        pytest.skip("not enough GPU memory")
    g = torch.Generator(device="cuda").manual_seed(3)
    compact = torch.randn(N, 64, device="cuda", generator=g).to(dtype)
    X = torch.zeros(N, m, dtype=dtype, device="cuda")
    X[:, :32], X[:, -32:] = compact[:, :32], compact[:, 32:]
    scale = (1.0 / torch.linalg.vector_norm(compact.double(), dim=1)).float()
    part = oc.overlap_partials_cuda(X, scale, bins=64, topk=5, precision=precision)
    del X
    ref = overlap_partials_torch(compact, scale, bins=64, topk=5, precision=precision,
                                 block=8192)
    P = N * (N - 1) // 2
    assert int(part.hist.sum()) == P
    for f in ("sum_cos", "sum_abs", "sum_sq"):
        got, want = getattr(part, f), getattr(ref, f)
        assert abs(got - want) <= 1e-6 * P, f"{f}: got {got!r} want {want!r}"
    assert int((part.hist - ref.hist).abs().sum()) <= P // 10**5
    assert (part.row_max_abs - ref.row_max_abs).abs().max().item() <= 1e-4
    assert ((part.row_sum_sq - ref.row_sum_sq).abs() / ref.row_sum_sq).max().item() <= 1e-3
    assert torch.equal(part.topk_pairs, ref.topk_pairs), (part.topk_pairs, ref.topk_pairs)
