"""Heads moved in row blocks: cross-pair kernel calls (``split``), block-pair streaming, the
memory plan, chunked operands and norms. Everything runs on CPU (torch backend, Triton in the
interpreter); the GPU cases (marked gpu) repeat it on CUDA with a CPU-resident head."""
from __future__ import annotations

import dataclasses
import weakref

import pytest
import torch

import superkern
from superkern import backend as B
from superkern.ops import overlap_stream as S
from superkern.ops.overlap_ref import overlap_partials_torch
from tests.utils import (assert_allclose, assert_argmax_attains, assert_close,
                         check_against_gold, gold_stats)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
HAS_TRITON = B.available(DEV)["triton"] is None
STREAM = [pytest.param("torch"),
          pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON,
                                                          reason="triton unavailable"))]


def _head(n, m, seed, anisotropic=True):
    """Rows with structure that crosses block boundaries: a zero row, exact duplicates and an
    antiparallel pair in different blocks, a shared offset direction."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, m, generator=g, dtype=torch.float64)
    if anisotropic:
        W += 2.0 * torch.randn(1, m, generator=g, dtype=torch.float64)
    W[n // 2 + 1] = 0.0
    W[n - 3] = W[4]            # duplicate: first and last block
    if n > 150:
        W[150] = -3.0 * W[20]  # antiparallel: blocks 0 and 1 at 128-row blocks
    return W.float()


def _cross_gold(X: torch.Tensor, scale: torch.Tensor, split: int):
    C = (X.double() @ X.double().T) * scale.double()[:, None] * scale.double()[None, :]
    return C[:split, split:]


@pytest.mark.parametrize("backend", STREAM)
@pytest.mark.parametrize("N,split", [(300, 128), (256, 128), (129, 128), (330, 192)])
def test_split_kernel_reduces_exactly_the_cross_pairs(backend, N, split):
    X = _head(N, 19, seed=N).to(DEV)
    X[N // 2 + 1] = 1.0  # no zero rows at the kernel level (the public op drops them)
    scale = (1.0 / torch.linalg.vector_norm(X.double(), dim=1)).float()
    if backend == "torch":
        part = overlap_partials_torch(X, scale, bins=16, topk=7, split=split, block=64)
    else:
        from superkern.triton.overlap import overlap_partials_triton
        part = overlap_partials_triton(X, scale, bins=16, topk=7, split=split)
    Cc = _cross_gold(X.cpu(), scale.cpu(), split)
    P = split * (N - split)
    assert_close("sum_cos", part.sum_cos, float(Cc.sum()), rtol=1e-5, atol=1e-4)
    assert_close("sum_sq", part.sum_sq, float((Cc ** 2).sum()), rtol=1e-5)
    assert int(part.hist.sum()) == P
    rs = torch.cat([(Cc ** 2).sum(1), (Cc ** 2).sum(0)])
    assert_allclose("row_sum_sq", part.row_sum_sq, rs, rtol=1e-5, atol=1e-6)
    rmax = torch.cat([Cc.abs().max(1).values, Cc.abs().max(0).values])
    assert_allclose("row_max_abs", part.row_max_abs, rmax, rtol=0, atol=2e-6)
    # Arg-maxima point across the split.
    assert (part.row_argmax[:split] >= split).all() and (part.row_argmax[split:] < split).all()
    want = Cc.abs().flatten().sort(descending=True).values[:7]
    assert_allclose("topk |c|", part.topk_values.abs(), want, rtol=0, atol=2e-6)
    assert (part.topk_pairs[:, 0] < split).all() and (part.topk_pairs[:, 1] >= split).all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_split_must_lie_inside_and_align(backend):
    X = torch.randn(200, 8)
    s = torch.ones(200)
    if backend == "torch":
        with pytest.raises(ValueError, match=r"split=200 must be 0 .* N=200"):
            overlap_partials_torch(X, s, bins=0, topk=0, split=200)
        return
    if not HAS_TRITON:
        pytest.skip("triton unavailable")
    from superkern.triton.overlap import overlap_partials_triton
    X = X.to(DEV)
    with pytest.raises(ValueError, match="multiple of the tile edge"):
        overlap_partials_triton(X, s.to(DEV), bins=0, topk=0, split=100)


@pytest.mark.parametrize("backend", STREAM)
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_streamed_equals_gold(backend, precision):
    W = _head(300, 24, seed=1).to(DEV)  # blocks of 128, 128 and a ragged 44
    st = superkern.overlap_stats(W, bins=32, topk=6, per_row=True, precision=precision,
                                 backend=backend, block_rows=128)
    assert st.block_rows == 128 and st.backend == backend and st.n_zero == 1
    check_against_gold(st, gold_stats(W, bins=32), precision, bins=32, topk=6, per_row=True)
    assert set(st.max_pair) in ({4, 297}, {20, 150})  # |cos| = 1 pairs across blocks


@pytest.mark.parametrize("backend", STREAM)
def test_streamed_matches_single_call(backend):
    W = _head(400, 33, seed=2).to(DEV)
    kw = dict(bins=64, topk=9, per_row=True, backend=backend)
    one = superkern.overlap_stats(W, **kw)
    st = superkern.overlap_stats(W, block_rows=128, **kw)
    assert one.block_rows == 0 and st.block_rows == 128
    for f in ("mean_cos", "mean_abs", "mean_sq"):
        assert_close(f, getattr(st, f), getattr(one, f), rtol=1e-6, atol=1e-9)
    # Counts differ only where a product rounds across a bin edge in another tile grouping.
    assert int(st.hist.sum()) == int(one.hist.sum())
    assert int((st.hist - one.hist).abs().sum()) <= 4
    assert st.max_pair == one.max_pair
    assert torch.equal(st.topk_pairs, one.topk_pairs)
    assert_allclose("topk", st.topk_values, one.topk_values, rtol=0, atol=1e-6)
    assert_allclose("row_max_abs", st.row_max_abs, one.row_max_abs, rtol=0, atol=1e-6)
    assert_allclose("row_sum_sq", st.row_sum_sq, one.row_sum_sq, rtol=1e-5, atol=1e-7)
    inv = 1.0 / torch.linalg.vector_norm(W.double(), dim=1)
    assert_argmax_attains("row_argmax", st.row_argmax, one.row_argmax, one.row_max_abs, W, inv,
                          1e-6)


@pytest.mark.parametrize("backend", STREAM)
def test_streamed_rows_center_and_determinism(backend):
    W = _head(420, 16, seed=3).to(DEV)
    mask = torch.ones(420, dtype=torch.bool)
    mask[7::5] = False
    kw = dict(bins=16, topk=4, per_row=True, rows=mask, center=True, backend=backend,
              block_rows=128)
    a = superkern.overlap_stats(W, **kw)
    b = superkern.overlap_stats(W, **kw)
    check_against_gold(a, gold_stats(W, bins=16, rows=mask, center=True), "fp32", bins=16,
                       topk=4, per_row=True)
    for f in dataclasses.fields(a):
        if f.name == "seconds":
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        same = (torch.equal(x.nan_to_num(-7), y.nan_to_num(-7)) if isinstance(x, torch.Tensor)
                else (x == y or x != x and y != y))
        assert same, f"{f.name} differs between two identical streamed runs"


def test_block_rows_at_least_n_is_one_call():
    W = _head(200, 8, seed=4)
    st = superkern.overlap_stats(W, backend="torch", block_rows=256)
    assert st.block_rows == 0


def test_budget_plans_streaming_on_cpu():
    # A float64 head must be copied to fp32 for the kernel: 1000 x 64 x 4 = 256000 bytes.
    W = _head(1000, 64, seed=5).double()
    dtype = torch.float32
    dev = torch.device("cpu")
    assert S.plan_block_rows(W, "fp32", dev, dtype, block_rows=None,
                             max_device_bytes=256000) == 0
    # Two blocks of b rows take 2 * b * 64 * 4 bytes: 100000 bytes allow b = 195 -> 128.
    assert S.plan_block_rows(W, "fp32", dev, dtype, block_rows=None,
                             max_device_bytes=100000) == 128
    assert S.plan_block_rows(W.float(), "fp32", dev, dtype, block_rows=None,
                             max_device_bytes=10) == 0  # no copy needed: nothing to budget
    # ... unless a row's norm leaves SAFE_NORM: its operand is then a rescaled copy
    Wf = W.float()
    norms = S.row_norms(Wf)
    assert S.plan_block_rows(Wf, "fp32", dev, dtype, block_rows=None, max_device_bytes=100000,
                             norms=norms) == 0
    norms[7] = 1e-30
    assert S.plan_block_rows(Wf, "fp32", dev, dtype, block_rows=None, max_device_bytes=100000,
                             norms=norms) == 128
    with pytest.raises(ValueError,
                       match=r"budget of 60000 bytes cannot hold two 128-row blocks .*65536 b"):
        S.plan_block_rows(W, "fp32", dev, dtype, block_rows=None, max_device_bytes=60000)
    st = superkern.overlap_stats(W, bins=8, topk=3, per_row=True, backend="torch",
                                 max_device_bytes=100000)
    assert st.block_rows == 128
    check_against_gold(st, gold_stats(W, bins=8), "fp32", bins=8, topk=3, per_row=True)


def test_chunked_operands_and_norms(monkeypatch):
    monkeypatch.setattr(S, "CHUNK_ELEMS", 4 * 16 * 7)  # 7-row norm chunks, 28-row operand chunks
    W = _head(100, 16, seed=6).double()
    n = S.row_norms(W)
    assert torch.equal(n, torch.linalg.vector_norm(W, dim=1))
    st = superkern.overlap_stats(W, bins=8, topk=2, per_row=True, precision="fp16",
                                 backend="torch")
    check_against_gold(st, gold_stats(W, bins=8), "fp16", bins=8, topk=2, per_row=True)


def test_probe_keeps_an_oversized_head_in_host_memory(monkeypatch):
    import superkern.probe.core as core
    W = torch.randn(100, 10)  # 4000 bytes; its fp32 centred copy another 4000
    monkeypatch.setattr(core, "free_device_bytes", lambda dev: 7000)  # room: 5600 bytes
    assert core._place_head(W, torch.device("cuda"), centred=True) is W
    # Without centring: the head and its bf16 operand, 6000 bytes: still too much.
    assert core._place_head(W, torch.device("cuda"), centred=False, precision="bf16") is W
    # Both sides of the threshold (the branch that moves the head needs a GPU to run whole).
    cuda = torch.device("cuda")
    for free, fits in ((10000, True), (9999, False)):  # 8000 bytes <= 0.8 * free
        monkeypatch.setattr(core, "free_device_bytes", lambda dev, f=free: f)
        assert core._fits_on_device(W, cuda, centred=True, precision="fp32", room=0.8) is fits
    Wb = W.to(torch.bfloat16)  # 2000 bytes + its fp32 operand 4000 (+ 4000 centred)
    monkeypatch.setattr(core, "free_device_bytes", lambda dev: 6000)
    assert core._fits_on_device(Wb, cuda, centred=False, precision="fp32", room=1.0)
    assert not core._fits_on_device(Wb, cuda, centred=True, precision="fp32", room=1.0)
    assert core._fits_on_device(Wb, cuda, centred=False, precision="bf16", room=0.5)  # 2000


def test_torch_backend_copy_counts_in_the_plan():
    # bf16 on the torch backend: the operand (2 bytes) plus its fp32 rounding copy (4 bytes).
    W = _head(1000, 64, seed=11).double()
    st = superkern.overlap_stats(W, precision="bf16", backend="torch", max_device_bytes=200000)
    assert st.block_rows == 256  # 200000 // (2 * 64 * 6) = 260 -> 256 (2 bytes alone: 768)


class _LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of the tensors created inside the mode that are still alive."""

    def __init__(self):
        super().__init__()
        self.live, self.peak = {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.live:
                key = t.untyped_storage().data_ptr()
                self.live[key] = t.untyped_storage().nbytes()
                weakref.finalize(t.untyped_storage(), self.live.pop, key, None)
        self.peak = max(self.peak, sum(self.live.values()))
        return out


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_rounding_a_low_precision_operand_costs_what_the_plan_counts(precision, dtype):
    """The torch backend's rounding of a bf16/fp16 operand: one fp32 widening, the 4 bytes
    per element _backend_copy_bytes counts (not a fp32 copy, a 16-bit one and another fp32
    one at once); other dtypes still go through fp32, so the values are unchanged."""
    from superkern.ops.overlap_ref import round_to_precision

    X64 = torch.randn(300, 64, dtype=torch.float64)
    X = X64.to(dtype)
    with _LiveBytes() as mode:
        out = round_to_precision(X, precision)
    assert mode.peak == 4 * X.numel(), mode.peak
    assert out.dtype == torch.float32 and torch.equal(out, X.float())
    for src in (X64, X64.float()):
        assert torch.equal(round_to_precision(src, precision), src.float().to(dtype).float())


@pytest.mark.parametrize("name, precision, m, extra", [
    ("triton", "fp32", 36, 6),      # padded to 48 columns: 4 * 48 / 36 = 5.33 bytes
    ("triton", "tf32", 36, 10),     # its tf32 rounding copy (4) and the padded one
    ("triton", "bf16", 4001, 3),    # 2 * 4016 / 4001
    ("triton", "bf16", 576, 0),
    ("cuda", "fp32", 3, 6),         # padded to 16 bytes: 4 * 4 / 3
    ("cuda", "bf16", 12, 3),        # 2 * 16 / 12
    ("cuda", "bf16", 576, 0),
    ("torch", "bf16", 37, 4),
    ("cpu", "fp32", 37, 0),
])
def test_backend_copies_counted_per_element(name, precision, m, extra):
    from superkern.ops.overlap import _backend_copy_bytes

    assert _backend_copy_bytes(name, precision, m) == extra


def test_auto_moves_to_a_streaming_backend_when_a_cpu_budget_needs_it(monkeypatch):
    """On a CPU target the compute copy of a bf16 call counts against max_device_bytes too:
    auto then leaves the C++ backend (no split mode) for torch, which streams; fp32 needs no
    copy and stays; the C++ backend named explicitly is refused with the block size."""
    monkeypatch.delenv("SUPERKERN_BACKEND", raising=False)
    W = _head(1000, 64, seed=12)  # its bf16 copy: 127872 bytes (999 nonzero rows)
    kw = dict(bins=16, topk=3, per_row=True, max_device_bytes=110000)
    st = superkern.overlap_stats(W, precision="bf16", **kw)
    assert st.backend == "torch" and st.block_rows > 0
    check_against_gold(st, gold_stats(W, bins=16), "bf16", bins=16, topk=3, per_row=True)
    if B.available("cpu")["cpu"] is None:
        assert superkern.overlap_stats(W, precision="fp32", **kw).backend == "cpu"
        with pytest.raises(ValueError, match=r"needs block streaming \(blocks of \d+ rows\)"):
            superkern.overlap_stats(W, precision="bf16", backend="cpu", **kw)


@pytest.mark.parametrize("bad,match", [
    (dict(block_rows=100), "multiple of 128"),
    (dict(block_rows=0), "multiple of 128"),
    (dict(block_rows=-128), "multiple of 128"),
    (dict(block_rows=True), "multiple of 128"),
    (dict(max_device_bytes=-1), "positive integer"),
    (dict(max_device_bytes=1.5), "positive integer"),
    (dict(device="tpu"), "unknown device 'tpu'|only cpu and cuda are supported"),
    (dict(device="meta"), "only cpu and cuda are supported"),
])
def test_bad_stream_options(bad, match):
    W = _head(300, 8, seed=7).double()
    with pytest.raises(ValueError, match=match):
        superkern.overlap_stats(W, backend="torch", **bad)


def test_backend_without_streaming_is_named():
    if B.available("cpu")["cpu"] is not None:
        pytest.skip("cpu backend not built")
    W = _head(300, 8, seed=8)
    with pytest.raises(ValueError, match=r"needs block streaming .* 'cpu' backend"):
        superkern.overlap_stats(W, backend="cpu", block_rows=128)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_device_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        superkern.overlap_stats(torch.randn(10, 4), device="cuda")


# --- GPU ------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_cpu_resident_head_uploaded_in_blocks(backend):
    if B.available("cuda")[backend] is not None:
        pytest.skip(f"{backend} unavailable")
    W = _head(20000, 576, seed=9)  # fp32 on the CPU
    kw = dict(bins=256, topk=50, per_row=True, precision="bf16", backend=backend)
    on_gpu = superkern.overlap_stats(W.cuda(), **kw)  # the same fp32 rows, resident
    up = superkern.overlap_stats(W, device="cuda", **kw)
    assert up.block_rows == 0 and up.backend == backend
    # Same bf16 operand; the fp64 norms may differ in the last bit between CPU and GPU.
    for f in ("mean_cos", "mean_abs", "mean_sq", "max_abs"):
        assert_close(f, getattr(up, f), getattr(on_gpu, f), rtol=1e-6, atol=1e-9)
    assert int((up.hist - on_gpu.hist).abs().sum()) <= 10
    assert torch.equal(up.topk_pairs, on_gpu.topk_pairs)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_streamed_head_matches_resident(backend):
    if B.available("cuda")[backend] is not None:
        pytest.skip(f"{backend} unavailable")
    W = _head(40000, 512, seed=10)
    kw = dict(bins=256, topk=100, per_row=True, precision="bf16", backend=backend)
    one = superkern.overlap_stats(W.cuda(), **kw)
    # The bf16 copy takes 41 MB; a 20.5 MB budget gives blocks of 9984 rows: five blocks (the
    # last of 64 rows), fifteen block calls.
    st = superkern.overlap_stats(W, device="cuda", max_device_bytes=20_500_000, **kw)
    assert st.block_rows == 9984
    for f in ("mean_cos", "mean_abs", "mean_sq"):
        assert_close(f, getattr(st, f), getattr(one, f), rtol=1e-6, atol=1e-9)
    assert int(st.hist.sum()) == int(one.hist.sum()) == st.n_pairs
    assert st.max_pair == one.max_pair and torch.equal(st.topk_pairs, one.topk_pairs)
    assert_allclose("row_max_abs", st.row_max_abs, one.row_max_abs, rtol=0, atol=1e-6)
    assert_allclose("row_sum_sq", st.row_sum_sq, one.row_sum_sq, rtol=1e-5, atol=1e-6)
