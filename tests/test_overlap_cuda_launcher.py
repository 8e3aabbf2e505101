"""The cuda backend's launcher (superkern/ops/overlap_cuda.py) driven against a torch emulation
of what the kernel writes: decoding, fixed-order sums, the top-k threshold loop, split mode and
block streaming, all on CPU (the kernel itself is tested on the GPU in test_overlap_cuda.py)."""
from __future__ import annotations

import collections
import math

import pytest
import torch

from superkern.ops import overlap_cuda as oc
from superkern.ops.overlap_ref import hist_bins, overlap_partials_torch, round_to_precision
from tests.utils import assert_argmax_attains

# ---- the launcher driven against an emulation of what the kernel writes ------------------

class _FakeExt:
    overlap_cuda_config = {"row_sq_fixed_bits": 32}


class _EmulatedRun(oc._Run):
    """_Run whose kernel is a torch emulation: packed row keys, fixed-point row sums, three
    blocks of fp64 partials, and the candidate buffer filled in a random arrival order with
    overflow counted but not stored, as the atomics do."""

    def __init__(self, *args, **kw):
        super().__init__(_FakeExt(), *args, stream=0, max_blocks=8, **kw)
        self.launches = []
        self.gen = torch.Generator().manual_seed(0)

    def _kernel(self, *, n, stats, bins, k, key):
        self.launches.append((n, stats, k, key))
        Xr = round_to_precision(self.X[:n, :self.m], self.precision)
        s = self.scale[:n]
        if self.split:  # cross pairs only: rows [0, split) x [split, n)
            i = torch.arange(self.split).repeat_interleave(n - self.split)
            j = torch.arange(self.split, n).repeat(self.split)
        else:
            iu = torch.triu_indices(n, n, 1)
            i, j = iu[0], iu[1]
        c = ((Xr @ Xr.T) * s[:, None] * s[None, :])[i, j].contiguous()
        a = c.abs()
        if stats:
            bits = a.view(torch.int32).to(torch.int64) << 32
            for rows, other in ((i, j), (j, i)):
                self.row_key[:n].scatter_reduce_(0, rows, bits | (0xFFFFFFFF - other), "amax")
            sq = torch.zeros(n, dtype=torch.float64)
            sq.index_add_(0, i, c.double() ** 2).index_add_(0, j, c.double() ** 2)
            self.row_sq[:n] += torch.round(sq * 2.0**32).long()
            for b, idx in enumerate(torch.tensor_split(torch.arange(c.numel()), 3)):
                cd = c[idx].double()
                self.block_sums[b] = torch.stack([cd.sum(), cd.abs().sum(), (cd * cd).sum()])
            if bins:
                self.hist += torch.bincount(hist_bins(c, bins), minlength=bins)
        if k:
            tv, ti, tj = key
            sel = (a > tv) | ((a == tv) & ((i < ti) | ((i == ti) & (j <= tj))))
            idx = torch.nonzero(sel).flatten()
            idx = idx[torch.randperm(idx.numel(), generator=self.gen)][: self.cap]
            self.cand_count += int(sel.sum())
            self.cand_val[: idx.numel()] = c[idx]
            self.cand_ij[: idx.numel()] = (i[idx] << 32) | j[idx]
        return 3


def _emulate(X, *, bins, topk, capacity=None, precision="fp32", split=0):
    scale = 1.0 / torch.linalg.vector_norm(X.double(), dim=1).float()
    run = _EmulatedRun(X, scale, bins=bins, topk=topk, precision=precision, capacity=capacity,
                       split=split)
    part = oc._drive(run)
    ref = overlap_partials_torch(X, scale, bins=bins, topk=topk, precision=precision,
                                 split=split)
    return part, ref, run


@pytest.mark.parametrize("grow", [True, False])
@pytest.mark.parametrize("capacity", [None, 12, 20])
def test_launcher_logic_matches_reference(capacity, grow, monkeypatch):
    """Exact with candidates stored in a random arrival order, both after an overflow that
    grows the buffer (one more launch at the same key per level) and after one that raises
    the threshold (GROW_MAX = 0)."""
    if not grow:
        monkeypatch.setattr(oc, "GROW_MAX", 0)
    X = torch.randn(150, 24, generator=torch.Generator().manual_seed(1))
    part, ref, run = _emulate(X, bins=16, topk=5, capacity=capacity)
    for f in ("sum_cos", "sum_abs", "sum_sq"):
        assert math.isclose(getattr(part, f), getattr(ref, f), rel_tol=1e-9, abs_tol=1e-9), f
    assert int((part.hist - ref.hist).abs().sum()) <= 2
    assert torch.allclose(part.row_max_abs, ref.row_max_abs, rtol=0, atol=1e-6)
    assert torch.equal(part.row_argmax, ref.row_argmax)
    assert torch.allclose(part.row_sum_sq, ref.row_sum_sq, rtol=1e-6, atol=1e-9)
    assert torch.equal(part.topk_pairs, ref.topk_pairs), (part.topk_pairs, ref.topk_pairs)
    assert torch.allclose(part.topk_values, ref.topk_values, rtol=0, atol=1e-6)
    if capacity:  # P = 11175 > capacity: leading-row thresholds and overflow reruns happened
        assert len(run.launches) > 2 and run.launches[0][0] < 150
        assert sum(1 for n, stats, _, _ in run.launches if stats) == 1, "stats computed once"
        reruns = [(a, b) for a, b in zip(run.launches, run.launches[1:]) if a[0] == b[0]]
        assert reruns, "the buffer never overflowed"
        if grow:  # one rerun per level of rows at most, with the key it overflowed at
            per_n = collections.Counter(n for n, *_ in run.launches)
            assert max(per_n.values()) <= 2 and run.cap > capacity, (per_n, run.cap)
            assert all(a[3] == b[3] for a, b in reruns), reruns
        else:  # each rerun raised the key; the buffer kept its size
            assert run.cap == capacity and all(a[3] != b[3] for a, b in reruns), reruns


@pytest.mark.parametrize("capacity", [None, 300, 2000])
def test_launcher_split_mode_matches_reference(capacity):
    # Cross pairs of rows [0, 128) x [128, 300): what block-pair streaming asks of the kernel.
    X = torch.randn(300, 16, generator=torch.Generator().manual_seed(2))
    X[250] = -X[3]
    part, ref, run = _emulate(X, bins=16, topk=7, capacity=capacity, split=128)
    for f in ("sum_cos", "sum_abs", "sum_sq"):
        assert math.isclose(getattr(part, f), getattr(ref, f), rel_tol=1e-9, abs_tol=1e-9), f
    assert int(part.hist.sum()) == 128 * 172 and int((part.hist - ref.hist).abs().sum()) <= 2
    assert torch.equal(part.row_argmax, ref.row_argmax)
    assert torch.equal(part.topk_pairs, ref.topk_pairs), (part.topk_pairs, ref.topk_pairs)
    assert tuple(part.topk_pairs[0].tolist()) == (3, 250)
    if capacity:  # 22016 cross pairs > capacity: leading blocks of the second part first
        leading = [n for n, stats, _, _ in run.launches if not stats]
        assert leading and min(leading) < 300 and all(n > 128 for n in leading)
        assert sum(1 for n, stats, _, _ in run.launches if stats) == 1, "stats computed once"


def test_launcher_argument_checks_name_the_numbers():
    """Checked before the device is (so on CPU as on a GPU): split, bins, topk, scale, X."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    X, ones = torch.randn(300, 16, device=dev), torch.ones(300, device=dev)
    call = oc.overlap_partials_cuda
    with pytest.raises(ValueError, match="multiple of the kernel's tile edge 128"):
        call(X, ones, bins=0, topk=0, split=100)
    with pytest.raises(ValueError, match=r"0 <= topk <= P=44850; got bins=0, topk=44851"):
        call(X, ones, bins=0, topk=44851)
    with pytest.raises(ValueError, match=r"P=22016; got bins=0, topk=22017"):  # cross pairs
        call(X, ones, bins=0, topk=22017, split=128)
    with pytest.raises(ValueError, match="need bins >= 0"):
        call(X, ones, bins=-1, topk=0)
    with pytest.raises(ValueError, match=r"scale must have shape \(300,\), got \(299,\)"):
        call(X, ones[:299], bins=0, topk=0)
    with pytest.raises(ValueError, match=r"X must be 2-D, got shape \(300,\)"):
        call(ones, ones, bins=0, topk=0)
    with pytest.raises(ValueError, match="unknown precision 'fp64'"):
        call(X, ones, bins=0, topk=0, precision="fp64")
    if dev == "cpu":
        with pytest.raises(ValueError, match="X must be a CUDA tensor, got one on cpu"):
            call(X, ones, bins=0, topk=0)


@pytest.mark.parametrize("grow", [True, False])
def test_launcher_topk_terminates_on_identical_rows(grow, monkeypatch):
    # Every |c| is the same: only the (i, j) part of the key separates pairs.
    if not grow:
        monkeypatch.setattr(oc, "GROW_MAX", 0)
    X = torch.ones(60, 8)
    part, ref, run = _emulate(X, bins=4, topk=4, capacity=6)
    want = torch.tensor([[0, 1], [0, 2], [0, 3], [0, 4]])
    assert torch.equal(part.topk_pairs, want) and torch.equal(ref.topk_pairs, want)
    assert len(run.launches) < 60, f"{len(run.launches)} launches"
    assert (run.cap > 6) == grow, run.cap
    assert torch.equal(part.row_argmax[:3], torch.tensor([1, 0, 0]))


def test_block_streaming_through_the_emulated_launcher():
    # The cuda launcher's split mode as the block-pair driver calls it: streamed partials of
    # the emulation equal the reference's single call.
    from superkern.ops import overlap_stream as S
    from superkern.ops.overlap import _compute_operands

    def kernel(X, scale, *, bins, topk, precision, split=0):
        run = _EmulatedRun(X, scale, bins=bins, topk=topk, precision=precision, capacity=64,
                           split=split)
        return oc._drive(run)

    X = torch.randn(400, 16, generator=torch.Generator().manual_seed(3))
    X[390] = X[7]
    norms = torch.linalg.vector_norm(X.double(), dim=1)
    part = S.stream_partials(kernel, X, norms, precision="fp32", bins=16, topk=5,
                             block_rows=128, device=torch.device("cpu"), dtype=torch.float32,
                             operands=_compute_operands)
    ref = overlap_partials_torch(X, (1.0 / norms).float(), bins=16, topk=5)
    for f in ("sum_cos", "sum_abs", "sum_sq"):
        assert math.isclose(getattr(part, f), getattr(ref, f), rel_tol=1e-6, abs_tol=1e-6), f
    assert int(part.hist.sum()) == 400 * 399 // 2
    assert int((part.hist - ref.hist).abs().sum()) <= 4
    assert torch.equal(part.topk_pairs, ref.topk_pairs)
    assert tuple(part.topk_pairs[0].tolist()) == (7, 390)
    assert_argmax_attains("row_argmax", part.row_argmax, ref.row_argmax, ref.row_max_abs, X,
                          1.0 / norms, 1e-6)
