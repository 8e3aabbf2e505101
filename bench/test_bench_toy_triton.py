"""Benchmarks of the Triton toy kernels (one training step: loss/grad + AdamW) on the GPU, next to
an eager instance-batched torch step measured in the same run, plus a CPU-only check that every
kernel compiles for sm_90 without register spills in its inner product loops.

Run on the GPU machine:
    python -m pytest bench/test_bench_toy_triton.py -s --benchmark-json=bench/toy_triton.json
Shapes: the small preset as the trainer launches it (1020 models padded to M = 100) and grouped
by width (170 models per m, M = m), and the large preset's n = 10240 at several widths.
extra_info holds ms per step, us per model-step, TFLOP/s (6 B n M per model-step) and the
torch baseline's numbers. SUPERKERN_TRITON_TOY overrides block sizes (see _toy_common).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

import pytest
import torch

from superkern.triton._toy_bench import compile_signature, launch_plans

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")

# (I, n, M, B): the small preset, padded as the trainer does it and grouped by width; large.
SMALL_PADDED = [(1020, 1000, 100, 2048)]
SMALL_BY_M = [(170, 1000, m, 2048) for m in (10, 15, 25, 39, 63, 100)]
LARGE = [(8, 10240, m, 2048) for m in (64, 256, 1024)]


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
    steps = 20000
    if (n, B) == (1000, 2048):
        # Whole small sweep estimate: 1020 models x 20000 steps at this per-model cost.
        print(f"small-preset estimate: {res['us_per_model_step'] * 1020 * steps / 1e6:.0f} s")


# --------------------------------------------------------------------------- sm_90 compile check

def _compile_sm90(kern, consts, num_warps, num_stages=2):
    """(registers, stack bytes, spill instructions between the first and last MMA/FFMA) of
    the sm_90 build: a coarse but useful proxy for "the product loop spills"."""
    import triton
    import triton.backends.nvidia as nv
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    cc = triton.compile(ASTSource(fn=kern, signature=compile_signature(kern, consts),
                                  constexprs=consts),
                        target=GPUTarget("cuda", 90, 32),
                        options={"num_warps": num_warps, "num_stages": num_stages})
    tool = os.path.join(os.path.dirname(nv.__file__), "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cc.asm["cubin"])
    res = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True,
                         text=True).stdout
    sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    os.unlink(f.name)
    lines = [ln for ln in sass.splitlines() if re.search(r"/\*[0-9a-f]{4,}\*/", ln)]
    mma = ([i for i, ln in enumerate(lines) if re.search(r"HGMMA|HMMA", ln)]
           or [i for i, ln in enumerate(lines) if "FFMA" in ln])   # fp32 products: FMA
    spill = [i for i, ln in enumerate(lines) if re.search(r"\b(LDL|STL)", ln)]
    inside = sum(min(mma) <= i <= max(mma) for i in spill) if mma else 0
    return (int(re.search(r"REG:(\d+)", res).group(1)),
            int(re.search(r"STACK:(\d+)", res).group(1)), inside)


@pytest.mark.skipif(os.environ.get("SUPERKERN_SM90_CHECK") != "1",
                    reason="set SUPERKERN_SM90_CHECK=1 (compiles ~40 kernels, minutes, no GPU)")
def test_kernels_compile_for_sm90_without_loop_spills():
    """Runs on any machine with Triton's bundled ptxas: builds every default launch for
    sm_90 and fails if a product loop (the MMA span) spills registers."""
    bad = []
    for name, kern, consts, warps, stages in launch_plans():
        regs, stack, inside = _compile_sm90(kern, consts, warps, stages)
        print(f"{name:28s} regs={regs:3d} stack={stack:5d} spills_in_mma_loop={inside}")
        if inside:
            bad.append(name)
    assert not bad, f"register spills inside the product loop: {bad}"
