import triton
import triton.language as tl
from superkern.triton._toy_common import _mm

@triton.jit
def v0(W_ptr, b_ptr, group_ptr, c_ptr, row_ptr_ptr, csr_i_ptr, csr_v_ptr,
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
    for k in range(0, 0):
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
        ye = tl.maximum(ze, 0.0)
        lsp += tl.where(ok, (ye - v) * (ye - v) - ye * ye, 0.0)
        tl.store(gx_ptr + inst * cap + e, tl.where(ze > 0.0, -c * v, 0.0), mask=ok)
    # Dense sweep: z = h W_t^T + b_t, y, dh += y W_t.
    dh = tl.zeros([BB, BM], dtype=tl.float32)
    ysq = tl.zeros([BB], dtype=tl.float32)
    for f0 in range(0, n, BN):
        offs_n = f0 + tl.arange(0, BN)
        n_ok = offs_n < n
        Wt = tl.load(Wb + (offs_n[:, None] * M + offs_m[None, :]),
                     mask=n_ok[:, None] & m_ok[None, :], other=0.0)
        bias = tl.load(bb + offs_n, mask=n_ok, other=0.0)
        z = _mm(tl.zeros([BB, BN], dtype=tl.float32), h, tl.trans(Wt), PREC, INTERP)
        z += bias[None, :]
        y = tl.where(b_ok[:, None] & n_ok[None, :], tl.maximum(z, 0.0), 0.0)
        ysq += tl.sum(y * y, axis=1)
        dh = _mm(dh, y, Wt, PREC, INTERP)
    dh = dh * c
    # gx was written by this program's own threads; the barrier makes it visible to all.
    tl.debug_barrier()
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
def v1(W_ptr, b_ptr, group_ptr, c_ptr, row_ptr_ptr, csr_i_ptr, csr_v_ptr,
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
    for k in range(0, 0):
        e = rp + k
        ok = (k < cnt) & (e < cap)
        fi = tl.load(csr_i_ptr + ent + e, mask=ok, other=0)
        v = tl.load(csr_v_ptr + ent + e, mask=ok, other=0.0)
        w = tl.load(Wb + (fi[:, None] * M + offs_m[None, :]),
                    mask=ok[:, None] & m_ok[None, :], other=0.0)
        ze = tl.sum(h * w, axis=1) + tl.load(bb + fi, mask=ok, other=0.0)
        ye = tl.maximum(ze, 0.0)
        lsp += tl.where(ok, (ye - v) * (ye - v) - ye * ye, 0.0)
        tl.store(gx_ptr + inst * cap + e, tl.where(ze > 0.0, -c * v, 0.0), mask=ok)
    # Dense sweep: z = h W_t^T + b_t, y, dh += y W_t.
    dh = tl.zeros([BB, BM], dtype=tl.float32)
    ysq = tl.zeros([BB], dtype=tl.float32)
    for f0 in range(0, n, BN):
        offs_n = f0 + tl.arange(0, BN)
        n_ok = offs_n < n
        Wt = tl.load(Wb + (offs_n[:, None] * M + offs_m[None, :]),
                     mask=n_ok[:, None] & m_ok[None, :], other=0.0)
        bias = tl.load(bb + offs_n, mask=n_ok, other=0.0)
        z = _mm(tl.zeros([BB, BN], dtype=tl.float32), h, tl.trans(Wt), PREC, INTERP)
        z += bias[None, :]
        y = tl.where(b_ok[:, None] & n_ok[None, :], tl.maximum(z, 0.0), 0.0)
        ysq += tl.sum(y * y, axis=1)
        dh = _mm(dh, y, Wt, PREC, INTERP)
    dh = dh * c
    # gx was written by this program's own threads; the barrier makes it visible to all.
    tl.debug_barrier()
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
def v2(W_ptr, b_ptr, group_ptr, c_ptr, row_ptr_ptr, csr_i_ptr, csr_v_ptr,
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
        ye = tl.maximum(ze, 0.0)
        lsp += tl.where(ok, (ye - v) * (ye - v) - ye * ye, 0.0)
        tl.store(gx_ptr + inst * cap + e, tl.where(ze > 0.0, -c * v, 0.0), mask=ok)
    # Dense sweep: z = h W_t^T + b_t, y, dh += y W_t.
    dh = tl.zeros([BB, BM], dtype=tl.float32)
    ysq = tl.zeros([BB], dtype=tl.float32)
    for f0 in range(0, 0):
        offs_n = f0 + tl.arange(0, BN)
        n_ok = offs_n < n
        Wt = tl.load(Wb + (offs_n[:, None] * M + offs_m[None, :]),
                     mask=n_ok[:, None] & m_ok[None, :], other=0.0)
        bias = tl.load(bb + offs_n, mask=n_ok, other=0.0)
        z = _mm(tl.zeros([BB, BN], dtype=tl.float32), h, tl.trans(Wt), PREC, INTERP)
        z += bias[None, :]
        y = tl.where(b_ok[:, None] & n_ok[None, :], tl.maximum(z, 0.0), 0.0)
        ysq += tl.sum(y * y, axis=1)
        dh = _mm(dh, y, Wt, PREC, INTERP)
    dh = dh * c
    # gx was written by this program's own threads; the barrier makes it visible to all.
    tl.debug_barrier()
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
def v3(W_ptr, b_ptr, group_ptr, c_ptr, row_ptr_ptr, csr_i_ptr, csr_v_ptr,
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
        ye = tl.maximum(ze, 0.0)
        lsp += tl.where(ok, (ye - v) * (ye - v) - ye * ye, 0.0)
        tl.store(gx_ptr + inst * cap + e, tl.where(ze > 0.0, -c * v, 0.0), mask=ok)
    # Dense sweep: z = h W_t^T + b_t, y, dh += y W_t.
    dh = tl.zeros([BB, BM], dtype=tl.float32)
    ysq = tl.zeros([BB], dtype=tl.float32)
    for f0 in range(0, n, BN):
        offs_n = f0 + tl.arange(0, BN)
        n_ok = offs_n < n
        Wt = tl.load(Wb + (offs_n[:, None] * M + offs_m[None, :]),
                     mask=n_ok[:, None] & m_ok[None, :], other=0.0)
        bias = tl.load(bb + offs_n, mask=n_ok, other=0.0)
        z = _mm(tl.zeros([BB, BN], dtype=tl.float32), h, tl.trans(Wt), PREC, INTERP)
        z += bias[None, :]
        y = tl.where(b_ok[:, None] & n_ok[None, :], tl.maximum(z, 0.0), 0.0)
        ysq += tl.sum(y * y, axis=1)
        dh = _mm(dh, y, Wt, PREC, INTERP)
    dh = dh * c
    # gx was written by this program's own threads; the barrier makes it visible to all.
    tl.debug_barrier()
    for k in range(0, 0):
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



