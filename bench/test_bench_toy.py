"""Benchmark of one toy-model training step: the reference trainer (autograd, one model), the
instance-batched torch engine, and the fused triton engine when it is available.

Run: python -m pytest bench/test_bench_toy.py --benchmark-json=bench/toy.json
Shapes: the paper's small setting (n = 1000, m = 39, B = 2048) for one model, and an instance
axis of models with m padded to 100 (240 models on GPU, as the small sweep's 6 m x 10 gamma
x 4 alpha; a few on CPU). Each case first checks its losses against the reference, then times
whole steps (sample, forward, backward, optimizer), synchronised. extra_info: seconds per step,
per model-step, and TFLOP/s by the dense count 6 B n m per model-step (useful m; the engine
really does 10 B n M with the padded M, reported as ``tflops_executed``). fp32, tf32 off.
SUPERKERN_BENCH_THREADS sets torch's CPU threads (default: torch's own).
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from superkern.toy import ToyConfig
from superkern.toy.backend import triton_toy
from superkern.toy.batched import BatchedTrainer
from superkern._tf32 import matmul_precision
from superkern.toy.engine import synchronize
from superkern.toy.reference import ReferenceTrainer

CUDA = torch.cuda.is_available()
DEVICES = ["cuda"] if CUDA else ["cpu"]   # a GPU machine's time is for the GPU rows
SMALL_MS = (10, 15, 25, 39, 63, 100)
GAMMAS = tuple(-1 + 2 * k / 9 for k in range(10))      # linspace(-1, 1, 10)

if os.environ.get("SUPERKERN_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["SUPERKERN_BENCH_THREADS"]))


def _cfg(m, gamma=-1.0, alpha=1.0, backend="torch", steps=20000):
    return ToyConfig(m=m, gamma=gamma, alpha=alpha, backend=backend, steps=steps, log_every=0)


def _instance_grid(device: str, backend: str):
    if device == "cuda":   # 240 models: 6 m x 10 gamma x 4 alpha, batch shared per alpha
        return [_cfg(m, g, a, backend) for a in (0.5, 1.0, 1.5, 2.0) for g in GAMMAS
                for m in SMALL_MS]
    return [_cfg(m, g, 1.0, backend) for m, g in ((10, -1.0), (39, 0.5), (100, -1.0))]


def _time_steps(benchmark, trainer, device: str, steps: int, rounds: int, group: str) -> float:
    benchmark.group = group  # read when the timing starts: set it first

    def run():
        for _ in range(steps):
            trainer.step()
        synchronize(torch.device(device))
    with matmul_precision("fp32"):
        benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
        if benchmark.stats is not None:
            return benchmark.stats.stats.median / steps
        t0 = time.perf_counter()            # --benchmark-disable: one timed round
        run()
        return (time.perf_counter() - t0) / steps


def _record(benchmark, configs, M: int, per_step: float, device: str, peer: str = "") -> None:
    """extra_info of a case; ``peer`` names the eager rows that bench/summarize.py sets the
    Triton rows against ("eager reference", "eager batched")."""
    B, n = configs[0].batch, configs[0].n
    useful = sum(6.0 * B * n * c.m for c in configs)
    executed = 10.0 * B * n * M * len(configs)
    if device == "cuda":
        try:
            from bench.peaks import gemm_peak
        except ImportError:  # bench/ itself on sys.path
            from peaks import gemm_peak
        peak = gemm_peak("fp32")  # these steps run fp32 with tf32 off
        benchmark.extra_info.update(peak_tflops=peak, peak_precision="fp32",
                                    fraction_of_peak=useful / per_step / 1e12 / peak)
    if peer:
        benchmark.extra_info["peer"] = peer
    benchmark.extra_info.update(
        models=len(configs), n=n, B=B, m=sorted({c.m for c in configs}), M=M,
        seconds_per_step=per_step, seconds_per_model_step=per_step / len(configs),
        tflops=useful / per_step / 1e12, tflops_executed=executed / per_step / 1e12,
        threads=torch.get_num_threads(),
        device=torch.cuda.get_device_name(0) if device == "cuda" else "cpu")


def _reference_losses(configs, device, steps=2):
    out = []
    for c in configs:
        tr = ReferenceTrainer(c, device)
        out.append([float(tr.step()) for _ in range(steps)])
    return torch.tensor(out).T          # (steps, I)


@pytest.mark.parametrize("device", DEVICES)
def test_reference_step(benchmark, device):
    c = _cfg(39)
    tr = ReferenceTrainer(c, device)
    per = _time_steps(benchmark, tr, device, steps=20 if device == "cuda" else 2,
                      rounds=5 if device == "cuda" else 3,
                      group=f"toy step reference {device} (n=1000, m=39, B=2048)")
    _record(benchmark, [c], 39, per, device, peer="eager reference")


@pytest.mark.parametrize("device", DEVICES)
def test_batched_single_step(benchmark, device):
    c = _cfg(39)
    tr = BatchedTrainer([c], device)
    want = _reference_losses([c], device)
    got = torch.stack([tr.step().cpu() for _ in range(2)])
    assert torch.allclose(got, want, rtol=1e-5), (got, want)
    per = _time_steps(benchmark, tr, device, steps=20 if device == "cuda" else 2,
                      rounds=5 if device == "cuda" else 3,
                      group=f"toy step batched torch {device} (n=1000, m=39, B=2048)")
    _record(benchmark, [c], 39, per, device)


def _backends(device):
    out = ["torch"]
    if device == "cuda" and triton_toy()[0] is not None:
        out.append("triton")
    return out


@pytest.mark.parametrize("device, backend", [(d, b) for d in DEVICES for b in _backends(d)])
def test_instance_batched_step(benchmark, device, backend):
    configs = _instance_grid(device, backend)
    tr = BatchedTrainer(configs, device, backend=backend,
                        triton_mod=triton_toy()[0] if backend == "triton" else None)
    if backend == "torch":   # check a few models against the reference first
        pick = [0, len(configs) // 2, len(configs) - 1]
        want = _reference_losses([configs[i] for i in pick], device)
        got = torch.stack([tr.step().cpu()[pick] for _ in range(2)])
        assert torch.allclose(got, want, rtol=1e-4), (got, want)
    else:                    # triton draws its own batches: a sanity range only
        loss = tr.step()
        assert bool(torch.isfinite(loss).all())
    per = _time_steps(
        benchmark, tr, device, steps=5 if device == "cuda" else 1,
        rounds=5 if device == "cuda" else 2,
        group=f"toy step instance-batched {backend} {device} ({len(configs)} models, M={tr.M})")
    _record(benchmark, configs, tr.M, per, device,
            peer="eager batched" if backend == "torch" and len(configs) == 240 else "")
