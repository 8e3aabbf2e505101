"""One-shot GPU smoke run of the hand-written CUDA overlap backend (builds nothing).

    python bench/cuda_smoke.py            # all sizes and precisions (~1-2 min on an H100)
    python bench/cuda_smoke.py --quick    # small sizes only

For each (N, m, precision): the cuda kernel against the torch reference on identical inputs
(max errors of every statistic), then timings of the cuda launcher (stats only, and with a
histogram + top-k) in ms and TFLOP/s (N^2 m flops: the upper triangle, 2 flops per
multiply-add), next to a bf16 / tf32 / fp32 torch matmul of the same work as the peak proxy.
Run with SUPERKERN_CUDA_SYNC=1 to synchronise after every launch (pins a crash to its call).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


def _time(fn, reps: int = 3) -> float:
    fn()  # warm-up (and lazy initialisation)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def _peak_tflops(dtype: torch.dtype, tf32: bool) -> float:
    """Measured dense matmul rate (8192^3) in TFLOP/s for this dtype."""
    from superkern._tf32 import matmul_precision

    with matmul_precision("tf32" if tf32 else "fp32"):
        a = torch.randn(8192, 8192, device="cuda").to(dtype)
        t = _time(lambda: a @ a)
        return 2 * 8192**3 / t / 1e12


def _inputs(n: int, m: int, precision: str):
    W = torch.randn(n, m, device="cuda")
    W += 0.3 * torch.randn(1, m, device="cuda")
    norms = torch.linalg.vector_norm(W.double(), dim=1)
    if precision == "fp16":
        return (W.double() / norms[:, None]).half(), torch.ones(n, device="cuda")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return W.to(dtype), (1.0 / norms).float()


def _errors(part, ref) -> dict:
    P = float(part.hist.sum()) if part.hist is not None else 1.0
    out = {f: abs(getattr(part, f) - getattr(ref, f)) / max(abs(getattr(ref, f)), 1e-300)
           for f in ("sum_cos", "sum_abs", "sum_sq")}
    out["hist_L1/P"] = float((part.hist - ref.hist).abs().sum()) / P if part.hist is not None else 0
    out["row_max"] = float((part.row_max_abs - ref.row_max_abs).abs().max())
    out["argmax_diff"] = int((part.row_argmax != ref.row_argmax).sum())
    out["row_sq_rel"] = float(((part.row_sum_sq - ref.row_sum_sq).abs()
                               / ref.row_sum_sq.abs().clamp_min(1e-30)).max())
    out["topk_val"] = float((part.topk_values - ref.topk_values).abs().max())
    out["topk_pairs_equal"] = bool(torch.equal(part.topk_pairs, ref.topk_pairs))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--precisions", default="fp32,tf32,bf16,fp16")
    args = ap.parse_args()

    import superkern
    from superkern import backend as B
    from superkern.ops.overlap_cuda import overlap_partials_cuda
    from superkern.ops.overlap_ref import overlap_partials_torch

    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    why = B.available("cuda")["cuda"]
    if why is not None:
        print(f"cuda backend unavailable: {why}\nextension error: {B.extension_error()}")
        return 1
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"superkern {superkern.__version__}  ext {B.extension().__file__}")

    # Smallest possible first: a crash here is a kernel bug, not a size problem.
    X, s = _inputs(5, 3, "bf16")
    part = overlap_partials_cuda(X, s, bins=4, topk=2, precision="bf16")
    torch.cuda.synchronize()
    print(f"tiny run ok: sum_sq={part.sum_sq:.6f} hist={part.hist.tolist()}")
    st = superkern.overlap_stats(torch.randn(300, 40, device="cuda"), bins=8, topk=3,
                                 per_row=True, backend="cuda")
    print(f"public op ok: backend={st.backend} mean_sq={st.mean_sq:.6f} max_pair={st.max_pair}")

    peaks = {"fp32": _peak_tflops(torch.float32, False),
             "tf32": _peak_tflops(torch.float32, True),
             "bf16": _peak_tflops(torch.bfloat16, False),
             "fp16": _peak_tflops(torch.float16, False)}
    print("torch matmul 8192^3 TFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))

    sizes = [(1000, 96), (4097, 333), (30522, 384), (49152, 576), (20000, 4096)]
    if args.quick:
        sizes = sizes[:2]
    for n, m in sizes:
        for precision in args.precisions.split(","):
            X, s = _inputs(n, m, precision)
            part = overlap_partials_cuda(X, s, bins=64, topk=10, precision=precision)
            t_ref = time.perf_counter()
            ref = overlap_partials_torch(X, s, bins=64, topk=10, precision=precision)
            torch.cuda.synchronize()
            t_ref = time.perf_counter() - t_ref
            err = _errors(part, ref)
            t_stats = _time(lambda: overlap_partials_cuda(X, s, bins=0, topk=0,
                                                          precision=precision))
            t_full = _time(lambda: overlap_partials_cuda(X, s, bins=64, topk=10,
                                                         precision=precision))
            flops = float(n) * n * m
            tf = flops / t_stats / 1e12
            print(f"N={n:6d} m={m:5d} {precision}: stats {t_stats * 1e3:8.2f} ms "
                  f"({tf:6.1f} TFLOP/s, {100 * tf / peaks[precision]:4.1f}% of matmul) | "
                  f"+hist+topk {t_full * 1e3:8.2f} ms | torch ref {t_ref * 1e3:8.0f} ms")
            print("    errors: " + ", ".join(
                f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in err.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
