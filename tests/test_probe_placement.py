"""The probe on a GPU and with a head kept in host memory: every pass streamed in row blocks
(the CPU-runnable core of it forced with block_rows), and where the head is placed."""
from __future__ import annotations

import pytest
import torch

from superkern import probe
from tests.test_probe import RTOL, _subset
from tests.utils import assert_close


@pytest.mark.gpu
def test_probe_on_cuda_matches_cpu(minilm):
    rows = _subset(minilm.n, 500, 1500, seed=2)
    a = probe(minilm, rows=rows, sample=0, topk=5, device="cpu", backend="torch", progress=False)
    b = probe(minilm, rows=rows, sample=0, topk=5, device="cuda", progress=False)
    assert b.run["device"].startswith("cuda")
    assert b.run["head_in_host_memory"] is False and b.run["block_rows"] == 0  # 45 MB: moved
    for key, blk in a.blocks.items():
        other = b.blocks[key]
        assert blk.rows == other.rows, key
        if blk.stats is None:
            continue
        assert_close(f"{key} exact", other.mean_sq, blk.mean_sq, 1e-10)
        for f in ("mean_abs", "mean_sq", "max_abs"):
            assert_close(f"{key} {f}", getattr(other.stats, f), getattr(blk.stats, f), RTOL)
    full = probe("minilm", device="cuda", progress=False)  # no sampling on CUDA
    assert not any(blk.sampled for blk in full.blocks.values())


@pytest.mark.gpu
def test_probe_host_resident_head_streams(minilm, monkeypatch):
    """A head too large for the GPU stays in host memory: every pass moves it in row blocks
    (forced here with a zero room for the head and a small streaming budget)."""
    import superkern.probe.core as core
    import superkern.probe.passes as passes
    from superkern.ops import overlap as ov

    ref = probe(minilm, sample=0, topk=5, device="cuda", progress=False)
    monkeypatch.setattr(core, "_place_head", lambda W, dev, **kw: W)
    real = ov.overlap_stats
    monkeypatch.setattr(passes, "overlap_stats",
                        lambda *a, **k: real(*a, max_device_bytes=8 << 20, **k))
    rep = probe(minilm, sample=0, topk=5, device="cuda", progress=False)
    assert rep.run["head_in_host_memory"] and rep.run["block_rows"] > 0
    for key, blk in ref.blocks.items():
        other = rep.blocks[key]
        if blk.stats is None:
            continue
        assert_close(f"{key} exact", other.mean_sq, blk.mean_sq, 1e-10)
        for f in ("mean_abs", "mean_sq", "max_abs"):
            assert_close(f"{key} {f}", getattr(other.stats, f), getattr(blk.stats, f), 1e-6)


def test_probe_streamed_passes_match_one_call_on_cpu(minilm, monkeypatch):
    """The CPU-runnable core of the host-resident GPU test: every tiled pass of the probe
    (main, centred, splits) streamed in 128-row blocks gives the one-call statistics."""
    import superkern.probe.passes as passes
    from superkern.ops import overlap as ov

    rows = _subset(minilm.n, 300, 500, seed=4)
    kw = dict(rows=rows, sample=0, topk=5, device="cpu", backend="torch", progress=False)
    ref = probe(minilm, **kw)
    real = ov.overlap_stats
    monkeypatch.setattr(passes, "overlap_stats", lambda *a, **k: real(*a, **{**k,
                                                                          "block_rows": 128}))
    rep = probe(minilm, **kw)
    assert ref.run["block_rows"] == 0 and rep.run["block_rows"] == 128
    compared = 0
    for key, blk in ref.blocks.items():
        other = rep.blocks[key]
        assert blk.rows == other.rows, key
        if blk.stats is None:
            continue
        compared += 1
        assert other.stats.block_rows == 128, key
        assert_close(f"{key} exact", other.mean_sq, blk.mean_sq, 1e-10)
        for f in ("mean_abs", "mean_sq", "max_abs"):
            assert_close(f"{key} {f}", getattr(other.stats, f), getattr(blk.stats, f), 1e-6)
        if blk.stats.topk_pairs is not None:
            assert torch.equal(other.stats.topk_pairs, blk.stats.topk_pairs), key
            compared += 1
    assert compared >= 3  # the main pass with its top-k, and at least one more pass


def test_head_placement_keeps_cpu_runs_on_cpu():
    import superkern.probe.core as core
    W = torch.randn(10, 4)
    assert core._place_head(W, torch.device("cpu")) is W
