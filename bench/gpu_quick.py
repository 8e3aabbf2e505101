"""Quick GPU timing of the overlap backends against naive PyTorch and the measured peaks.

Run on a GPU machine, after building the extension (``bash scripts/gpu_session.sh quick``
does both): ``python bench/gpu_quick.py [--shapes 49152x576,152064x8192]``. Prints a table
and writes JSON (``--json``). The pytest-benchmark suite in bench/ is the full version.
Overlap times are of the public op (row norms, operand preparation and index mapping
included); the naive baseline computes fewer statistics (sum c, sum |c|, max |c|). The peaks
are bench/peaks.py's. The JSON is rewritten after every row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo
import superkern  # noqa: E402
from superkern._tf32 import matmul_precision  # noqa: E402

from bench.naive import naive_blockwise_stats  # noqa: E402
from bench.peaks import gemm_peak  # noqa: E402


def timeit(fn, reps=5, warmup=1):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="49152x576,50257x768,128256x4096,152064x8192")
    ap.add_argument("--backends", default="triton,cuda")
    ap.add_argument("--precisions", default="bf16")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    peaks = {p: gemm_peak(p) for p in sorted(set(args.precisions.split(",")))}
    print("measured peaks TFLOP/s:", {k: round(v, 1) for k, v in peaks.items()})
    rows = []

    def save():  # after every row: a timeout keeps what was measured
        if not args.json:
            return
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"peaks": peaks, "device": torch.cuda.get_device_name(0),
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
        os.replace(tmp, args.json)
    save()
    for shape in args.shapes.split(","):
        n, m = map(int, shape.split("x"))
        g = torch.Generator(device="cuda").manual_seed(0)
        W = torch.randn(n, m, device="cuda", generator=g, dtype=torch.float32)
        W += 0.3 * torch.randn(1, m, device="cuda", generator=g)
        P = n * (n - 1) // 2
        flop = 2.0 * P * m
        for prec in args.precisions.split(","):
            Wd = W.to(torch.bfloat16) if prec == "bf16" else (W.half() if prec == "fp16" else W)
            U = (W / W.norm(dim=1, keepdim=True)).to(Wd.dtype)
            # naive on the tensor cores of the same precision (tf32 for tf32 rows)
            with matmul_precision("tf32" if prec == "tf32" else "fp32"):
                t_naive = timeit(lambda: naive_blockwise_stats(U), reps=3)
            for be in args.backends.split(","):
                why = superkern.available_backends("cuda").get(be)
                if why:
                    print(f"{shape} {prec} {be}: unavailable ({why})")
                    continue
                kw = dict(bins=256, per_row=True, topk=100 if m >= 4096 else 0, precision=prec,
                          backend=be)
                try:
                    st = superkern.overlap_stats(Wd, **kw)
                    t = timeit(lambda: superkern.overlap_stats(Wd, **kw), reps=3)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    print(f"{shape} {prec} {be}: FAILED {type(exc).__name__}: {exc}")
                    continue
                row = dict(shape=shape, precision=prec, backend=be, seconds=t,
                           tflops=flop / t / 1e12, frac_peak=flop / t / 1e12 / peaks[prec],
                           naive_seconds=t_naive, speedup_vs_naive=t_naive / t,
                           mean_abs=st.mean_abs, mean_sq=st.mean_sq, max_abs=st.max_abs)
                rows.append(row)
                save()
                print(f"{shape:>13} {prec} {be:>6}: {t*1e3:9.2f} ms  {row['tflops']:6.1f} TFLOP/s "
                      f"({100*row['frac_peak']:4.1f}% of peak)  naive {t_naive*1e3:8.2f} ms "
                      f"x{row['speedup_vs_naive']:.1f}  mean|c|={st.mean_abs:.6f}")


if __name__ == "__main__":
    main()
