"""Timing of one toy training step (loss/grad + AdamW) for I models: the Triton kernels against an
eager instance-batched torch step (bmm) measured in the same run. Used by
``bench/test_bench_toy_triton.py`` and callable directly::

    python -c "from superkern.triton.toy import bench_toy_step as b; \
               print(b(1020, 1000, 100, 2048, 'tf32'))"
"""
from __future__ import annotations

import math
import time

import torch

from superkern._tf32 import matmul_precision
from superkern.ops.overlap_stream import free_device_bytes



def _setup(I: int, n: int, M: int, B: int, device: torch.device, seed: int = 0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    W = (torch.randn(I, n, M, generator=gen) / math.sqrt(M)).to(device)
    b = torch.randn(I, n, generator=gen).to(device)
    p = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)           # alpha = 1, E = 1
    p = (p / p.sum()).float().reshape(1, n).to(device)
    group = torch.zeros(I, dtype=torch.int32, device=device)
    seeds = torch.tensor([seed], dtype=torch.int64, device=device)
    scale = torch.ones(I, device=device)
    lr = torch.full((I,), 1e-2, device=device)
    gamma = torch.linspace(-1, 1, I, device=device)
    return W, b, p, group, seeds, scale, lr, gamma


def _adamw_torch(W, b, dW, db, st, lr, gamma, t, b1=0.9, b2=0.999, eps=1e-8):
    """Eager torch AdamW with the paper's decay branches (the baseline, vectorised over I)."""
    mW, vW, mb, vb = st
    lrc, gc = lr[:, None, None], gamma[:, None, None]
    norm = torch.linalg.vector_norm(W, dim=2, keepdim=True)
    W.copy_(torch.where(gc >= 0, W * (1 - lrc * gc), W + lrc * gc * W * (1 - 1 / (norm + 1e-8))))
    bc1, bc2 = 1 - b1 ** t, math.sqrt(1 - b2 ** t)
    for P, g, m, v, l in ((W, dW, mW, vW, lrc), (b, db, mb, vb, lr[:, None])):
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        P.sub_(l / bc1 * m / (v.sqrt() / bc2 + eps))


def _torch_loss_grad(W, b, x, scale):
    """Eager loss and gradients of I models on one shared batch x (B, n), manual bmm backward."""
    B, n = x.shape
    h = torch.matmul(x, W)                                    # (I, B, M)
    z = torch.baddbmm(b[:, None, :], h, W.transpose(1, 2))    # (I, B, n)
    r = torch.relu(z) - x
    loss = r.square().mean((1, 2))
    g = r * (z > 0) * (scale * (2.0 / (B * n)))[:, None, None]
    gh = torch.bmm(g, W)                                      # dL/dh
    dW = torch.bmm(g.transpose(1, 2), h) + torch.matmul(x.t(), gh)
    return loss, dW, g.sum(1)


def _torch_step(W, b, p, scale, lr, gamma, st, t, B):
    """One eager step: sample x (shared batch), forward, manual backward via bmm, AdamW."""
    n = W.shape[1]
    u = torch.rand(B, n, device=W.device) < p[0]
    x = u * (2 * torch.rand(B, n, device=W.device))
    loss, dW, db = _torch_loss_grad(W, b, x, scale)
    _adamw_torch(W, b, dW, db, st, lr, gamma, t)
    return loss


def _time(fn, iters: int, device: torch.device) -> float:
    """Seconds per call, synchronised (CUDA events on GPU)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn()
        z.record()
        torch.cuda.synchronize()
        return a.elapsed_time(z) / 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def bench_toy_step(I: int, n: int, M: int, B: int, precision: str = "fp32",
                   iters: int = 20, torch_baseline: bool = True,
                   widths: list[int] | None = None) -> dict:
    """Time one full training step of I models of width M (all dense, one data group).

    First checks the kernels on one replayed batch against an fp64 eager computation
    (``rel_err_loss``, ``rel_err_dW``, ``rel_err_db``: max abs error / max |gold|). Returns
    ms per step for the Triton step and its parts (loss/grad, AdamW), us per model-step,
    TFLOP/s by the dense count 6 B n M per model-step, and the same for an eager
    torch instance-batched step (bmm, fp32; tf32 matmuls when precision is "tf32") run in the
    same process (on the largest chunk of models that fits in half the free memory, scaled
    linearly to I; ``torch_chunk`` says how many). ``widths``: the models' real widths when
    they are padded to M (the small grid's mix), so that ``tflops`` counts 6 B n m of each
    model's own m; the padded count is ``tflops_padded``.
    """
    if widths is not None and (len(widths) != I or any(not 1 <= w <= M for w in widths)):
        raise ValueError(f"widths must be {I} values in [1, {M}], got {len(widths)} "
                         f"(range {min(widths, default=0)}..{max(widths, default=0)})")
    from superkern.triton import toy as T

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    W, b, p, group, seeds, scale, lr, gamma = _setup(I, n, M, B, device)
    st = [torch.zeros_like(W), torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(b)]
    cap = T.toy_nnz_cap(p, B)
    step = [0]

    def loss_grad():
        step[0] += 1
        return T.toy_loss_grad_triton(W, b, p, group, seeds, step[0], B, scale, precision,
                                      nnz_cap=cap)

    # Correctness first: the kernels on a replayed batch vs the eager torch formula.
    x = T.toy_sample_triton(p, seeds, 1, B)
    mine = T.toy_loss_grad_triton(W, b, p, group, seeds, 1, B, scale, precision, x)
    k = min(I, 4)       # fp64 gold for the first few models (all of them would not fit)
    with torch.no_grad():
        ref = _torch_loss_grad(W[:k].double(), b[:k].double(), x[0].double(),
                               scale[:k].double())
    check = {f"rel_err_{name}": float((a[:k].double() - r).abs().max()
                                      / r.abs().max().clamp_min(1e-300))
             for name, a, r in zip(("loss", "dW", "db"), mine, ref)}
    del x, mine, ref
    grads = loss_grad()

    def adamw():
        T.toy_adamw_step_triton(W, b, grads[1], grads[2], *st, lr, lr, gamma, max(1, step[0]))

    def full():
        loss, dW, db = loss_grad()
        T.toy_adamw_step_triton(W, b, dW, db, *st, lr, lr, gamma, step[0])

    t_lg = _time(loss_grad, iters, device)
    t_opt = _time(adamw, iters, device)
    t_step = _time(full, iters, device)
    # tflops: the models' useful dense work, 6 B n m per model-step with each model's own m
    # (the convention of bench/test_bench_toy.py); tflops_padded: the same at the padded M;
    # tflops_executed: the products the kernels run, 10 B n M (z = h W^T, y W, y^T h, x^T dh
    # and the gather's share).
    padded = 6.0 * B * n * M * I
    flops = 6.0 * B * n * float(sum(widths)) if widths is not None else padded
    executed = 10.0 * B * n * M * I
    out = {"I": I, "n": n, "M": M, "B": B, "precision": precision,
           "path": T.toy_path(M, precision, device),
           "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "ms_per_step": t_step * 1e3, "ms_loss_grad": t_lg * 1e3, "ms_adamw": t_opt * 1e3,
           "us_per_model_step": t_step * 1e6 / I, "tflops": flops / t_step / 1e12,
           "tflops_padded": padded / t_step / 1e12, "tflops_executed": executed / t_step / 1e12,
           "torch_ms_per_step": None, "torch_tflops": None, "speedup_vs_torch": None,
           **check}
    if not torch_baseline:
        return out
    # The eager step holds ~4 (I, B, n) fp32 tensors: time the largest chunk of models that
    # fits in half the free memory and scale linearly to I (reported as torch_chunk).
    per_model = 4 * B * (3 * n + 2 * M) * 4
    free = free_device_bytes(device) if device.type == "cuda" else 8 << 30  # + torch's cache
    Ic = min(I, (free // 2) // per_model)
    if Ic < 1:
        return out
    W2, b2 = W[:Ic].clone(), b[:Ic].clone()
    st2 = [torch.zeros_like(W2), torch.zeros_like(W2), torch.zeros_like(b2),
           torch.zeros_like(b2)]
    scale2, lr2, gamma2 = scale[:Ic], lr[:Ic], gamma[:Ic]
    t = [0]

    def torch_step():
        t[0] += 1
        _torch_step(W2, b2, p, scale2, lr2, gamma2, st2, t[0], B)

    with matmul_precision("tf32" if precision == "tf32" else "fp32"), torch.no_grad():
        t_torch = _time(torch_step, max(2, iters // 4), device)
    t_torch *= I / Ic
    out.update(torch_ms_per_step=t_torch * 1e3, torch_tflops=flops / t_torch / 1e12,
               speedup_vs_torch=t_torch / t_step, torch_chunk=Ic)
    return out


# ------------------------------------------------------ offline compile plans (no GPU)

_INT_PTRS = {"group_ptr", "row_ptr_ptr", "col_ptr_ptr", "csr_s_ptr", "csr_i_ptr",
             "csc_perm_ptr", "cnt_s_ptr", "cnt_f_ptr", "col_off_ptr"}


def compile_signature(kern, consts):
    """Triton signature of a toy kernel for an offline ``triton.compile``: ``consts`` are
    constexprs, ``*_ptr`` arguments are fp32 pointers (int32 for index arrays, int64 for the
    seeds), the Adam scalars fp32, every other argument i32."""
    sig = {}
    for name in kern.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = ("*i32" if name in _INT_PTRS else "*i64" if name == "seed_ptr"
                         else "*fp32")
        elif name in ("beta1", "beta2", "eps", "bc1", "bc2_sqrt"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def launch_plans():
    """Every (name, kernel, constexprs, warps, stages) the default GPU configs launch for
    common widths (the fused and stored kernels run with ``cfg.num_stages``; the sampler and
    Adam kernels with Triton's default of 3)."""
    from superkern.triton import _toy_adam as A
    from superkern.triton import _toy_fused as F
    from superkern.triton import _toy_sample as D
    from superkern.triton import _toy_stored as S
    from superkern.triton._toy_common import PRECISIONS, block_m, choose_path, toy_config
    plans = []
    for M in (16, 32, 64, 100, 1024):
        for prec in PRECISIONS:
            cfg = toy_config(M, "cuda", prec)
            c = dict(PREC=PRECISIONS[prec], INTERP=False)
            st = cfg.num_stages
            if choose_path(M, prec, cfg) == "fused":
                c.update(BB=cfg.bb, BN=cfg.bn, BM=block_m(M))
                w = cfg.num_warps
                plans += [(f"rows M={M} {prec}", F._rows_kernel, c, w, st),
                          (f"cols M={M} {prec}", F._cols_kernel, dict(c, BK=cfg.bk), w, st)]
            else:
                sw = cfg.stored_warps
                c.update(BB=cfg.bb, BN=cfg.bn, BMC=min(cfg.bmc, block_m(M)))
                small = dict(BB=cfg.bb, BMC=c["BMC"])
                plans += [(f"z M={M} {prec}", S._z_kernel, c, sw, st),
                          (f"dh M={M} {prec}", S._dh_kernel, c, sw, st),
                          (f"dw M={M} {prec}", S._dw_kernel, dict(c, BK=cfg.bk), sw, st),
                          (f"h M={M} {prec}", S._h_kernel, small, sw, st),
                          (f"entry M={M} {prec}", S._entry_kernel, small, sw, st)]
    cfg = toy_config(64, "cuda")
    sw = cfg.sampler_warps
    plans += [("count", D._count_kernel, dict(FROM_X=False, BS=cfg.bs, BF=cfg.bf), sw, 3),
              ("fill", D._fill_kernel, dict(FROM_X=False, BS=cfg.bs, BF=cfg.bf), sw, 3),
              ("fill x", D._fill_kernel, dict(FROM_X=True, BS=cfg.bs, BF=cfg.bf), sw, 3),
              ("sample", D._sample_dense_kernel, dict(BS=cfg.bs, BF=cfg.bf), sw, 3),
              ("adam", A._adamw_kernel, dict(BR=cfg.br, BMA=64), cfg.adam_warps, 3)]
    return plans


def sass_spill_report(cubin: bytes) -> tuple[int, int, int]:
    """(registers, stack bytes, local-memory spill instructions between the first and last
    MMA, or FFMA for fp32 products) of an sm_90 cubin, read with Triton's bundled cuobjdump:
    a coarse but useful proxy for "the product loop spills"."""
    import os
    import re
    import subprocess
    import tempfile

    import triton.backends.nvidia as nv
    tool = os.path.join(os.path.dirname(nv.__file__), "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        res = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True,
                             text=True, check=True).stdout
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout
    finally:
        os.unlink(f.name)
    lines = [ln for ln in sass.splitlines() if re.search(r"/\*[0-9a-f]{4,}\*/", ln)]
    mma = ([i for i, ln in enumerate(lines) if re.search(r"HGMMA|HMMA", ln)]
           or [i for i, ln in enumerate(lines) if "FFMA" in ln])
    spill = [i for i, ln in enumerate(lines) if re.search(r"\b(LDL|STL)", ln)]
    inside = sum(min(mma) <= i <= max(mma) for i in spill) if mma else 0
    return (int(re.search(r"REG:(\d+)", res).group(1)),
            int(re.search(r"STACK:(\d+)", res).group(1)), inside)
