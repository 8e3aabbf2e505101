"""The fused Triton kernel of the overlap engine: triangular Gram tiles + reduction epilogue.

One persistent program walks a static list of upper-triangle tiles (bi <= bj; with RECT, the
cross tiles of two row parts, for block-pair streaming) and, per tile,
computes C = diag(s_a) X_a X_b^T diag(s_b) with an fp32 accumulator, then reduces it in
registers: sums of c, |c|, c^2; a histogram of c; per-row max |c| with argmax and per-row
sum of c^2 for the tile's rows AND columns (symmetry); optionally the top-k candidates.
Nothing N x N is ever written. Every cross-program merge is order independent (integer
atomics) or written per program and reduced on the host in a fixed order, so one input gives
one result, bit for bit, on a given GPU model and config. The fp64 sums depend on which tiles
each program walked, that is on the program count (the SM count), so they may differ in the
last bits between, say, an H100 SXM and PCIe; the histogram, row statistics and top-k do not.

Works on triton 3.6 to 3.9 and in the interpreter: no make_block_ptr/advance, nothing added
after 3.6; tensor descriptors only behind the USE_TMA constexpr.
"""
from __future__ import annotations

import triton
import triton.language as tl

# Packed per-row key: (fp32 bits of max |c|) << 32 | (ARG_BASE - j). Non-negative floats
# order like their bits, and a larger low word means a smaller j, so one int64 atomic_max
# keeps the max with ties going to the smallest j, whatever order programs arrive in.
ARG_BASE = 2147483647
_ARG_BASE = tl.constexpr(ARG_BASE)  # kernels may only read constexpr globals


@triton.jit
def _decode_in_band(l, r0, R, GROUP: tl.constexpr):
    """Tile (bi, bj) of local index l inside the band of block-rows [r0, r0 + R).

    Order inside a band: first its diagonal triangle column by column (column c holds rows
    r0..r0+c), then the rectangle to its right column by column (R tiles per column). Tiles
    with consecutive ids therefore share a few block-rows and nearby block-columns, which is
    what keeps the operands of concurrently running programs in L2.
    """
    tri = R * (R + 1) // 2
    # Column of the triangle: the number of q in [1, GROUP) with q (q + 1) / 2 <= l.
    c = l * 0
    for q in tl.static_range(1, GROUP):
        c += (l >= q * (q + 1) // 2).to(l.dtype)
    in_tri = l < tri
    l2 = tl.maximum(l - tri, 0)
    bj = tl.where(in_tri, r0 + c, r0 + R + l2 // R)
    bi = tl.where(in_tri, r0 + (l - c * (c + 1) // 2), r0 + l2 % R)
    return bi, bj


@triton.jit
def _gram_tile(x_ptr, x_desc, rows, cols, r0, c0, M, stride_x,
               BM: tl.constexpr, BK: tl.constexpr, EVEN_K: tl.constexpr,
               USE_TMA: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """fp32 (BM, BM) tile X[rows] @ X[cols]^T (rows/cols already wrapped into [0, N))."""
    acc = tl.zeros((BM, BM), dtype=tl.float32)
    if USE_TMA:
        # Out-of-range rows and columns of the descriptor read as zeros.
        for k in range(0, M, BK):
            a = x_desc.load([r0, k])
            b = x_desc.load([c0, k])
            acc = tl.dot(a, b.T, acc, input_precision=INPUT_PRECISION)
    else:
        offs_k = tl.arange(0, BK)
        # int64 row offsets: N * m passes 2^31 for real heads.
        a_ptrs = x_ptr + rows.to(tl.int64)[:, None] * stride_x + offs_k[None, :]
        b_ptrs = x_ptr + cols.to(tl.int64)[None, :] * stride_x + offs_k[:, None]
        for k in range(0, M, BK):
            if EVEN_K:
                a = tl.load(a_ptrs)
                b = tl.load(b_ptrs)
            else:
                a = tl.load(a_ptrs, mask=offs_k[None, :] < M - k, other=0.0)
                b = tl.load(b_ptrs, mask=offs_k[:, None] < M - k, other=0.0)
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
            a_ptrs += BK
            b_ptrs += BK
    return acc


@triton.jit
def _bin_of(c, half_bins, n_bins):
    """Histogram bin of c: clamp(floor((c + 1) * bins / 2), 0, bins - 1) in fp32.

    Truncation equals floor here: a negative (c + 1) * bins / 2 is clamped to 0 either way.
    """
    idx = ((c + 1.0) * half_bins).to(tl.int32)
    return tl.minimum(tl.maximum(idx, 0), n_bins - 1)


@triton.jit
def _hist_window(hist_row_ptr, idx, valid, lo, n_invalid, NEL: tl.constexpr,
                 n_bins, W: tl.constexpr):
    """Histogram of bins lo .. lo + W - 1 added to this program's private row (int64 atomics).

    Masked elements are sent to the first bin and subtracted again (tl.histogram's mask
    argument is not relied on). The caller guarantees every valid idx lies in the window.
    """
    offs_w = tl.arange(0, W)
    w = tl.minimum(tl.maximum(tl.where(valid, idx - lo, 0), 0), W - 1)
    h = tl.histogram(tl.reshape(w, [NEL], can_reorder=True), W)
    h = h - tl.where(offs_w == 0, n_invalid, 0)
    tl.atomic_add(hist_row_ptr + lo + offs_w, h.to(tl.int64),
                  mask=(h != 0) & (lo + offs_w < n_bins), sem="relaxed")


@triton.jit
def _hist_tile(hist_row_ptr, c, valid, cmin, cmax, n_invalid, NEL: tl.constexpr,
               n_bins, HBINS: tl.constexpr, half_bins,
               WIN: tl.constexpr, WIN2: tl.constexpr, FULL_FROM: tl.constexpr):
    """Add the tile part's histogram of c to this program's private row.

    The ballot-based tl.histogram costs ~ log2(bins) + bins / 32 instructions per element
    per thread, the largest epilogue cost at small m. Overlaps of one tile usually span few
    bins (|c| ~ 1/sqrt(m)), so when the tile's [min c, max c] fits a window of WIN (or WIN2)
    bins only that window is counted; otherwise all HBINS bins (n_bins rounded up to a power
    of two >= 32, Triton shapes being powers of two; the extra bins stay empty). WIN / WIN2
    are 0 when disabled; FULL_FROM = max(WIN, WIN2).
    """
    idx = _bin_of(c, half_bins, n_bins)
    # The bin function is monotone, so valid elements lie in [bin(cmin), bin(cmax)]; one bin
    # of slack each side absorbs a fused multiply-add rounding c + 1 once instead of twice.
    lo = tl.maximum(_bin_of(cmin, half_bins, n_bins) - 1, 0)
    span = _bin_of(cmax, half_bins, n_bins) + 1 - lo
    if WIN > 0:
        if span < WIN:
            _hist_window(hist_row_ptr, idx, valid, lo, n_invalid, NEL, n_bins, WIN)
    if WIN2 > 0:
        if (span >= WIN) & (span < WIN2):
            _hist_window(hist_row_ptr, idx, valid, lo, n_invalid, NEL, n_bins, WIN2)
    if span >= FULL_FROM:
        _hist_window(hist_row_ptr, idx, valid, 0, n_invalid, NEL, n_bins, HBINS)


@triton.jit
def _row_key(vmax, arg):
    return (vmax.to(tl.int32, bitcast=True).to(tl.int64) << 32) + (_ARG_BASE - arg.to(tl.int64))


@triton.jit
def _epilogue_part(acc, si, rows, cp0, r0, diag, N, scale_ptr, hist_row_ptr, row_key_ptr,
                   row_sq_ptr, cand_cnt_ptr, cand_val_ptr, cand_i_ptr, cand_j_ptr, cand_cap,
                   thr_val, thr_i, thr_j,
                   BM: tl.constexpr, BP: tl.constexpr, n_bins, HBINS: tl.constexpr,
                   half_bins, WIN: tl.constexpr, WIN2: tl.constexpr,
                   FULL_FROM: tl.constexpr, HAS_HIST: tl.constexpr, HAS_TOPK: tl.constexpr,
                   SQ_SCALE: tl.constexpr):
    """Reduce a (BM, BP) column part of a tile: columns cp0 .. cp0 + BP.

    Column statistics are final for this part and go out by atomics here; row statistics
    are returned for the caller to merge across parts: (sum c, sum |c|, sum c^2, max |c|,
    argmax j) per row.
    """
    cols = cp0 + tl.arange(0, BP)
    sj = tl.load(scale_ptr + cols, mask=cols < N, other=0.0)
    valid = (rows[:, None] < cols[None, :]) & (cols[None, :] < N)
    c = tl.where(valid, acc * si[:, None] * sj[None, :], 0.0)
    a = tl.where(valid, tl.abs(c), -1.0)  # -1: never a row max
    c2 = c * c
    r_c = tl.sum(c, axis=1)
    r_a = tl.sum(tl.abs(c), axis=1)
    r_q = tl.sum(c2, axis=1)

    # Column sums of c^2 as fixed-point int64: integer atomics are associative, so the
    # result does not depend on the order programs add in.
    q_q = tl.sum(c2, axis=0)
    tl.atomic_add(row_sq_ptr + cols, (q_q.to(tl.float64) * SQ_SCALE + 0.5).to(tl.int64),
                  mask=cols < N, sem="relaxed")
    # Max |c| and argmax (ties to the smallest index) of rows and columns.
    r_max, r_arg = tl.max(a, axis=1, return_indices=True, return_indices_tie_break_left=True)
    q_max, q_arg = tl.max(a, axis=0, return_indices=True, return_indices_tie_break_left=True)
    tl.atomic_max(row_key_ptr + cols, _row_key(q_max, r0 + q_arg), mask=q_max >= 0.0,
                  sem="relaxed")
    amax = tl.max(r_max, axis=0)

    # Top-k before the histogram: |c| is dead by then (register pressure).
    if HAS_TOPK:
        if amax >= thr_val:
            ii = rows[:, None]
            jj = cols[None, :]
            cand = valid & ((a > thr_val) | ((a == thr_val) & (
                (ii < thr_i) | ((ii == thr_i) & (jj <= thr_j)))))
            pos = tl.atomic_add(cand_cnt_ptr + tl.zeros((BM, BP), dtype=tl.int32),
                                tl.full((BM, BP), 1, dtype=tl.int64), mask=cand, sem="relaxed")
            keep = cand & (pos < cand_cap)
            tl.store(cand_val_ptr + pos, c, mask=keep)
            tl.store(cand_i_ptr + pos, ii + 0 * jj, mask=keep)
            tl.store(cand_j_ptr + pos, jj + 0 * ii, mask=keep)

    if HAS_HIST:
        # Valid pairs of this part, counted analytically: a full rectangle off the diagonal
        # (rows are < N there); on it, column cp0 + x holds the rows r0 .. cp0 + x - 1.
        vc = tl.maximum(tl.minimum(N - cp0, BP), 0)
        n_valid = tl.where(diag, vc * (cp0 - r0) + vc * (vc - 1) // 2, BM * vc)
        # Masked elements hold c = 0: at worst they widen the window, never break it.
        cmin = tl.min(tl.min(c, axis=1), axis=0)
        cmax = tl.max(tl.max(c, axis=1), axis=0)
        _hist_tile(hist_row_ptr, c, valid, cmin, cmax, BM * BP - n_valid, BM * BP,
                   n_bins, HBINS, half_bins, WIN, WIN2, FULL_FROM)
    return r_c, r_a, r_q, r_max, cp0 + r_arg


# Triton turns an integer argument equal to 1 into a compile-time constant, and a plain int has
# no .to(): the tile counts (1 for a head of <= 128 rows, or a 128-row first part in split
# mode) are never specialised. Nor are the arguments that only enter comparisons and change
# from call to call (row count, top-k threshold indices and capacity, bin count): Triton would
# otherwise compile up to three variants per argument (equal to 1, divisible by 16, other).
_NO_SPECIALIZE = ["NB", "NUM_TILES", "NBA", "N", "thr_i", "thr_j", "cand_cap", "n_bins"]


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _overlap_kernel(
    x_ptr, x_desc, scale_ptr, N, M, stride_x,
    part_sums_ptr,          # (G, 3) fp64: sum c, sum |c|, sum c^2 of this program's tiles
    part_hist_ptr,          # (G, HBINS) int64 private histograms (dummy when n_bins == 0)
    row_key_ptr,            # (N,) int64 packed (max |c| bits, ARG_BASE - argmax j)
    row_sq_ptr,             # (N,) int64 row sums of c^2 in fixed point (x SQ_SCALE)
    cand_cnt_ptr,           # (1,) int64 number of top-k candidates seen (may exceed cap)
    cand_val_ptr, cand_i_ptr, cand_j_ptr, cand_cap,
    thr_val, thr_i, thr_j,  # candidate iff (|c|, i, j) ranks at or before this triple
    NB, NUM_TILES,
    NBA,                    # RECT: block-rows of the first part (rows < NBA * BM = split)
    n_bins, half_bins,      # histogram bins and bins / 2 (fp32, the bin rule's factor)
    BM: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr, EVEN_K: tl.constexpr,
    RECT: tl.constexpr,     # cross pairs only: tiles (bi < NBA, bj >= NBA) instead of bi <= bj
    SPLIT: tl.constexpr,
    HBINS: tl.constexpr, WIN: tl.constexpr,
    WIN2: tl.constexpr, FULL_FROM: tl.constexpr, HAS_HIST: tl.constexpr, HAS_TOPK: tl.constexpr,
    USE_TMA: tl.constexpr, INPUT_PRECISION: tl.constexpr, SQ_SCALE: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    G = tl.num_programs(0).to(tl.int64)
    offs = tl.arange(0, BM)
    nb = NB.to(tl.int64)
    num_tiles = NUM_TILES.to(tl.int64)
    n_mine = (num_tiles - pid + G - 1) // G
    hist_row_ptr = part_hist_ptr + pid * HBINS

    nba = NBA.to(tl.int64)
    # Band walker state (block-row bands of GROUP rows); t only grows, so bands only advance.
    # Triangular: a band holds its diagonal triangle, then the rectangle to its right. RECT:
    # bands of the first part's block-rows, each against all nb - nba block-columns.
    band_r0 = nb * 0
    band_start = nb * 0
    if RECT:
        band_R = tl.minimum(nba, GROUP)
        band_end = band_R * (nb - nba)
    else:
        band_R = tl.minimum(nb, GROUP)
        band_end = band_R * (band_R + 1) // 2 + band_R * (nb - band_R)

    s_c = tl.zeros((BM,), dtype=tl.float64)
    s_a = tl.zeros((BM,), dtype=tl.float64)
    s_q = tl.zeros((BM,), dtype=tl.float64)
    for it in range(0, n_mine):
        t = pid + it * G
        while t >= band_end:
            band_start = band_end
            band_r0 += GROUP
            if RECT:
                band_R = tl.minimum(nba - band_r0, GROUP)
                band_end = band_start + band_R * (nb - nba)
            else:
                band_R = tl.minimum(nb - band_r0, GROUP)
                band_end = (band_start + band_R * (band_R + 1) // 2
                            + band_R * (nb - band_r0 - band_R))
        if RECT:
            # Column by column inside the band, rows inner (as the triangular rectangle part).
            bi = band_r0 + (t - band_start) % band_R
            bj = nba + (t - band_start) // band_R
        else:
            bi, bj = _decode_in_band(t - band_start, band_r0, band_R, GROUP)
        r0 = (bi * BM).to(tl.int32)
        c0 = (bj * BM).to(tl.int32)
        diag = bi == bj
        rows = r0 + offs
        cols = c0 + offs

        acc = _gram_tile(x_ptr, x_desc, rows % N, cols % N, r0, c0, M, stride_x,
                         BM, BK, EVEN_K, USE_TMA, INPUT_PRECISION)
        si = tl.load(scale_ptr + rows, mask=rows < N, other=0.0)
        if SPLIT == 1:
            r_c, r_a, r_q, r_max, r_arg = _epilogue_part(
                acc, si, rows, c0, r0, diag, N, scale_ptr, hist_row_ptr, row_key_ptr,
                row_sq_ptr, cand_cnt_ptr, cand_val_ptr, cand_i_ptr, cand_j_ptr, cand_cap,
                thr_val, thr_i, thr_j, BM, BM, n_bins, HBINS, half_bins, WIN, WIN2, FULL_FROM,
                HAS_HIST, HAS_TOPK, SQ_SCALE)
        else:
            # Epilogue on two column halves (a register-layout view, no data movement):
            # half the live temporaries, so no spills at 128 x 128.
            halves = tl.permute(tl.reshape(acc, (BM, 2, BM // 2)), (0, 2, 1))
            acc0, acc1 = tl.split(halves)
            r_c, r_a, r_q, r_max, r_arg = _epilogue_part(
                acc0, si, rows, c0, r0, diag, N, scale_ptr, hist_row_ptr, row_key_ptr,
                row_sq_ptr, cand_cnt_ptr, cand_val_ptr, cand_i_ptr, cand_j_ptr, cand_cap,
                thr_val, thr_i, thr_j, BM, BM // 2, n_bins, HBINS, half_bins, WIN, WIN2, FULL_FROM,
                HAS_HIST, HAS_TOPK, SQ_SCALE)
            h_c, h_a, h_q, h_max, h_arg = _epilogue_part(
                acc1, si, rows, c0 + BM // 2, r0, diag, N, scale_ptr, hist_row_ptr,
                row_key_ptr, row_sq_ptr, cand_cnt_ptr, cand_val_ptr, cand_i_ptr, cand_j_ptr,
                cand_cap, thr_val, thr_i, thr_j, BM, BM // 2, n_bins, HBINS, half_bins, WIN, WIN2,
                FULL_FROM, HAS_HIST, HAS_TOPK, SQ_SCALE)
            r_c += h_c
            r_a += h_a
            r_q += h_q
            take = h_max > r_max  # ties keep the first half: the smaller j
            r_arg = tl.where(take, h_arg, r_arg)
            r_max = tl.where(take, h_max, r_max)

        # Row statistics: fp32 within the tile row, fp64 across tiles; rows' fixed-point
        # sums of c^2 and packed max keys merge by integer atomics (order independent).
        s_c += r_c.to(tl.float64)
        s_a += r_a.to(tl.float64)
        s_q += r_q.to(tl.float64)
        tl.atomic_add(row_sq_ptr + rows, (r_q.to(tl.float64) * SQ_SCALE + 0.5).to(tl.int64),
                      mask=rows < N, sem="relaxed")
        tl.atomic_max(row_key_ptr + rows, _row_key(r_max, r_arg), mask=r_max >= 0.0,
                      sem="relaxed")

    base = part_sums_ptr + pid * 3
    tl.store(base + 0, tl.sum(s_c, axis=0))
    tl.store(base + 1, tl.sum(s_a, axis=0))
    tl.store(base + 2, tl.sum(s_q, axis=0))
