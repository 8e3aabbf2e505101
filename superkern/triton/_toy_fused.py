"""Fused loss and gradients of the toy model for padded widths up to ``fused_max``: two kernels,
everything of width M held in registers, no (B, n) tensor anywhere.

Math (c = loss_scale * 2 / (B n); x sparse, entries e = (s, i, v)):
    h = x W                      gathered: h_s = sum_e v W_i               (CSR slots)
    z = h W^T + b, y = ReLU(z)   dense, tensor cores
    g = c (y - x) 1[z > 0] = c y + gx, with gx nonzero only on entries: gx_e = -c v 1[z_e > 0]
    dh = g W = c y W + sum_e gx_e W_i
    dW = g^T h + x^T dh = c y^T h + sum_e (gx_e h_s + v dh_s) e_i^T,   db = sum_B g
    loss * B n = sum y^2 + sum_e ((y_e - v)^2 - y_e^2)
so the dense part never needs x: the data enter only through the entry lists.

_rows_kernel, one program per (batch tile, instance): h by gathering W rows; per entry
z_e = h_s . W_i + b_i (exact fp32), gx_e and the loss's entry part; the dense sweep over
feature tiles (z, y, dh += y W, then dh *= c); dh += gx_e W_i. Writes h, dh (I, B, M),
gx (I, cap) and loss partials.
_cols_kernel, one program per (feature tile, instance): recomputes z for its feature tile over
all batch tiles (cheaper than storing y, see docs), dW_t += y^T h, db_t += sum y, then the
tile's entries in feature-major chunks: a one-hot (features x entries) matrix times the
gathered h and dh rows, on tensor cores. Each program owns its outputs: deterministic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from superkern.triton._toy_common import _dw_db_finish, _mm, relu, tf32_op


@triton.jit
def _rows_kernel(W_ptr, b_ptr, group_ptr, c_ptr, row_ptr_ptr, csr_i_ptr, csr_v_ptr,
                 h_ptr, dh_ptr, gx_ptr, loss_ptr, n, M, B, cap, n_bt,
                 BB: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr,
                 INTERP: tl.constexpr):
    bt = tl.program_id(0)
    inst = tl.program_id(1).to(tl.int64)
    g = tl.load(group_ptr + inst).to(tl.int64)
    c = tl.load(c_ptr + inst)
    offs_b = bt * BB + tl.arange(0, BB)
    b_ok = offs_b < B
    offs_m = tl.arange(0, BM)
    m_ok = offs_m < M
    Wb = W_ptr + inst * n * M
    bb = b_ptr + inst * n
    rp = tl.load(row_ptr_ptr + g * (B + 1) + offs_b, mask=b_ok, other=0)
    cnt = tl.load(row_ptr_ptr + g * (B + 1) + offs_b + 1, mask=b_ok, other=0) - rp
    kmax = tl.max(cnt, axis=0)
    ent = g * cap
    # h: one trip per entry slot (~E + a few per tile), each gathering one W row per sample.
    h = tl.zeros([BB, BM], dtype=tl.float32)
    for k in range(0, kmax):
        e = rp + k
        ok = (k < cnt) & (e < cap)
        fi = tl.load(csr_i_ptr + ent + e, mask=ok, other=0)
        v = tl.load(csr_v_ptr + ent + e, mask=ok, other=0.0)
        w = tl.load(Wb + (fi[:, None] * M + offs_m[None, :]),
                    mask=ok[:, None] & m_ok[None, :], other=0.0)
        h += v[:, None] * w
    hb = h_ptr + inst * B * M + (offs_b[:, None] * M + offs_m[None, :])
    tl.store(hb, h, mask=b_ok[:, None] & m_ok[None, :])
    # Entries: the exact z at each active (s, i), the data part of g (gx) and the loss's
    # entry part. Three slot loops (h, entries, dh's entry part) rather than one or two: at
    # width 128 any loop holding three (BB, BM) tiles spills registers.
    lsp = tl.zeros([BB], dtype=tl.float32)
    for k in range(0, kmax):
        e = rp + k
        ok = (k < cnt) & (e < cap)
        fi = tl.load(csr_i_ptr + ent + e, mask=ok, other=0)
        v = tl.load(csr_v_ptr + ent + e, mask=ok, other=0.0)
        w = tl.load(Wb + (fi[:, None] * M + offs_m[None, :]),
                    mask=ok[:, None] & m_ok[None, :], other=0.0)
        ze = tl.sum(h * w, axis=1) + tl.load(bb + fi, mask=ok, other=0.0)
        ye = relu(ze)
        lsp += tl.where(ok, (ye - v) * (ye - v) - ye * ye, 0.0)
        tl.store(gx_ptr + inst * cap + e, tl.where(ze > 0.0, -c * v, 0.0), mask=ok)
    # Dense sweep: z = h W_t^T + b_t, y, dh += y W_t. h and each W_t take part in products
    # only from here on: rounded once for tf32 (no second copy live in the loop).
    h = tf32_op(h, PREC)
    dh = tl.zeros([BB, BM], dtype=tl.float32)
    ysq = tl.zeros([BB], dtype=tl.float32)
    for f0 in range(0, n, BN):
        offs_n = f0 + tl.arange(0, BN)
        n_ok = offs_n < n
        Wt = tf32_op(tl.load(Wb + (offs_n[:, None] * M + offs_m[None, :]),
                             mask=n_ok[:, None] & m_ok[None, :], other=0.0), PREC)
        bias = tl.load(bb + offs_n, mask=n_ok, other=0.0)
        z = _mm(tl.zeros([BB, BN], dtype=tl.float32), h, tl.trans(Wt), PREC, INTERP, True, True)
        z += bias[None, :]
        y = tl.where(b_ok[:, None] & n_ok[None, :], relu(z), 0.0)
        ysq += tl.sum(y * y, axis=1)
        dh = _mm(dh, y, Wt, PREC, INTERP, False, True)
    dh = dh * c
    # gx was written by this program's own threads; the barrier makes it visible to all.
    # rp and cnt are reloaded rather than kept live across the sweep (registers).
    tl.debug_barrier()
    rp = tl.load(row_ptr_ptr + g * (B + 1) + offs_b, mask=b_ok, other=0)
    cnt = tl.load(row_ptr_ptr + g * (B + 1) + offs_b + 1, mask=b_ok, other=0) - rp
    for k in range(0, kmax):
        e = rp + k
        ok = (k < cnt) & (e < cap)
        fi = tl.load(csr_i_ptr + ent + e, mask=ok, other=0)
        gx = tl.load(gx_ptr + inst * cap + e, mask=ok, other=0.0)
        w = tl.load(Wb + (fi[:, None] * M + offs_m[None, :]),
                    mask=ok[:, None] & m_ok[None, :], other=0.0)
        dh += gx[:, None] * w
    dhb = dh_ptr + inst * B * M + (offs_b[:, None] * M + offs_m[None, :])
    tl.store(dhb, dh, mask=b_ok[:, None] & m_ok[None, :])
    tl.store(loss_ptr + inst * n_bt + bt, tl.sum(ysq + lsp, axis=0))


@triton.jit
def _cols_kernel(W_ptr, b_ptr, group_ptr, c_ptr, col_ptr_ptr, csc_perm_ptr, csr_s_ptr,
                 csr_i_ptr, csr_v_ptr, h_ptr, dh_ptr, gx_ptr, dW_ptr, db_ptr, n, M, B, cap,
                 BB: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
                 PREC: tl.constexpr, INTERP: tl.constexpr):
    ft = tl.program_id(0)
    inst = tl.program_id(1).to(tl.int64)
    g = tl.load(group_ptr + inst).to(tl.int64)
    c = tl.load(c_ptr + inst)
    f0 = ft * BN
    offs_n = f0 + tl.arange(0, BN)
    n_ok = offs_n < n
    offs_m = tl.arange(0, BM)
    m_ok = offs_m < M
    wmask = n_ok[:, None] & m_ok[None, :]
    wofs = offs_n[:, None] * M + offs_m[None, :]
    # W_t takes part in products only: rounded once for tf32
    Wt = tf32_op(tl.load(W_ptr + inst * n * M + wofs, mask=wmask, other=0.0), PREC)
    bias = tl.load(b_ptr + inst * n + offs_n, mask=n_ok, other=0.0)
    dW = tl.zeros([BN, BM], dtype=tl.float32)
    db = tl.zeros([BN], dtype=tl.float32)
    for b0 in range(0, B, BB):
        offs_b = b0 + tl.arange(0, BB)
        b_ok = offs_b < B
        h = tf32_op(tl.load(h_ptr + inst * B * M + (offs_b[:, None] * M + offs_m[None, :]),
                            mask=b_ok[:, None] & m_ok[None, :], other=0.0), PREC)
        z = _mm(tl.zeros([BB, BN], dtype=tl.float32), h, tl.trans(Wt), PREC, INTERP, True, True)
        z += bias[None, :]
        y = tl.where(b_ok[:, None] & n_ok[None, :], relu(z), 0.0)
        db += tl.sum(y, axis=0)
        y = tf32_op(y, PREC)  # db above took y exact; only the product reads it from here
        dW = _mm(dW, tl.trans(y), h, PREC, INTERP, True, True)
    _dw_db_finish(dW, db, c, g, inst, f0, offs_n, n_ok, offs_m, m_ok, n_ok, n, M, B, cap,
                  col_ptr_ptr, csc_perm_ptr, csr_s_ptr, csr_i_ptr, csr_v_ptr, gx_ptr, h_ptr,
                  dh_ptr, dW_ptr, db_ptr, BN, BK, PREC, INTERP)


def fused_loss_grad(W, b, group, c, sp, B, cfg, bm, prec, interp):
    """Launch both kernels; returns (loss partials (I, n_bt), dW, db)."""
    I, n, M = W.shape
    dev = W.device
    n_bt = triton.cdiv(B, cfg.bb)
    h = W.new_empty((I, B, M))
    dh = W.new_empty((I, B, M))
    gx = W.new_empty((I, sp.cap))
    part = torch_empty((I, n_bt), dev)
    opts = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    _rows_kernel[(n_bt, I)](W, b, group, c, sp.row_ptr, sp.csr_i, sp.csr_v, h, dh, gx,
                            part, n, M, B, sp.cap, n_bt, BB=cfg.bb, BN=cfg.bn, BM=bm,
                            PREC=prec, INTERP=interp, **opts)
    dW = torch_empty(W.shape, dev)
    db = torch_empty(b.shape, dev)
    _cols_kernel[(triton.cdiv(n, cfg.bn), I)](
        W, b, group, c, sp.col_ptr, sp.csc_perm, sp.csr_s, sp.csr_i, sp.csr_v, h, dh, gx, dW,
        db, n, M, B, sp.cap, BB=cfg.bb, BN=cfg.bn, BM=bm, BK=cfg.bk, PREC=prec,
        INTERP=interp, **opts)
    return part, dW, db


def torch_empty(shape, dev) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32, device=dev)
