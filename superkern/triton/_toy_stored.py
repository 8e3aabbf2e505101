"""Loss and gradients of the toy model for wide models (padded width > ``fused_max``).

Same math and entry lists as ``_toy_fused`` (see its docstring), but a (B, width) tile no
longer fits in registers, so z cannot be recomputed cheaply per width chunk. Instead
y = ReLU(h W^T + b) is stored once, (I, B, n) fp32, and the rest are three GEMMs with
width-chunked tiles, each with its sparse (entry) term fused in:

    _h_kernel      (batch tile, width chunk):  h = gathered W rows
    _z_kernel      (feature tile, batch tile): y, sum y^2 partials         K = M
    _entry_kernel  (batch tile):               z_e, gx_e, loss partials
    _dh_kernel     (batch tile, width chunk):  dh = c y W + sum_e gx_e W_i  K = n
    _dw_kernel     (feature tile, width chunk): dW = c y^T h + entries, db  K = B

Storing y costs 3 B n * 4 bytes of traffic per model-step against 6 B n M flops: at M >= 256
that is cheaper than recomputing z once per width chunk. Deterministic (no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from superkern.triton._toy_common import _dw_db_finish, _mm, relu


@triton.jit
def _h_kernel(W_ptr, group_ptr, row_ptr_ptr, csr_i_ptr, csr_v_ptr, h_ptr, n, M, B, cap,
              BB: tl.constexpr, BMC: tl.constexpr):
    bt = tl.program_id(0)
    mc = tl.program_id(1)
    inst = tl.program_id(2).to(tl.int64)
    g = tl.load(group_ptr + inst).to(tl.int64)
    offs_b = bt * BB + tl.arange(0, BB)
    b_ok = offs_b < B
    offs_m = mc * BMC + tl.arange(0, BMC)
    m_ok = offs_m < M
    rp = tl.load(row_ptr_ptr + g * (B + 1) + offs_b, mask=b_ok, other=0)
    cnt = tl.load(row_ptr_ptr + g * (B + 1) + offs_b + 1, mask=b_ok, other=0) - rp
    ent = g * cap
    h = tl.zeros([BB, BMC], dtype=tl.float32)
    for k in range(0, tl.max(cnt, axis=0)):
        e = rp + k
        ok = (k < cnt) & (e < cap)
        fi = tl.load(csr_i_ptr + ent + e, mask=ok, other=0)
        v = tl.load(csr_v_ptr + ent + e, mask=ok, other=0.0)
        w = tl.load(W_ptr + inst * n * M + (fi[:, None] * M + offs_m[None, :]),
                    mask=ok[:, None] & m_ok[None, :], other=0.0)
        h += v[:, None] * w
    tl.store(h_ptr + inst * B * M + (offs_b[:, None] * M + offs_m[None, :]), h,
             mask=b_ok[:, None] & m_ok[None, :])


@triton.jit
def _z_kernel(W_ptr, b_ptr, h_ptr, y_ptr, ysq_ptr, n, M, B, n_ft,
              BB: tl.constexpr, BN: tl.constexpr, BMC: tl.constexpr, PREC: tl.constexpr,
              INTERP: tl.constexpr):
    ft = tl.program_id(0)
    bt = tl.program_id(1)
    inst = tl.program_id(2).to(tl.int64)
    offs_b = bt * BB + tl.arange(0, BB)
    b_ok = offs_b < B
    offs_n = ft * BN + tl.arange(0, BN)
    n_ok = offs_n < n
    z = tl.zeros([BB, BN], dtype=tl.float32)
    for m0 in range(0, M, BMC):
        offs_m = m0 + tl.arange(0, BMC)
        m_ok = offs_m < M
        h = tl.load(h_ptr + inst * B * M + (offs_b[:, None] * M + offs_m[None, :]),
                    mask=b_ok[:, None] & m_ok[None, :], other=0.0)
        Wt = tl.load(W_ptr + inst * n * M + (offs_n[:, None] * M + offs_m[None, :]),
                     mask=n_ok[:, None] & m_ok[None, :], other=0.0)
        z = _mm(z, h, tl.trans(Wt), PREC, INTERP, False, False)
    z += tl.load(b_ptr + inst * n + offs_n, mask=n_ok, other=0.0)[None, :]
    ok = b_ok[:, None] & n_ok[None, :]
    y = tl.where(ok, relu(z), 0.0)
    tl.store(y_ptr + inst * B * n + (offs_b[:, None] * n + offs_n[None, :]), y,
             mask=ok)
    tl.store(ysq_ptr + (inst * tl.num_programs(1) + bt) * n_ft + ft, tl.sum(tl.sum(y * y, 1), 0))


@triton.jit
def _entry_kernel(W_ptr, b_ptr, group_ptr, c_ptr, row_ptr_ptr, csr_i_ptr, csr_v_ptr, h_ptr,
                  gx_ptr, lsp_ptr, n, M, B, cap, n_bt, BB: tl.constexpr, BMC: tl.constexpr):
    bt = tl.program_id(0)
    inst = tl.program_id(1).to(tl.int64)
    g = tl.load(group_ptr + inst).to(tl.int64)
    c = tl.load(c_ptr + inst)
    offs_b = bt * BB + tl.arange(0, BB)
    b_ok = offs_b < B
    rp = tl.load(row_ptr_ptr + g * (B + 1) + offs_b, mask=b_ok, other=0)
    cnt = tl.load(row_ptr_ptr + g * (B + 1) + offs_b + 1, mask=b_ok, other=0) - rp
    ent = g * cap
    lsp = tl.zeros([BB], dtype=tl.float32)
    for k in range(0, tl.max(cnt, axis=0)):
        e = rp + k
        ok = (k < cnt) & (e < cap)
        fi = tl.load(csr_i_ptr + ent + e, mask=ok, other=0)
        v = tl.load(csr_v_ptr + ent + e, mask=ok, other=0.0)
        ze = tl.load(b_ptr + inst * n + fi, mask=ok, other=0.0)
        for m0 in range(0, M, BMC):
            offs_m = m0 + tl.arange(0, BMC)
            mk = ok[:, None] & (offs_m < M)[None, :]
            h = tl.load(h_ptr + inst * B * M + (offs_b[:, None] * M + offs_m[None, :]),
                        mask=mk, other=0.0)
            w = tl.load(W_ptr + inst * n * M + (fi[:, None] * M + offs_m[None, :]),
                        mask=mk, other=0.0)
            ze += tl.sum(h * w, axis=1)
        ye = relu(ze)
        tl.store(gx_ptr + inst * cap + e, tl.where(ze > 0.0, -c * v, 0.0), mask=ok)
        lsp += tl.where(ok, (ye - v) * (ye - v) - ye * ye, 0.0)
    tl.store(lsp_ptr + inst * n_bt + bt, tl.sum(lsp, axis=0))


@triton.jit
def _dh_kernel(W_ptr, group_ptr, c_ptr, row_ptr_ptr, csr_i_ptr, y_ptr, gx_ptr, dh_ptr, n, M,
               B, cap, BB: tl.constexpr, BN: tl.constexpr, BMC: tl.constexpr,
               PREC: tl.constexpr, INTERP: tl.constexpr):
    bt = tl.program_id(0)
    mc = tl.program_id(1)
    inst = tl.program_id(2).to(tl.int64)
    g = tl.load(group_ptr + inst).to(tl.int64)
    c = tl.load(c_ptr + inst)
    offs_b = bt * BB + tl.arange(0, BB)
    b_ok = offs_b < B
    offs_m = mc * BMC + tl.arange(0, BMC)
    m_ok = offs_m < M
    Wb = W_ptr + inst * n * M
    acc = tl.zeros([BB, BMC], dtype=tl.float32)
    for f0 in range(0, n, BN):
        offs_n = f0 + tl.arange(0, BN)
        n_ok = offs_n < n
        y = tl.load(y_ptr + inst * B * n + (offs_b[:, None] * n + offs_n[None, :]),
                    mask=b_ok[:, None] & n_ok[None, :], other=0.0)
        Wt = tl.load(Wb + (offs_n[:, None] * M + offs_m[None, :]),
                     mask=n_ok[:, None] & m_ok[None, :], other=0.0)
        acc = _mm(acc, y, Wt, PREC, INTERP, False, False)
    acc = acc * c
    rp = tl.load(row_ptr_ptr + g * (B + 1) + offs_b, mask=b_ok, other=0)
    cnt = tl.load(row_ptr_ptr + g * (B + 1) + offs_b + 1, mask=b_ok, other=0) - rp
    for k in range(0, tl.max(cnt, axis=0)):
        e = rp + k
        ok = (k < cnt) & (e < cap)
        fi = tl.load(csr_i_ptr + g * cap + e, mask=ok, other=0)
        gx = tl.load(gx_ptr + inst * cap + e, mask=ok, other=0.0)
        w = tl.load(Wb + (fi[:, None] * M + offs_m[None, :]),
                    mask=ok[:, None] & m_ok[None, :], other=0.0)
        acc += gx[:, None] * w
    tl.store(dh_ptr + inst * B * M + (offs_b[:, None] * M + offs_m[None, :]), acc,
             mask=b_ok[:, None] & m_ok[None, :])


@triton.jit
def _dw_kernel(group_ptr, c_ptr, col_ptr_ptr, csc_perm_ptr, csr_s_ptr, csr_i_ptr, csr_v_ptr,
               y_ptr, h_ptr, dh_ptr, gx_ptr, dW_ptr, db_ptr, n, M, B, cap,
               BB: tl.constexpr, BN: tl.constexpr, BMC: tl.constexpr, BK: tl.constexpr,
               PREC: tl.constexpr, INTERP: tl.constexpr):
    ft = tl.program_id(0)
    mc = tl.program_id(1)
    inst = tl.program_id(2).to(tl.int64)
    g = tl.load(group_ptr + inst).to(tl.int64)
    c = tl.load(c_ptr + inst)
    f0 = ft * BN
    offs_n = f0 + tl.arange(0, BN)
    n_ok = offs_n < n
    offs_m = mc * BMC + tl.arange(0, BMC)
    m_ok = offs_m < M
    dW = tl.zeros([BN, BMC], dtype=tl.float32)
    db = tl.zeros([BN], dtype=tl.float32)
    for b0 in range(0, B, BB):
        offs_b = b0 + tl.arange(0, BB)
        b_ok = offs_b < B
        y = tl.load(y_ptr + inst * B * n + (offs_b[:, None] * n + offs_n[None, :]),
                    mask=b_ok[:, None] & n_ok[None, :], other=0.0)
        h = tl.load(h_ptr + inst * B * M + (offs_b[:, None] * M + offs_m[None, :]),
                    mask=b_ok[:, None] & m_ok[None, :], other=0.0)
        dW = _mm(dW, tl.trans(y), h, PREC, INTERP, False, False)
        db += tl.sum(y, axis=0)
    # db is the same for every width chunk: only chunk 0 stores it.
    _dw_db_finish(dW, db, c, g, inst, f0, offs_n, n_ok, offs_m, m_ok, n_ok & (mc == 0), n, M,
                  B, cap, col_ptr_ptr, csc_perm_ptr, csr_s_ptr, csr_i_ptr, csr_v_ptr, gx_ptr,
                  h_ptr, dh_ptr, dW_ptr, db_ptr, BN, BK, PREC, INTERP)


# Elements of the stored y (fp32) per launch: models beyond it run in further launches
# (2 GiB: at n = 10240, B = 2048, 25 models; the small grid's 1000 x 2048 fits 262 at once).
Y_ELEMS = 1 << 29


def stored_loss_grad(W, b, group, c, sp, B, cfg, prec, interp):
    """Launch the five kernels per chunk of models (y, the only (B, n) buffer, bounded by
    ``Y_ELEMS``); returns (loss partials (I, k), dW, db)."""
    I, n, M = W.shape
    dW = torch.empty(W.shape, dtype=torch.float32, device=W.device)
    db = torch.empty(b.shape, dtype=torch.float32, device=W.device)
    step = max(1, Y_ELEMS // max(1, B * n))
    parts = [_stored_chunk(W[s:s + step], b[s:s + step], group[s:s + step], c[s:s + step], sp,
                           B, cfg, prec, interp, dW[s:s + step], db[s:s + step])
             for s in range(0, I, step)]
    return torch.cat(parts), dW, db


def _stored_chunk(W, b, group, c, sp, B, cfg, prec, interp, dW, db):
    """The five launches for the models of W (I, n, M); writes dW, db; returns the partials."""
    I, n, M = W.shape
    dev = W.device
    f32 = {"dtype": torch.float32, "device": dev}
    bmc = min(cfg.bmc, max(16, 1 << (M - 1).bit_length()))
    n_bt, n_ft, n_mc = triton.cdiv(B, cfg.bb), triton.cdiv(n, cfg.bn), triton.cdiv(M, bmc)
    opts = {"num_warps": cfg.stored_warps, "num_stages": cfg.num_stages}
    h = torch.empty((I, B, M), **f32)
    dh = torch.empty((I, B, M), **f32)
    y = torch.empty((I, B, n), **f32)
    gx = torch.empty((I, sp.cap), **f32)
    ysq = torch.empty((I, n_bt, n_ft), **f32)
    lsp = torch.empty((I, n_bt), **f32)
    _h_kernel[(n_bt, n_mc, I)](W, group, sp.row_ptr, sp.csr_i, sp.csr_v, h, n, M, B, sp.cap,
                               BB=cfg.bb, BMC=bmc, **opts)
    _z_kernel[(n_ft, n_bt, I)](W, b, h, y, ysq, n, M, B, n_ft, BB=cfg.bb, BN=cfg.bn, BMC=bmc,
                               PREC=prec, INTERP=interp, **opts)
    _entry_kernel[(n_bt, I)](W, b, group, c, sp.row_ptr, sp.csr_i, sp.csr_v, h, gx, lsp, n, M,
                             B, sp.cap, n_bt, BB=cfg.bb, BMC=bmc, **opts)
    _dh_kernel[(n_bt, n_mc, I)](W, group, c, sp.row_ptr, sp.csr_i, y, gx, dh, n, M, B, sp.cap,
                                BB=cfg.bb, BN=cfg.bn, BMC=bmc, PREC=prec, INTERP=interp,
                                **opts)
    _dw_kernel[(n_ft, n_mc, I)](group, c, sp.col_ptr, sp.csc_perm, sp.csr_s, sp.csr_i,
                                sp.csr_v, y, h, dh, gx, dW, db, n, M, B, sp.cap, BB=cfg.bb,
                                BN=cfg.bn, BMC=bmc, BK=cfg.bk, PREC=prec, INTERP=interp,
                                **opts)
    return torch.cat([ysq.reshape(I, -1), lsp], dim=1)
