"""Triton backend of the overlap engine: config, launcher and the top-k driver.

``overlap_partials_triton`` returns the same ``OverlapPartials`` as the torch reference from
one fused kernel (``_overlap_kernel``): upper-triangle Gram tiles on persistent programs, the
reductions in the epilogue, never an N x N matrix. Extra memory is O(N + programs * bins +
top-k buffer). On CUDA it runs compiled (tl.dot, fp32 accumulate); on CPU tensors it runs in
Triton's interpreter (TRITON_INTERPRET=1), with inputs upcast to fp32 (exact for bf16 and
fp16, rounded to tf32 first for "tf32") because the interpreter's 16-bit math is broken.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
import triton

from superkern import backend as _backend
from superkern.ops.overlap_ref import PRECISIONS, check_split, num_pairs, round_to_precision
from superkern.ops.overlap_types import TRITON_MAX_BINS, OverlapPartials
from superkern.triton import _overlap_topk as _topk
from superkern.triton._overlap_kernel import ARG_BASE, _overlap_kernel
from superkern.triton._env import on_device, parse_overrides

ENV_CONFIG = "SUPERKERN_TRITON_OVERLAP"
_COMPUTE_DTYPE = {"fp32": torch.float32, "tf32": torch.float32,
                  "bf16": torch.bfloat16, "fp16": torch.float16}
MAX_PASSES = 64  # top-k reruns; each one shrinks the candidate set, this is a safety net


@dataclass(frozen=True)
class OverlapTritonConfig:
    """Launch parameters of the overlap kernel.

    block: tile rows = tile columns (the schedule is triangular, so square tiles).
    block_k: K step of the Gram product. group: block-rows per band of the tile order (L2
    reuse among concurrent programs). win: histogram window in bins (see _hist_tile).
    programs_per_sm: persistent programs per SM (GPU); programs: grid in the interpreter.
    split: epilogue column parts (1 or 2; 2 halves the live registers of a 128 x 128 tile).
    tma: load tiles through host tensor descriptors (Hopper+; needs 16-byte row strides).
    maxnreg: register cap per thread (GPU; e.g. 128 for two 8-warp programs per SM).
    """

    block: int = 128
    block_k: int = 64
    group: int = 8
    win: int = 64
    num_warps: int = 8
    num_stages: int = 3
    programs_per_sm: int = 1
    programs: int = 4
    split: int = 1
    tma: bool = False
    maxnreg: int = 0

    def validate(self) -> None:
        for name in ("block", "block_k", "win"):
            v = getattr(self, name)
            if v < 16 or v & (v - 1):
                raise ValueError(f"{name}={v} must be a power of two >= 16")
        if self.win < 32:
            raise ValueError(f"win={self.win} must be >= 32 (one bin per lane of a warp)")
        if self.group < 1 or self.programs < 1 or self.programs_per_sm < 1:
            raise ValueError(f"group, programs, programs_per_sm must be >= 1: {self}")
        if self.split not in (1, 2) or self.block // self.split < 16:
            raise ValueError(f"split={self.split} must be 1 or 2 with block / split >= 16")


def _next_pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def _env_overrides() -> dict:
    """``SUPERKERN_TRITON_OVERLAP="block=128,block_k=64,num_stages=4,tma=1"`` (tuning on GPU)."""
    return parse_overrides(ENV_CONFIG, OverlapTritonConfig, ("tma",))


def overlap_config(dtype: torch.dtype, m: int, device: torch.device | str) -> OverlapTritonConfig:
    """The one place block sizes come from: per device kind, dtype and width m.

    GPU: 128 x 128 tiles, K step 64 for 16-bit inputs (32 for fp32: same bytes per stage),
    8 warps, 3 stages, the epilogue in two column halves (ptxas for sm_90, triton 3.7.1: no
    spills for plain statistics, 160 bytes with histogram and top-k), one persistent program
    per SM (the kernel needs 244-255 registers per thread, so a second one would not be
    resident anyway). Interpreter: cost
    grows with the number of tiles, so 64 x 64 tiles and 4 programs; a small band so that
    the tests walk several bands. ``SUPERKERN_TRITON_OVERLAP`` overrides any field.
    """
    device = torch.device(device)
    kmax = max(16, _next_pow2(m))
    if device.type == "cuda":
        bk = 64 if dtype in (torch.bfloat16, torch.float16) else 32
        cfg = OverlapTritonConfig(block=128, block_k=min(bk, kmax), group=8, win=64,
                                  num_warps=8, num_stages=3, programs_per_sm=1, split=2)
    else:
        cfg = OverlapTritonConfig(block=64, block_k=min(128, kmax), group=2, win=32,
                                  programs=4, split=1)
    cfg = dataclasses.replace(cfg, **_env_overrides())
    cfg.validate()
    return cfg


def _num_programs(cfg: OverlapTritonConfig, device: torch.device, num_tiles: int) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(num_tiles, sms * cfg.programs_per_sm))
    return max(1, min(num_tiles, cfg.programs))


PAD = 16  # Triton specialises an int argument divisible by 16: rows are padded to that


def pad_columns(X: torch.Tensor) -> torch.Tensor:
    """X (N, m) with zero columns appended up to a multiple of :data:`PAD` (every dot product
    unchanged), or X itself when m already is one.

    Triton vectorises and pipelines the row loads only when it can prove them aligned: the
    row stride and m divisible by 16. Compiled offline for sm_90, bf16 at m = 4001 loads in
    one stage with no asynchronous copies (32 KiB of shared memory), at m = 4016 through a
    3-stage cp.async pipeline (96 KiB); fp32 at m = 39 in 4-byte copies, at m = 48 in 16-byte
    ones. The copy costs N x m_pad elements once; real heads (m = 576 ... 16384) need none.
    """
    N, m = X.shape
    if m % PAD == 0:
        return X
    out = X.new_zeros(N, -(-m // PAD) * PAD)
    out[:, :m] = X
    return out


def _tma_descriptor(X: torch.Tensor, cfg: OverlapTritonConfig, input_precision: str):
    """Host tensor descriptor over X (N, m) with (block, block_k) boxes, or None if unusable.

    Not for IEEE fp32 on the GPU: that dot runs on CUDA cores, and ptxas spills heavily
    when it is fed by TMA (seen compiling for sm_90 with triton 3.6).
    """
    if not cfg.tma or (X.is_cuda and input_precision == "ieee"):
        return None
    row_bytes = X.shape[1] * X.element_size()
    if row_bytes % 16 or X.data_ptr() % 16 or cfg.block_k * X.element_size() < 16:
        return None
    if X.is_cuda and torch.cuda.get_device_capability(X.device)[0] < 9:
        return None
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:
        return None
    return TensorDescriptor(X, list(X.shape), list(X.stride()), [cfg.block, cfg.block_k])


def _launch_options(cfg: OverlapTritonConfig, device: torch.device) -> dict:
    opts = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if cfg.maxnreg and device.type == "cuda":
        opts["maxnreg"] = cfg.maxnreg
    return opts


@dataclass
class _Pass:
    """Raw outputs of one kernel pass."""

    sums: torch.Tensor
    hist: torch.Tensor
    row_key: torch.Tensor
    row_sq: torch.Tensor
    count: int
    cand: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def gpu_input_precision(precision: str) -> str:
    """``tl.dot``'s input precision on a GPU: exact fp32 for "fp32", else "tf32" (the only
    reduced mode for fp32 operands; bf16/fp16 operands ignore it)."""
    return "ieee" if precision == "fp32" else "tf32"


def kernel_constexprs(cfg: OverlapTritonConfig, N: int, m: int, *, bins: int, topk: int,
                      split: int, tma: bool, input_precision: str) -> dict:
    """The constexpr arguments of one ``_overlap_kernel`` launch (shared with the offline
    compile test, so it builds exactly what runs)."""
    hbins = max(32, _next_pow2(bins)) if bins else 32
    # Histogram windows of win and 2 win bins, each only where smaller than all bins.
    win = cfg.win if cfg.win < hbins else 0
    win2 = 2 * cfg.win if win and 2 * cfg.win < hbins else 0
    # Fixed point for row sums of c^2 (each <= N - 1 up to rounding): 2^40 leaves room up to
    # N ~ 2^21; beyond that trade resolution for headroom. The quantum is absolute (2^-40 per
    # row and tile partial): near-orthogonal rows (all |c| < ~1e-6) keep few digits.
    sq_scale = float(2 ** min(40, 61 - N.bit_length()))
    return dict(BM=cfg.block, BK=cfg.block_k, GROUP=cfg.group, EVEN_K=(m % cfg.block_k == 0),
                RECT=split > 0, SPLIT=cfg.split, HBINS=hbins, WIN=win, WIN2=win2,
                FULL_FROM=max(win, win2), HAS_HIST=bins > 0, HAS_TOPK=topk > 0, USE_TMA=tma,
                INPUT_PRECISION=input_precision, SQ_SCALE=sq_scale)


def _launch(X, desc, scale, cfg, *, bins, topk, cap, thr, input_precision, split=0) -> _Pass:
    N, m = X.shape
    dev = X.device
    nb = triton.cdiv(N, cfg.block)
    nba = split // cfg.block
    num_tiles = nba * (nb - nba) if split else nb * (nb + 1) // 2
    G = _num_programs(cfg, dev, num_tiles)
    consts = kernel_constexprs(cfg, N, m, bins=bins, topk=topk, split=split,
                               tma=desc is not None, input_precision=input_precision)
    hbins = consts["HBINS"]
    sums = torch.zeros((G, 3), dtype=torch.float64, device=dev)
    hist = torch.zeros((G, hbins) if bins else (1,), dtype=torch.int64, device=dev)
    row_key = torch.zeros(N, dtype=torch.int64, device=dev)
    row_sq = torch.zeros(N, dtype=torch.int64, device=dev)
    cnt = torch.zeros(1, dtype=torch.int64, device=dev)
    ncap = cap if topk else 1
    cval = torch.empty(ncap, dtype=torch.float32, device=dev)
    ci = torch.empty(ncap, dtype=torch.int32, device=dev)
    cj = torch.empty(ncap, dtype=torch.int32, device=dev)
    with on_device(dev):  # X on cuda:1 while cuda:0 is current would run on the wrong GPU
        _overlap_kernel[(G,)](
            X, desc if desc is not None else X, scale, N, m, X.stride(0),
            sums, hist, row_key, row_sq, cnt, cval, ci, cj, ncap,
            float(thr[0]), int(thr[1]), int(thr[2]), nb, num_tiles, nba, max(bins, 1),
            bins * 0.5, **consts, **_launch_options(cfg, dev))
    count = int(cnt.item()) if topk else 0
    n = min(count, ncap)
    cand = (cval[:n], ci[:n], cj[:n])  # stays on the device: the selection sorts there
    return _Pass(sums=sums, hist=hist, row_key=row_key,
                 row_sq=row_sq.double() / consts["SQ_SCALE"], count=count, cand=cand)


def _row_max_bound(first: _Pass, N: int, k: int) -> tuple[float, int, int] | None:
    """A valid threshold from the first pass's per-row maxima (None when 2k > N).

    The 2k rows with the largest row max each own a pair at least that large, and a pair is
    owned by at most its two rows: so at least k distinct pairs have |c| >= the 2k-th largest
    row max. The candidates it admits all lie among those ~2k rows.
    """
    if 2 * k > N:
        return None
    row_max = _row_max(first.row_key.cpu())
    m = float(torch.topk(row_max, 2 * k).values[-1])
    return (m, N, N)


def _tighter(a, b):
    """Of two valid thresholds, the one ranked first in (|c| desc, i asc, j asc): it admits
    fewer pairs. None loses."""
    if a is None or b is None:
        return a if b is None else b
    return a if (-a[0], a[1], a[2]) <= (-b[0], b[1], b[2]) else b


def _select_topk(run, cap: int, N: int, k: int, first: _Pass, thr):
    """Exact top-k by (|c| desc, i asc, j asc); reruns the kernel only on buffer overflow
    (or, never seen, when rounding put the estimate above the kernel's k-th value).

    ``run(thr, cap)`` launches a pass; ``first`` was launched with ``thr`` and ``cap``. On an
    overflow of at most ``GROW_MAX`` candidates the buffer grows to the exact count and the
    same threshold runs again (every pair computes bit-identically, so it stores them all):
    two passes whatever order the atomics fill the buffer in. Larger overflows raise the
    threshold to the k-th best stored pair."""
    p = first
    bound = _row_max_bound(first, N, k)
    for _ in range(MAX_PASSES):
        if p.count < k:
            thr = bound or (-1.0, N, N)
        elif p.count > cap:
            if p.count <= _topk.GROW_MAX:
                cap = p.count
            else:
                absv, _, pi, pj = _topk.canonical(*p.cand, k)
                thr = _tighter((float(absv[-1]), int(pi[-1]), int(pj[-1])), bound)
        else:
            _, vals, pi, pj = _topk.canonical(*p.cand, k)
            return vals.float().cpu(), torch.stack([pi, pj], 1).cpu()
        p = run(thr, cap)
    raise RuntimeError(f"top-k did not converge in {MAX_PASSES} passes "
                       f"(N={N}, k={k}, capacity={cap}, last count={p.count})")


def _row_max(key: torch.Tensor) -> torch.Tensor:
    return (key >> 32).to(torch.int32).view(torch.float32).clone()


def overlap_partials_triton(X: torch.Tensor, scale: torch.Tensor, *, bins: int, topk: int,
                            precision: str = "fp32",
                            config: Optional[OverlapTritonConfig] = None,
                            topk_capacity: Optional[int] = None,
                            split: int = 0) -> OverlapPartials:
    """Reductions over all pairs i < j of c_ij = scale_i scale_j (X_i . X_j), fused in Triton.

    Args:
        X: (N, m) rows, N >= 2, in the compute dtype of ``precision`` (fp32 for fp32/tf32,
            bf16, fp16); CUDA (compiled) or CPU (interpreter, TRITON_INTERPRET=1).
        scale: (N,) fp32 per-row factors (1 / norm; ones for pre-normalised fp16 rows).
        bins: histogram bins over [-1, 1] (0 = none). topk: number of top pairs (<= P).
        precision: "fp32" (IEEE fp32 products), "tf32", "bf16" or "fp16"; fp32 accumulate.
        config: launch parameters (default :func:`overlap_config`).
        topk_capacity: candidate buffer length (default sized from the threshold estimate;
            tests force a tiny one to exercise the overflow path).
        split: 0 for all pairs i < j; S for the cross pairs i < S <= j only (block-pair
            streaming), S a multiple of the tile edge ``config.block``.

    Returns:
        OverlapPartials on CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    if X.dim() != 2 or scale.shape != (X.shape[0],):
        raise ValueError(f"X must be (N, m) and scale (N,): got {tuple(X.shape)}, "
                         f"{tuple(scale.shape)}")
    N, m = X.shape
    check_split(split, N)
    P = num_pairs(N, split)
    assert N >= 2, "the caller handles N < 2"
    if bins > TRITON_MAX_BINS:
        raise ValueError(
            f"bins={bins}: the triton backend counts at most {TRITON_MAX_BINS} bins (its "
            f"histogram lives in shared memory; {_next_pow2(bins)} padded bins need "
            f"{4 * _next_pow2(bins)} bytes per program); use backend='torch' or 'cuda'")
    if not 0 <= topk <= P:
        raise ValueError(f"topk={topk} must be in [0, P={P}]")
    dev = X.device
    interp = dev.type == "cpu"
    if interp and not _backend.triton_interpreting():
        raise ValueError("the triton backend runs CPU tensors only under TRITON_INTERPRET=1")
    if interp:
        # The interpreter's bf16/fp16 arithmetic is broken and its dot is exact fp32:
        # feed it the values the tensor cores would read, in fp32.
        Xk = round_to_precision(X, precision).contiguous()
        input_precision = "ieee"
    else:
        # The tensor cores truncate an fp32 operand's low 13 bits; rounded to nearest first,
        # a tf32 operand is read exactly, as the torch and cuda backends round it.
        Xk = (round_to_precision(X, "tf32") if precision == "tf32"
              else X.to(_COMPUTE_DTYPE[precision])).contiguous()
        input_precision = gpu_input_precision(precision)
    Xk = pad_columns(Xk)
    m = Xk.shape[1]
    scale = scale.to(device=dev, dtype=torch.float32).contiguous()
    cfg = config or overlap_config(Xk.dtype, m, dev)
    cfg.validate()
    if N > 2 ** 31 - 1 - cfg.block:
        raise ValueError(f"N={N} rows: row indices (up to N + {cfg.block} in a ragged tile) "
                         "must fit in int32")
    if split % cfg.block:
        raise ValueError(f"split={split} must be a multiple of the tile edge {cfg.block}")
    desc = _tma_descriptor(Xk, cfg, input_precision)

    cap, t0 = 1, -1.0
    if topk:
        t0, expected = _topk.initial_threshold(
            Xk, scale, topk, max_rows=4096 if not interp else 256,
            rel_margin=2.0 ** -6 if not interp else 1e-4, split=split)
        cap = _topk.capacity(topk, P, expected, topk_capacity)

    def run(thr, cap):
        return _launch(Xk, desc, scale, cfg, bins=bins, topk=topk, cap=cap, thr=thr,
                       input_precision=input_precision, split=split)

    first = run((t0, N, N), cap)
    if topk:
        topk_values, topk_pairs = _select_topk(run, cap, N, topk, first, (t0, N, N))
    else:
        topk_values = torch.zeros(0, dtype=torch.float32)
        topk_pairs = torch.zeros((0, 2), dtype=torch.int64)

    sums = first.sums.cpu()
    key = first.row_key.cpu()
    row_max = _row_max(key)
    row_arg = ARG_BASE - (key & 0xFFFFFFFF)
    return OverlapPartials(
        sum_cos=math.fsum(sums[:, 0].tolist()), sum_abs=math.fsum(sums[:, 1].tolist()),
        sum_sq=math.fsum(sums[:, 2].tolist()),
        hist=first.hist.sum(0)[:bins].cpu() if bins else None,
        row_max_abs=row_max, row_argmax=row_arg, row_sum_sq=first.row_sq.cpu(),
        topk_values=topk_values, topk_pairs=topk_pairs)
