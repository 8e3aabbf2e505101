"""The probe's tiled overlap passes (O(N^2 m) each): the main pass over every analysed row,
then the centred and norm-split blocks on a seeded sample of at most ``cap`` rows. Each block
pairs its tiled statistics with the exact moments (O(N m^2)) computed before."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from superkern.ops.overlap import overlap_stats
from superkern.probe.report import OverlapBlock
from superkern.probe.rowsel import sample_rows, sampled_mean_abs_se

# Each block's sampling seed is seed + its offset here (the order the blocks run in with every
# block on), so turning the centred block off leaves the split blocks' samples unchanged.
BLOCK_SEED = {"all": 0, "centred": 1, "norm>1": 2, "norm<=1": 3, "norm>median": 4,
              "norm<=median": 5}


@dataclass(frozen=True)
class RunOptions:
    """What a probe computes and where (validated by :func:`superkern.probe`)."""

    device: torch.device
    backend: str          # resolved: never "auto"
    precision: str
    bins: int
    norm_bins: int
    topk: int
    cap: int              # row cap of the sampled passes (0: none)
    sample_main: bool
    centred: bool
    splits: bool
    seed: int


class OverlapPasses:
    """Runs the tiled passes and collects ``blocks`` (key -> OverlapBlock) and ``samples``
    (key -> the rows a pass read).

    Args:
        sets: key -> (title, analysed row indices) of the blocks on the raw head.
        exact: key -> exact moments (``set_moments``) of every block, "centred" included.
        nz_idx: the analysed nonzero rows (the main pass's pairs). n, m: the head's shape.
        opts: the run's options. timed: ``timed(key, t0)`` adds the time since t0.
    """

    def __init__(self, sets: dict[str, tuple[str, torch.Tensor]], exact: dict[str, dict],
                 nz_idx: torch.Tensor, n: int, m: int, opts: RunOptions,
                 timed: Callable[[str, float], None]):
        self.sets, self.exact, self.nz_idx = sets, exact, nz_idx
        self.n, self.m, self.o, self.timed = n, m, opts, timed
        self.blocks: dict[str, OverlapBlock] = {}
        self.samples: dict[str, torch.Tensor] = {}

    def run(self, key: str, Wx: torch.Tensor, idx: torch.Tensor, *, main: bool) -> None:
        """Block ``key`` over rows ``idx`` of ``Wx`` (the main pass when ``main``)."""
        o, ex = self.o, self.exact[key]
        title = self.sets[key][0] if key in self.sets else "centred (column mean removed)"
        stats: Any = None
        sampled, se = False, None
        if not main and key in self.sets and idx.numel() == self.nz_idx.numel():
            # Same nonzero rows as the main pass (e.g. every norm > 1): reuse its result.
            first = self.blocks["all"]
            stats, sampled, se = first.stats, first.sampled, first.mean_abs_se
            if "all" in self.samples:
                self.samples[key] = self.samples["all"]
        elif ex["n_used"] >= 2:
            t1 = time.perf_counter()
            # A sample is drawn among the nonzero rows (zero rows take part in no pair: drawn,
            # they would shrink the sample and its top-k's pair count)
            pool = self.nz_idx if main and idx.numel() != self.nz_idx.numel() else idx
            run_idx, sampled = sample_rows(pool, o.cap if (o.sample_main or not main) else 0,
                                           o.seed + BLOCK_SEED[key])
            if not sampled:
                run_idx = idx
            k = run_idx.numel()
            pairs = ex["n_pairs"] if not sampled else k * (k - 1) // 2
            stats = overlap_stats(Wx, bins=o.bins, topk=min(o.topk, pairs) if main else 0,
                                  rows=None if k == self.n else run_idx,
                                  precision=o.precision, backend=o.backend, device=o.device)
            self.samples[key] = run_idx
            if sampled:
                se = sampled_mean_abs_se(Wx, run_idx, ex["n_used"], o.seed + BLOCK_SEED[key])
            self.timed("tiled", t1)
        self.blocks[key] = OverlapBlock(key=key, title=title, rows=int(idx.numel()), m=self.m,
                                        exact=ex, stats=stats, sampled=sampled,
                                        centred=key == "centred", mean_abs_se=se)
