"""Benchmarks of the Triton toy kernels (one training step: loss/grad + AdamW) on the GPU, next to
an eager instance-batched torch step measured in the same run. (That every kernel compiles for
sm_90 without register spills in its product loops is checked in CI:
tests/test_toy_triton_compile.py.)

Run on the GPU machine:
    python -m pytest bench/test_bench_toy_triton.py -s --benchmark-json=bench/toy_triton.json
Shapes: the small preset as the trainer launches it (1020 models padded to M = 100) and grouped
by width (170 models per m, M = m), and the large preset's n = 10240 at several widths.
extra_info holds ms per step, us per model-step, TFLOP/s (6 B n m per model-step with each
model's own m; ``tflops_padded`` at the padded M; 10 B n M executed), the fraction of the GEMM
peak of the precision (bench/peaks.py: fp32 with tf32 off for fp32, tf32 for tf32x3 and tf32,
bf16) and the torch baseline's numbers; the case's timed call is the whole ``bench_toy_step``
(set-up, checks, both timings), so read ms_per_step, not its median. ``bench/summarize.py``
adds the speed-ups over the eager peers of bench/test_bench_toy.py from the same job.
SUPERKERN_TRITON_TOY overrides block sizes (see _toy_common).
"""
from __future__ import annotations

import pytest
import torch

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")

# (I, n, M, B): the small preset, padded as the trainer does it and grouped by width; large.
SMALL_MS = (10, 15, 25, 39, 63, 100)
SMALL_PADDED = (1020, 1000, 100, 2048)
SMALL_BY_M = [(170, 1000, m, 2048) for m in SMALL_MS]
LARGE = [(8, 10240, m, 2048) for m in (64, 256, 1024)]
# Run order, most wanted first (a job stopped at its time limit loses the tail; each new
# (M, precision) compiles its kernels, 5-12 s): the faithful fp32 mode on the small grid's
# launch and on Fig. 1's widths, then tf32x3 and tf32 (which count only if their exponents
# match fp32's), then the per-width launches, then bf16.
CASES = ([(SMALL_PADDED, "fp32")] + [(s, "fp32") for s in LARGE]
         + [(SMALL_PADDED, p) for p in ("tf32x3", "tf32")] + [(s, "tf32") for s in LARGE]
         + [(s, "fp32") for s in SMALL_BY_M] + [(s, "tf32x3") for s in LARGE]
         + [(SMALL_PADDED, "bf16")] + [(s, "bf16") for s in LARGE]
         + [(s, p) for p in ("tf32x3", "tf32", "bf16") for s in SMALL_BY_M])
# The peak each precision is measured against: tf32x3 runs three tf32 products per product,
# so its useful rate is at most a third of the tf32 peak.
PEAK_OF = {"fp32": "fp32", "tf32x3": "tf32", "tf32": "tf32", "bf16": "bf16"}
# Largest relative error of loss, dW and db against fp64 on one replayed batch.
REL_ERR = {"fp32": 1e-4, "tf32x3": 1e-4, "tf32": 1e-2, "bf16": 5e-2}


@gpu
@pytest.mark.parametrize("shape, precision", CASES,
                         ids=["I{}-n{}-M{}-B{}-{}".format(*s, p) for s, p in CASES])
def test_bench_toy_step(benchmark, shape, precision):
    from superkern.triton.toy import bench_toy_step
    try:
        from bench.peaks import gemm_peak
    except ImportError:  # bench/ itself on sys.path
        from peaks import gemm_peak
    I, n, M, B = shape
    # The padded launch holds the small grid's mix of widths (170 models of each m).
    widths = [m for m in SMALL_MS for _ in range(I // len(SMALL_MS))] \
        if shape == SMALL_PADDED else None
    benchmark.group = f"toy step triton n={n} B={B}"
    res = benchmark.pedantic(lambda: bench_toy_step(I, n, M, B, precision, iters=10,
                                                    widths=widths),
                             rounds=1, iterations=1)
    peak = gemm_peak(PEAK_OF[precision])
    res.update(peak_tflops=peak, peak_precision=PEAK_OF[precision],
               fraction_of_peak=res["tflops"] / peak, models=I,
               seconds_per_model_step=res["us_per_model_step"] / 1e6)
    benchmark.extra_info.update(res)
    print(f"\n{res}")
    # A fast wrong kernel is no result: the replayed step against fp64, per precision.
    for name in ("loss", "dW", "db"):
        assert res[f"rel_err_{name}"] <= REL_ERR[precision], (name, res)
