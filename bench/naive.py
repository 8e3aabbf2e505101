"""The naive PyTorch baseline of the overlap engine, for benchmarks only.

What someone would write in a few lines: upper-triangle blocks of ``Ua @ Ub.T`` as bf16 GEMMs
(cuBLAS, bf16 output), then abs / sum / max of each block. No histogram, per-row statistics or
top-k, so it does strictly less work than the fused kernel; it still writes and re-reads every
block of C through memory, which is what the fused epilogue avoids.
"""
from __future__ import annotations

import os

import torch


def _block_stats(Ua: torch.Tensor, Ub: torch.Tensor, diag: bool):
    """One block of the naive baseline: (sum c, sum |c|, max |c|) of Ua @ Ub.T (fp32 sums)."""
    C = Ua @ Ub.T
    if diag:
        C = torch.triu(C, diagonal=1)  # zeros add nothing to sums or to max |c|
    A = C.abs()
    return C.sum(dtype=torch.float32), A.sum(dtype=torch.float32), A.max().float()


def _blockwise(U: torch.Tensor, block: int, block_fn) -> dict[str, torch.Tensor]:
    """Walk the upper-triangle blocks of U @ U.T with ``block_fn`` and merge its results."""
    N = U.shape[0]
    sum_cos = torch.zeros((), dtype=torch.float64, device=U.device)
    sum_abs = torch.zeros((), dtype=torch.float64, device=U.device)
    max_abs = torch.zeros((), dtype=torch.float32, device=U.device)
    for a in range(0, N, block):
        Ua = U[a:a + block]
        for b in range(a, N, block):
            s, sa, mx = block_fn(Ua, U[b:b + block], a == b)
            sum_cos += s.double()
            sum_abs += sa.double()
            max_abs = torch.maximum(max_abs, mx)
    return {"sum_cos": sum_cos, "sum_abs": sum_abs, "max_abs": max_abs}


def naive_blockwise_stats(U: torch.Tensor, block: int = 16384) -> dict[str, torch.Tensor]:
    """Sum of c, sum of |c| and max |c| over pairs i < j of the rows of U (unit rows).

    Args:
        U: (N, m) unit rows in the compute dtype (bf16 for the benchmark), on the GPU.
        block: rows per block; memory is O(block^2) (16384: 512 MiB per bf16 block of C).

    Returns:
        dict of 0-d tensors on U's device: ``sum_cos`` and ``sum_abs`` (fp64), ``max_abs``.
    """
    return _blockwise(U, block, _block_stats)


_COMPILED: dict = {}


def compiled_blockwise_stats(U: torch.Tensor, block: int = 16384,
                             mode: str | None = None) -> dict[str, torch.Tensor]:
    """``naive_blockwise_stats`` with each block's product and reductions under torch.compile.

    Inductor keeps the GEMM in the vendor library (or, in ``max-autotune`` mode, may pick a
    Triton template) and fuses triu / abs / the three reductions into one pass over C, so this
    is the strongest "few lines of PyTorch" baseline: it still writes C once and reads it once.
    ``mode``: torch.compile mode (default: env SUPERKERN_BENCH_COMPILE_MODE, else default).
    Compiles once per (block shape, diag) on first use: call it once before timing.
    """
    mode = mode or os.environ.get("SUPERKERN_BENCH_COMPILE_MODE") or None
    if mode not in _COMPILED:
        # One graph per (block shape, diag, dtype): the bench's shapes and precisions need
        # about 18, past dynamo's default limit of 8, beyond which it would quietly run eager.
        import torch._dynamo.config as dynamo_config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo_config, name):
                setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))
        _COMPILED[mode] = torch.compile(_block_stats, mode=mode, dynamic=False)
    return _blockwise(U, block, _COMPILED[mode])
