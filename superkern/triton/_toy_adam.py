"""AdamW step of the toy model with the paper's two decay branches, in place, one launch.

One program per (row tile, instance): the decay factor needs each row's norm, so a first sweep
over the width accumulates it and a second applies decay (W only) and Adam (W, then b for the
tile's rows). Decay uses the norm before any update, as the reference does.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _adamw_kernel(W_ptr, b_ptr, dW_ptr, db_ptr, mW_ptr, vW_ptr, mb_ptr, vb_ptr, lrW_ptr,
                  lrb_ptr, gamma_ptr, n, M, beta1, beta2, eps, bc1, bc2_sqrt,
                  BR: tl.constexpr, BMA: tl.constexpr):
    rt = tl.program_id(0)
    inst = tl.program_id(1).to(tl.int64)
    lr = tl.load(lrW_ptr + inst)
    lr_b = tl.load(lrb_ptr + inst)
    gam = tl.load(gamma_ptr + inst)
    offs_r = rt * BR + tl.arange(0, BR)
    r_ok = offs_r < n
    base = inst * n * M
    rows = offs_r[:, None] * M
    sq = tl.zeros([BR], dtype=tl.float32)
    for m0 in range(0, M, BMA):
        offs_m = m0 + tl.arange(0, BMA)
        w = tl.load(W_ptr + base + (rows + offs_m[None, :]),
                    mask=r_ok[:, None] & (offs_m < M)[None, :], other=0.0)
        sq += tl.sum(w * w, axis=1)
    # gamma >= 0: W *= 1 - lr gamma; gamma < 0: W += lr gamma W (1 - 1 / (||W_i|| + 1e-8)).
    # IEEE sqrt and division (plain tl.sqrt and / compile to approximate instructions)
    pull = lr * gam * (1.0 - tl.div_rn(1.0, tl.sqrt_rn(sq) + 1e-8))
    step_size = tl.div_rn(lr, bc1)
    for m0 in range(0, M, BMA):
        offs_m = m0 + tl.arange(0, BMA)
        mk = r_ok[:, None] & (offs_m < M)[None, :]
        ptr = rows + offs_m[None, :]
        w = tl.load(W_ptr + base + ptr, mask=mk, other=0.0)
        gr = tl.load(dW_ptr + base + ptr, mask=mk, other=0.0)
        m1 = tl.load(mW_ptr + base + ptr, mask=mk, other=0.0)
        m2 = tl.load(vW_ptr + base + ptr, mask=mk, other=0.0)
        if gam >= 0:
            w = w * (1.0 - lr * gam)
        else:
            w = w + pull[:, None] * w
        m1 = beta1 * m1 + (1.0 - beta1) * gr
        m2 = beta2 * m2 + (1.0 - beta2) * gr * gr
        # torch's order: (lr / bc1 * m) / (sqrt(v) / sqrt(bc2) + eps)
        w = w - tl.div_rn(step_size * m1, tl.div_rn(tl.sqrt_rn(m2), bc2_sqrt) + eps)
        tl.store(W_ptr + base + ptr, w, mask=mk)
        tl.store(mW_ptr + base + ptr, m1, mask=mk)
        tl.store(vW_ptr + base + ptr, m2, mask=mk)
    bptr = inst * n + offs_r
    bv = tl.load(b_ptr + bptr, mask=r_ok, other=0.0)
    gb = tl.load(db_ptr + bptr, mask=r_ok, other=0.0)
    m1 = beta1 * tl.load(mb_ptr + bptr, mask=r_ok, other=0.0) + (1.0 - beta1) * gb
    m2 = beta2 * tl.load(vb_ptr + bptr, mask=r_ok, other=0.0) + (1.0 - beta2) * gb * gb
    bv = bv - tl.div_rn(tl.div_rn(lr_b, bc1) * m1, tl.div_rn(tl.sqrt_rn(m2), bc2_sqrt) + eps)
    tl.store(b_ptr + bptr, bv, mask=r_ok)
    tl.store(mb_ptr + bptr, m1, mask=r_ok)
    tl.store(vb_ptr + bptr, m2, mask=r_ok)
