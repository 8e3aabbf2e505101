"""Measured GEMM peaks of this GPU, the denominators of every "fraction of peak" in bench/.

``gemm_peak(precision)`` times 8192^3 torch matmuls for about a second (batches of GEMMs
between CUDA events, after a warm-up long enough to reach steady clocks), and returns the
median TFLOP/s. Kernels timed against it run for 0.1-2 s, so a burst of ten GEMMs (the
earlier method) would compare clocks and power states of a different regime.

Precisions: ``bf16``, ``fp16`` (their tensor cores), ``tf32`` (fp32 operands on tf32 tensor
cores) and ``fp32`` (tf32 off: the CUDA cores' FMA rate, the faithful toy mode's peak).

With ``SUPERKERN_BENCH_PEAKS=file.json``, a peak is measured once and then read from that
file, so every process of one session (the bench jobs run one process per backend) divides by
the same number; the file also records the device, to refuse one measured on another GPU.
"""
from __future__ import annotations

import json
import os
import statistics

import torch

ENV_PEAKS = "SUPERKERN_BENCH_PEAKS"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32,
           "fp32": torch.float32}
_MEMO: dict[str, float] = {}


def _measure(precision: str, seconds: float = 1.0, n: int = 8192) -> float:
    from superkern._tf32 import matmul_precision

    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", dtype=_DTYPES[precision], generator=g)
    b = torch.randn(n, n, device="cuda", dtype=_DTYPES[precision], generator=g)
    c = torch.empty_like(a)

    def batch(k: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(k):
            torch.mm(a, b, out=c)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / k

    with matmul_precision("fp32" if precision == "fp32" else "tf32"):
        one = batch(3)                                   # first guess (and cuBLAS warm-up)
        k = max(1, int(0.1 / one))                       # ~0.1 s per timed batch
        spent = 0.0
        while spent < 0.3 * seconds:                     # warm-up to steady clocks
            spent += batch(k) * k
        times = [batch(k) for _ in range(max(5, int(seconds / (k * one))))]
    return 2.0 * n ** 3 / statistics.median(times) / 1e12


def gemm_peak(precision: str) -> float:
    """TFLOP/s of a large torch GEMM in ``precision`` on the current GPU (see the module)."""
    if precision not in _DTYPES:
        raise ValueError(f"no GEMM peak for precision {precision!r}; one of {sorted(_DTYPES)}")
    if precision in _MEMO:
        return _MEMO[precision]
    device = torch.cuda.get_device_name()
    path = os.environ.get(ENV_PEAKS)
    saved: dict = {}
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if saved.get("device") != device:
            raise ValueError(f"{ENV_PEAKS}={path} holds peaks of {saved.get('device')!r}, "
                             f"not of this {device!r}; remove it")
    if precision not in saved.get("tflops", {}):
        saved.setdefault("tflops", {})[precision] = _measure(precision)
        saved["device"] = device
        if path:
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(saved, f, indent=1)
            os.replace(tmp, path)
    _MEMO[precision] = float(saved["tflops"][precision])
    return _MEMO[precision]
