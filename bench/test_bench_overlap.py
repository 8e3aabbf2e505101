"""GPU benchmark of the overlap engine: Triton and CUDA kernels vs the torch reference vs naive
PyTorch (eager and under torch.compile).

Run on a GPU machine (skipped without CUDA):
    pytest bench/test_bench_overlap.py --benchmark-json=out/overlap.json

Shapes are real LM-head sizes in bf16 (SmolLM2 49152x576, GPT-2 50257x768, Llama-3 128256x4096,
Qwen2 152064x8192) with bins=256 and the per-row statistics (always computed), plus topk=100
on the largest. Timed: the backend's partials function on prepared operands (X bf16, fp32
scales), i.e. the kernel and its host glue, synchronised inside the call; the public op adds
row norms and index mapping on top. Each case checks its result first (pair count, exact Gram
identities, spot rows, top-1 vs row max). extra_info holds TFLOP/s = 2 P m / t, the fraction
of the GEMM peak of that precision measured in this session (bench/peaks.py: 8192^3 torch
matmuls for about a second; shared by a job's processes through SUPERKERN_BENCH_PEAKS) and the
speed-up over ``naive_blockwise_stats`` (the naive row of the same shape, when it ran in the
same process; otherwise ``bench/summarize.py`` pairs the rows of one session).
``SUPERKERN_BENCH_JSONL=file`` records each case as it finishes (bench/conftest.py). The
naive rows (eager and ``compiled_blockwise_stats``) compute only sum c, sum |c| and max |c|.
The tf32 case is Qwen2's 152064x8192 head in fp32 on tf32 tensor cores.

Triton variants: ``SUPERKERN_BENCH_TRITON="default:;tma:tma=1"`` (name:config pairs, config as
in ``SUPERKERN_TRITON_OVERLAP``), e.g. add ``regs:maxnreg=128,programs_per_sm=2``. Restrict
backends with ``SUPERKERN_BENCH_BACKENDS=naive,triton-default`` (the torch reference takes
tens of seconds per round on the two large heads).
"""
from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("GPU benchmark: needs CUDA", allow_module_level=True)

from superkern import backend as B  # noqa: E402
from superkern._tf32 import matmul_precision  # noqa: E402
from superkern.ops.overlap_ref import overlap_partials_torch  # noqa: E402

try:
    from bench.naive import compiled_blockwise_stats, naive_blockwise_stats  # noqa: E402
    from bench.peaks import gemm_peak  # noqa: E402
except ImportError:  # bench/ itself on sys.path (pytest rootdir insertion)
    from naive import compiled_blockwise_stats, naive_blockwise_stats  # noqa: E402
    from peaks import gemm_peak  # noqa: E402

SHAPES = [(49152, 576), (50257, 768), (128256, 4096), (152064, 8192)]
TF32_SHAPES = [(152064, 8192)]  # the tf32 target shape (fp32 operands, 5 GB)
# Run order: the targets first (a process stopped at its time limit keeps those).
CASES = ([(SHAPES[3], "bf16"), (TF32_SHAPES[0], "tf32"), (SHAPES[0], "bf16")]
         + [(s, "bf16") for s in SHAPES[1:3]])
BINS = 256
TOPK = {(152064, 8192): 100}
VARIANTS = dict(item.split(":", 1) for item in
                os.environ.get("SUPERKERN_BENCH_TRITON", "default:;tma:tma=1").split(";") if item)
BACKENDS = [b for b in ["naive", "compiled", "torch", "cuda"] + [f"triton-{v}" for v in VARIANTS]
            if b in os.environ.get("SUPERKERN_BENCH_BACKENDS", b).split(",")]
_DTYPE = {"bf16": torch.bfloat16, "tf32": torch.float32}


def _sync_time(fn, *args, **kwargs):
    """(result, seconds) with the GPU synchronised before and after."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def _timed_median(benchmark, fn, rounds: int, warmup: int):
    """(last result, median seconds of the timed rounds): pytest-benchmark's rounds, each
    synchronised, the warm-up rounds left out of the median."""
    times = []

    def timed():
        out, t = _sync_time(fn)
        times.append(t)
        return out

    result = benchmark.pedantic(timed, rounds=rounds, warmup_rounds=warmup, iterations=1)
    return result, statistics.median(times[warmup:] or times)


@pytest.fixture(scope="session")
def peaks():
    """The GEMM peak of a precision, measured once per session (bench/peaks.py)."""
    return gemm_peak


class _Case:
    """Operands and exact references of one shape, built once per session."""

    def __init__(self, N: int, m: int, precision: str = "bf16"):
        g = torch.Generator(device="cuda").manual_seed(N + m)
        W = torch.randn(N, m, device="cuda", generator=g)
        W += 0.3 * torch.randn(1, m, device="cuda", generator=g)  # a shared direction
        self.precision = precision
        dtype = _DTYPE[precision]
        self.X = W.to(dtype) if dtype != torch.float32 else W
        del W
        norms = torch.cat([torch.linalg.vector_norm(self.X[i:i + 16384].double(), dim=1)
                           for i in range(0, N, 16384)])
        self.scale = (1.0 / norms).float()
        self.U = torch.cat([(self.X[i:i + 16384].double() / norms[i:i + 16384, None])
                            .to(dtype) for i in range(0, N, 16384)])  # naive's input
        self.N, self.m, self.P = N, m, N * (N - 1) // 2
        # Exact sums from the Gram identities, in fp64 on the very operands the kernels read:
        # with u_i = s_i x_i, sum_{i<j} c^2 = (||U^T U||_F^2 - sum_i c_ii^2) / 2 and
        # sum_{i<j} c = (||U^T 1||^2 - sum_i c_ii) / 2, where c_ii = s_i^2 ||x_i||^2 ~ 1.
        G = torch.zeros(m, m, dtype=torch.float64, device="cuda")
        col = torch.zeros(m, dtype=torch.float64, device="cuda")
        d = []
        for i in range(0, N, 16384):
            Ub = self.X[i:i + 16384].double() * self.scale[i:i + 16384, None].double()
            G += Ub.T @ Ub
            col += Ub.sum(0)
            d.append(Ub.square().sum(1))
        d = torch.cat(d)
        self.sum_sq = (float((G * G).sum()) - float((d * d).sum())) / 2
        self.sum_cos = (float(col @ col) - float(d.sum())) / 2
        self.naive_seconds = None


_CASES: dict = {}


def _case(shape, precision: str = "bf16") -> _Case:
    key = (shape, precision)
    if key not in _CASES:
        _CASES.clear()  # one shape's operands at a time (the largest is 2.5 GB + 2.5 GB)
        torch.cuda.empty_cache()
        _CASES[key] = _Case(*shape, precision)
    return _CASES[key]


def _with_tf32(precision: str, fn):
    """fn with torch's matmuls on tf32 tensor cores when the case is tf32."""
    def run(*args, **kwargs):
        with matmul_precision("tf32" if precision == "tf32" else "fp32"):
            return fn(*args, **kwargs)
    return run


def _check(part, case: _Case, topk: int) -> None:
    """Correctness before timing; failures print the numbers."""
    P = case.P
    assert int(part.hist.sum()) == P, f"histogram counts {int(part.hist.sum())} pairs, P={P}"
    for name, got, want in (("sum_sq", part.sum_sq, case.sum_sq),
                            ("sum_cos", part.sum_cos, case.sum_cos)):
        err = abs(got - want)
        assert err <= 2e-3 * abs(want) + 1e-6 * P, f"{name}: got {got}, exact {want}, err {err}"
    for r in (0, case.N // 2, case.N - 1):
        a = ((case.X.float() @ case.X[r].float()) * case.scale * case.scale[r]).abs()
        a[r] = -1.0
        got = float(part.row_max_abs[r])
        assert abs(got - float(a.max())) <= 5e-3, f"row_max_abs[{r}] {got} vs {float(a.max())}"
        j = int(part.row_argmax[r])
        assert j != r and abs(float(a[j]) - got) <= 5e-3, f"row_argmax[{r}]={j}"
    if topk:
        v = part.topk_values.abs()
        assert v.numel() == topk and bool((v[:-1] >= v[1:]).all()), "top-k not sorted"
        assert float(v[0]) == float(part.row_max_abs.max()), "top-1 != max row max"
        assert bool((part.topk_pairs[:, 0] < part.topk_pairs[:, 1]).all())


# First in each process (it takes a second): the "under 3 ms" target, timed as a
# user calls it.
PUBLIC_SHAPES = [(49152, 576)]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in ("cuda", "triton-default")])
@pytest.mark.parametrize("shape", PUBLIC_SHAPES, ids=[f"{n}x{m}" for n, m in PUBLIC_SHAPES])
def test_overlap_public_op(benchmark, peaks, backend, shape):
    """``superkern.overlap_stats`` on a bf16 head already on the GPU, whole: row norms, operand
    preparation, the kernel, the merge and index mapping (the rows above time the kernel's
    partials on prepared operands). Checked against the partials' exact identities first."""
    import superkern

    name = backend.split("-", 1)[0]
    why = B.available("cuda")[name]
    if why is not None:
        pytest.skip(f"{name} unavailable: {why}")
    case = _case(shape, "bf16")
    peak = peaks("bf16")

    def call():
        return superkern.overlap_stats(case.X, bins=BINS, per_row=True, precision="bf16",
                                       backend=name)
    st = call()
    assert st.n_pairs == case.P and int(st.hist.sum()) == case.P
    assert abs(st.mean_sq * case.P - case.sum_sq) <= 2e-3 * case.sum_sq, (st.mean_sq, case.sum_sq)
    benchmark.group = f"overlap_stats (public op) {shape[0]}x{shape[1]} bf16 bins={BINS}"
    _, t = _timed_median(benchmark, call, rounds=10, warmup=2)
    tflops = 2.0 * case.P * case.m / t / 1e12
    benchmark.extra_info.update({
        "backend": backend, "precision": "bf16", "N": case.N, "m": case.m, "pairs": case.P,
        "bins": BINS, "per_row": True, "seconds": t, "tflops": tflops, "peak_tflops": peak,
        "fraction_of_peak": tflops / peak, "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__, "triton": _triton_version()})
    print(f"\noverlap_stats {backend} {shape[0]}x{shape[1]} bf16: {t * 1e3:.3f} ms")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,precision", CASES,
                         ids=[f"{n}x{m}-{p}" for (n, m), p in CASES])
def test_overlap(benchmark, peaks, monkeypatch, backend, shape, precision):
    if precision == "tf32" and backend == "torch":
        pytest.skip("the torch reference takes minutes per round in fp32 at this size")
    _run(benchmark, peaks, monkeypatch, backend, shape, precision)


def _run(benchmark, peaks, monkeypatch, backend, shape, precision):
    case = _case(shape, precision)
    peak = peaks(precision)
    topk = TOPK.get(shape, 0)
    big = case.P * case.m > 1e13  # the 128256 x 4096 and 152064 x 8192 heads
    if backend in ("naive", "compiled"):
        base = naive_blockwise_stats if backend == "naive" else compiled_blockwise_stats
        fn = _with_tf32(precision, lambda: base(case.U))
        out = fn()  # compiles the torch.compile row before any timing
        mean_abs = float(out["sum_abs"]) / case.P
        assert float(out["max_abs"]) <= 1.01 and 0.0 < mean_abs < 1.0, (out, mean_abs)
        assert abs(float(out["sum_cos"]) - case.sum_cos) <= 1e-2 * abs(case.sum_cos) + 1e-3 * case.P
        rounds, warmup = 3, 1
    elif backend == "torch":
        # The reference is the oracle; one round (tens of seconds on the large heads), its
        # result checked against the identities right after.
        fn, rounds, warmup = (lambda: overlap_partials_torch(
            case.X, case.scale, bins=BINS, topk=topk, precision=precision)), 1, 0
    else:
        name = backend.split("-", 1)[0]
        why = B.available("cuda")[name]
        if why is not None:
            pytest.skip(f"{name} unavailable: {why}")
        if name == "cuda":
            from superkern.ops.overlap_cuda import overlap_partials_cuda as kernel
        else:
            from superkern.triton.overlap import ENV_CONFIG
            from superkern.triton.overlap import overlap_partials_triton as kernel
            monkeypatch.setenv(ENV_CONFIG, VARIANTS[backend.split("-", 1)[1]])
        fn = (lambda: kernel(case.X, case.scale, bins=BINS, topk=topk, precision=precision))
        _check(fn(), case, topk)  # compiles, then checks before any timing
        rounds, warmup = (3 if big else 7), 1

    benchmark.group = f"overlap {shape[0]}x{shape[1]} {precision} bins={BINS} topk={topk}"
    result, t = _timed_median(benchmark, fn, rounds=rounds, warmup=warmup)
    if backend == "torch":
        _check(result, case, topk)
    tflops = 2.0 * case.P * case.m / t / 1e12
    if backend == "naive":
        case.naive_seconds = t
    naive = case.naive_seconds  # the naive row of this shape, when this process ran it
    benchmark.extra_info.update({
        "backend": backend, "config": VARIANTS.get(backend.split("-", 1)[-1], ""),
        "precision": precision, "N": case.N, "m": case.m, "pairs": case.P, "bins": BINS,
        "topk": topk, "per_row": backend not in ("naive", "compiled"), "seconds": t,
        "tflops": tflops, "peak_tflops": peak, "fraction_of_peak": tflops / peak,
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "triton": _triton_version()})
    if naive is not None and backend != "naive":  # else bench/summarize.py pairs the rows
        benchmark.extra_info.update({"naive_seconds": naive, "speedup_vs_naive": naive / t})
    print(f"\n{backend:>16} {shape[0]}x{shape[1]} {precision}: {t * 1e3:9.2f} ms "
          f"{tflops:7.1f} TFLOP/s ({100 * tflops / peak:5.1f}% of {peak:.0f})"
          + (f" x{naive / t:.2f} vs naive" if naive and backend != "naive" else ""))


def _triton_version() -> str:
    try:
        import triton
        return triton.__version__
    except ImportError:
        return ""
