"""Shared pieces of the toy-model kernels: block sizes (one helper), the Philox data stream and
the precision-dispatching tile product.

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
from superkern.triton._env import parse_overrides

ENV_CONFIG = "SUPERKERN_TRITON_TOY"
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
    product loop; bench/test_bench_toy_triton.py repeats the check): 64 x 64 tiles (a tl.dot
    M-dimension of 64 keeps Hopper's warpgroup MMA usable); the fused path with 4 warps up to
    width 32 and 8 warps above (it holds (64, width) tiles of h and dh); the stored path with
    8 warps and width chunks of 64 (32 for tf32x3, whose split operands double the registers);
    sampler tiles of 32 x 64 Philox draws. Interpreter: the cost is per program and per loop
    trip, not per element, so 32-wide tiles keep the tests' grids at a few programs while
    still walking several tiles and ragged edges. ``SUPERKERN_TRITON_TOY`` overrides fields.
    """
    device = torch.device(device)
    bm = block_m(M)
    if device.type == "cuda":
        cfg = ToyTritonConfig(num_warps=8 if bm >= 64 else 4,
                              bmc=32 if precision == "tf32x3" else 64)
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
        active = ok & (u1 < p[None, :])
        v = tl.where(active, 2.0 * u2, 0.0)
    return active, v


@triton.jit
def _mm(acc, a, b, PREC: tl.constexpr, INTERP: tl.constexpr):
    """acc + a @ b in the run's precision (fp32 accumulate).

    "bf16" casts the operands; the interpreter's 16-bit math is broken, so there the rounded
    operands are widened back to fp32 before the (exact) product.
    """
    if PREC == "bf16":
        if INTERP:
            out = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), acc)
        else:
            out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    else:
        out = tl.dot(a, b, acc, input_precision=PREC)
    return out
