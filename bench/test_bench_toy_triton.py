"""Benchmarks of the Triton toy kernels (one training step: loss/grad + AdamW) on the GPU, next to
an eager instance-batched torch step measured in the same run. (That every kernel compiles for
sm_90 without register spills in its product loops is checked in CI:
tests/test_toy_triton_compile.py.)

Run on the GPU machine:
    python -m pytest bench/test_bench_toy_triton.py -s --benchmark-json=bench/toy_triton.json
Shapes: the small preset as the trainer launches it (1020 models padded to M = 100) and grouped
by width (170 models per m, M = m), and the large preset's n = 10240 at several widths.
extra_info holds ms per step, us per model-step, TFLOP/s (6 B n M per model-step; 10 B n M
executed) and the torch baseline's numbers; the case's timed call is the whole
``bench_toy_step`` (set-up, checks, both timings), so read ms_per_step, not its median.
SUPERKERN_TRITON_TOY overrides block sizes (see _toy_common).
"""
from __future__ import annotations

import pytest
import torch

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")

# (I, n, M, B): the small preset, padded as the trainer does it and grouped by width; large.
SMALL_PADDED = [(1020, 1000, 100, 2048)]
SMALL_BY_M = [(170, 1000, m, 2048) for m in (10, 15, 25, 39, 63, 100)]
LARGE = [(8, 10240, m, 2048) for m in (64, 256, 1024)]
# Largest relative error of loss, dW and db against fp64 on one replayed batch.
REL_ERR = {"fp32": 1e-4, "tf32x3": 1e-4, "tf32": 1e-2, "bf16": 5e-2}


@gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32x3", "tf32", "bf16"])
@pytest.mark.parametrize("shape", SMALL_PADDED + SMALL_BY_M + LARGE,
                         ids=lambda s: "I{}-n{}-M{}-B{}".format(*s))
def test_bench_toy_step(benchmark, shape, precision):
    from superkern.triton.toy import bench_toy_step
    I, n, M, B = shape
    res = benchmark.pedantic(lambda: bench_toy_step(I, n, M, B, precision, iters=10),
                             rounds=1, iterations=1)
    benchmark.extra_info.update(res)
    print(f"\n{res}")
    # A fast wrong kernel is no result: the replayed step against fp64, per precision.
    for name in ("loss", "dW", "db"):
        assert res[f"rel_err_{name}"] <= REL_ERR[precision], (name, res)
    if (n, B) == (1000, 2048):
        # The small sweep (1020 models x 20000 steps) if every model cost this much.
        print(f"small-preset estimate at this per-model cost: "
              f"{res['us_per_model_step'] * 1020 * 20000 / 1e6:.0f} s")
