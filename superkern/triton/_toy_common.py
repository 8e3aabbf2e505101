"""Shared pieces of the toy-model kernels: block sizes (one helper), the Philox data stream,
the precision-dispatching tile product, and the common end of the fused and stored dW/db
kernels (scale, sparse entry term in CSC chunks, store).

The data stream. x[g, s, i] = u * v with u = 1[r1 < p[g, i]] and v = 2 * r2, where (r1, r2) are
the first two 32-bit outputs of Philox-4x32-10 keyed by seeds[g] (all 64 bits) at the counter
(i, s, step, 0), turned into floats in [0, 1) by ``tl.uint_to_uniform_float``. Every
(step, sample, feature) owns its own counter, so any sizes below 2^32 are safe and any
kernel that knows (p, seed, step) can regenerate any block of x exactly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from superkern.triton._env import parse_overrides, triton_version

ENV_CONFIG = "SUPERKERN_TRITON_TOY"
_TRITON_VERSION = triton_version()
# precision name -> tl.dot input_precision ("bf16" casts the operands instead).
PRECISIONS = {"fp32": "ieee", "tf32": "tf32", "tf32x3": "tf32x3", "bf16": "bf16"}


@dataclass(frozen=True)
class ToyTritonConfig:
    """Launch parameters of the toy kernels (GPU defaults; see :func:`toy_config`).

    bb, bn: batch-tile and feature-tile sizes of the dense products. bk: entries per chunk of
    the sparse feature-major pass. bmc: width chunk of the stored path. bs, bf: sample and
    feature tiles of the data sampler. br: rows per program of the optimizer.
    fused_max: the largest padded width (power of two) that the fused path keeps in registers
    for tf32/bf16 products; above it the stored path runs (y stored as (I, B, n) fp32).
    fused_max_exact: the same for fp32 ("ieee") and tf32x3 products, whose tiles need far more
    registers (FMA operands, split hi/lo operands); 0 = always stored.
    num_warps: fused path; stored_warps: stored path, sampler_warps, adam_warps.
    """

    bb: int = 64
    bn: int = 64
    bk: int = 64
    bmc: int = 64
    bs: int = 32
    bf: int = 64
    br: int = 32
    fused_max: int = 128
    fused_max_exact: int = 0
    num_warps: int = 4
    stored_warps: int = 8
    sampler_warps: int = 4
    adam_warps: int = 8
    num_stages: int = 2

    def validate(self) -> None:
        for name in ("bb", "bn", "bk", "bmc", "bs", "bf", "br", "fused_max"):
            v = getattr(self, name)
            if v < 16 or v & (v - 1):
                raise ValueError(f"{name}={v} must be a power of two >= 16")
        if self.fused_max_exact & (self.fused_max_exact - 1):
            raise ValueError(f"fused_max_exact={self.fused_max_exact} must be 0 or a power of 2")


def next_pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def block_m(M: int) -> int:
    """Padded width of a register tile: a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, next_pow2(M))


def _env_overrides() -> dict:
    """``SUPERKERN_TRITON_TOY="bb=64,bn=32,num_warps=8"`` (tuning on the GPU, tests)."""
    return parse_overrides(ENV_CONFIG, ToyTritonConfig, ())


def toy_config(M: int, device: torch.device | str, precision: str = "tf32") -> ToyTritonConfig:
    """The one place block sizes come from (per device kind, padded width and precision).

    GPU (checked by compiling for sm_90 with Triton's ptxas: no register spills inside any
    product loop with triton 3.7.1, and 3 at width 128 in tf32 with 3.6.0, which takes
    sparse chunks of 32 entries; bench/test_bench_toy_triton.py repeats the check): 64 x 64
    tiles (a tl.dot M-dimension of 64 keeps Hopper's warpgroup MMA usable); the fused path
    with 4 warps up to width 32 and 8 warps above (it holds (64, width) tiles of h and dh);
    the stored path with 8 warps and width chunks of 64 (32 for tf32x3, whose split
    operands double the registers); sampler tiles of 32 x 64 Philox draws. Interpreter: the
    cost is per program and per loop trip, not per element, so 32-wide tiles keep the tests'
    grids at a few programs while still walking several tiles and ragged edges.
    ``SUPERKERN_TRITON_TOY`` overrides fields.
    """
    device = torch.device(device)
    bm = block_m(M)
    if device.type == "cuda":
        # Triton 3.6 (the GPU machine's) spills in the fused dW/db loop with 64-entry sparse
        # chunks (71 spill instructions at width 128 in tf32; 3 with 32), 3.7 does not.
        cfg = ToyTritonConfig(num_warps=8 if bm >= 64 else 4,
                              bmc=32 if precision == "tf32x3" else 64,
                              bk=32 if _TRITON_VERSION < (3, 7) else 64)
    else:
        cfg = ToyTritonConfig(bb=32, bn=32, bk=32, bmc=16, bs=32, bf=64, br=32)
    cfg = dataclasses.replace(cfg, **_env_overrides())
    cfg.validate()
    return cfg


def choose_path(M: int, precision: str, cfg: ToyTritonConfig) -> str:
    """"fused" (recompute z, no (B, n) buffer) or "stored" (y stored, width-chunked GEMMs)."""
    limit = cfg.fused_max if precision in ("tf32", "bf16") else cfg.fused_max_exact
    return "fused" if block_m(M) <= limit else "stored"


def is_interp(t: torch.Tensor) -> bool:
    return t.device.type != "cuda"


@triton.jit
def _draw(p_ptr, x_ptr, seed, step, g, offs_s, offs_f, s_ok, f_ok, n, stride_xg, stride_xs,
          FROM_X: tl.constexpr):
    """(active (S, F) bool, value (S, F) fp32) of one block of group g's batch.

    FROM_X: read a given dense x (active = nonzero); else draw from the Philox stream.
    """
    ok = s_ok[:, None] & f_ok[None, :]
    if FROM_X:
        ptrs = x_ptr + g.to(tl.int64) * stride_xg + (offs_s[:, None] * stride_xs + offs_f[None, :])
        v = tl.load(ptrs, mask=ok, other=0.0)
        active = ok & (v != 0.0)
    else:
        p = tl.load(p_ptr + g.to(tl.int64) * n + offs_f, mask=f_ok, other=0.0)
        zero = offs_s[:, None] * 0 + offs_f[None, :] * 0          # int32 (S, F)
        r1, r2, _r3, _r4 = tl.philox(seed, offs_f[None, :] + zero, offs_s[:, None] + zero,
                                     zero + step, zero)
        u1 = tl.uint_to_uniform_float(r1)
        u2 = tl.uint_to_uniform_float(r2)
        # A drawn magnitude of exactly 0 (u2 = 0, odds about 2^-31) is no active feature:
        # the same sparsity as replaying the sample as an explicit x (active = nonzero).
        active = ok & (u1 < p[None, :]) & (u2 > 0.0)
        v = tl.where(active, 2.0 * u2, 0.0)
    return active, v


@triton.jit
def relu(z):
    """max(z, 0) that keeps NaN, like torch.relu: compiled, a plain tl.maximum becomes PTX
    max.f32, which returns the non-NaN operand (a diverged model would report a finite loss)."""
    return tl.maximum(z, 0.0, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _rne(x, DROP: tl.constexpr):
    """fp32 values rounded to nearest-even onto 23 - DROP mantissa bits, kept in fp32 (the
    bit rule of ``round_to_precision``; inf and NaN pass unchanged)."""
    bits = x.to(tl.int32, bitcast=True)
    rounded = (bits + ((1 << (DROP - 1)) - 1) + ((bits >> DROP) & 1)) & -(1 << DROP)
    special = (bits & 0x7F800000) == 0x7F800000
    return tl.where(special, bits, rounded).to(tl.float32, bitcast=True)


@triton.jit
def tf32_rne(x):
    """fp32 values rounded to nearest-even onto tf32's 10 mantissa bits. The tensor cores
    truncate the low 13 bits of an fp32 operand, so operands rounded first are read exactly
    and the product is unbiased."""
    return _rne(x, 13)


@triton.jit
def bf16_rne(x):
    """fp32 values rounded to nearest-even onto bf16's 7 mantissa bits, kept in fp32: what
    the GPU's fp32 -> bf16 conversion gives. The interpreter's cast truncates instead
    (Triton 3.7.1), so it rounds with this."""
    return _rne(x, 16)


@triton.jit
def _tf32_truncate(x):
    """What the tensor cores read of an fp32 operand: its low 13 bits dropped."""
    return (x.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)


# Tests set this to True: _mm then rounds every tf32 operand whatever its flag says. A run with
# the flags must match that run bit for bit, because a flag may only skip the rounding of an
# operand that tf32_op already rounded (see test_tf32_flags_name_only_rounded_operands).
IGNORE_RND_FLAGS = tl.constexpr(False)


@triton.jit
def tf32_op(x, PREC: tl.constexpr):
    """x rounded for tf32 products (:func:`tf32_rne`); unchanged for the other precisions.
    For an operand used in several products: round it once, then pass its flag to _mm."""
    if PREC == "tf32":
        out = tf32_rne(x)
    else:
        out = x
    return out


@triton.jit
def _mm(acc, a, b, PREC: tl.constexpr, INTERP: tl.constexpr, A_RND: tl.constexpr,
        B_RND: tl.constexpr):
    """acc + a @ b in the run's precision (fp32 accumulate).

    "bf16" casts the operands. The interpreter's 16-bit math is broken and its fp32 -> bf16
    cast truncates, so there the operands are rounded to nearest-even in fp32 (as the GPU's
    cast rounds) before the (exact) product. "tf32" rounds to nearest
    first each operand whose flag (A_RND, B_RND) does not say it already went through
    :func:`tf32_op`. The interpreter then drops the low 13 bits as the tensor cores do (a
    no-op on rounded values), so its exact dot multiplies what the hardware would read.
    """
    if PREC == "bf16":
        if INTERP:
            out = tl.dot(bf16_rne(a), bf16_rne(b), acc)
        else:
            out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif PREC == "tf32":
        if IGNORE_RND_FLAGS or not A_RND:
            a = tf32_rne(a)
        if IGNORE_RND_FLAGS or not B_RND:
            b = tf32_rne(b)
        if INTERP:
            a, b = _tf32_truncate(a), _tf32_truncate(b)
        out = tl.dot(a, b, acc, input_precision="tf32")
    else:
        out = tl.dot(a, b, acc, input_precision=PREC)
    return out


@triton.jit
def _csc_chunks(dW, db, lo, hi, ent, inst, offs_n, offs_m, m_ok, M, B, cap, csc_perm_ptr,
                csr_s_ptr, csr_i_ptr, csr_v_ptr, gx_ptr, h_ptr, dh_ptr, BK: tl.constexpr,
                PREC: tl.constexpr, INTERP: tl.constexpr):
    """dW_t += sum over the tile's entries of (v dh_s + gx_e h_s) e_i^T; db_t += sum gx_e.

    Entries of a feature tile are contiguous in CSC order; each chunk of BK of them becomes a
    one-hot (BN, BK) matrix (weights v or gx) times the gathered (BK, width) rows.
    """
    hi = tl.minimum(hi, cap)        # a too small caller-given cap: stay in bounds (NaN loss)
    for e0 in range(lo, hi, BK):
        offs_e = e0 + tl.arange(0, BK)
        pos = tl.load(csc_perm_ptr + ent + offs_e, mask=offs_e < hi, other=cap)
        ok = (offs_e < hi) & (pos < cap)
        s = tl.load(csr_s_ptr + ent + pos, mask=ok, other=0)
        fi = tl.load(csr_i_ptr + ent + pos, mask=ok, other=-1)
        v = tl.load(csr_v_ptr + ent + pos, mask=ok, other=0.0)
        gx = tl.load(gx_ptr + inst * cap + pos, mask=ok, other=0.0)
        rows = s[:, None] * M + offs_m[None, :]
        rmask = ok[:, None] & m_ok[None, :]
        dhg = tl.load(dh_ptr + inst * B * M + rows, mask=rmask, other=0.0)
        hg = tl.load(h_ptr + inst * B * M + rows, mask=rmask, other=0.0)
        sel = fi[None, :] == offs_n[:, None]
        fv = tl.where(sel, v[None, :], 0.0)
        fg = tl.where(sel, gx[None, :], 0.0)
        dW = _mm(dW, fv, dhg, PREC, INTERP, False, False)
        dW = _mm(dW, fg, hg, PREC, INTERP, False, False)
        db += tl.sum(fg, axis=1)
    return dW, db


@triton.jit
def _dw_db_finish(dW, db, c, g, inst, f0, offs_n, n_ok, offs_m, m_ok, db_ok, n, M, B, cap,
                  col_ptr_ptr, csc_perm_ptr, csr_s_ptr, csr_i_ptr, csr_v_ptr, gx_ptr, h_ptr,
                  dh_ptr, dW_ptr, db_ptr, BN: tl.constexpr, BK: tl.constexpr,
                  PREC: tl.constexpr, INTERP: tl.constexpr):
    """The common end of the dW/db kernels (fused ``_cols_kernel``, stored ``_dw_kernel``).

    Takes the dense sums dW_t = y^T h (BN, width tile) and db_t = sum y of feature tile f0
    of instance inst (data group g); scales both by c, adds the tile's sparse entry terms
    (:func:`_csc_chunks`, entries [col_ptr[f0], col_ptr[f0 + BN]) of group g) and stores dW
    (rows offs_n, columns offs_m) and db (where ``db_ok``).
    """
    dW = dW * c
    db = db * c
    cp = col_ptr_ptr + g * (n + 1)
    lo = tl.load(cp + f0)
    hi = tl.load(cp + tl.minimum(f0 + BN, n))
    dW, db = _csc_chunks(dW, db, lo, hi, g * cap, inst, offs_n, offs_m, m_ok, M, B, cap,
                         csc_perm_ptr, csr_s_ptr, csr_i_ptr, csr_v_ptr, gx_ptr, h_ptr, dh_ptr,
                         BK, PREC, INTERP)
    tl.store(dW_ptr + inst * n * M + (offs_n[:, None] * M + offs_m[None, :]), dW,
             mask=n_ok[:, None] & m_ok[None, :])
    tl.store(db_ptr + inst * n + offs_n, db, mask=db_ok)
