"""Learning-rate schedules of the authors' code (``get_lr`` in exp/exp-10.py and exp-17.py).

Both presets use the same shape, a multiplier of the peak learning rate, with the step
counted from 1 (the code's ``step = step + 1``)::

    w = warmup if warmup < steps else 0           # no warm-up when it would not fit
    mult(s) = s / w                               for s < w
            = (1 - r) * (1 + cos(pi (s - w) / (steps - w))) / 2 + r   otherwise

with r = ``lr_min_ratio`` (0.05: small goes 1e-2 -> 5e-4, large 1 -> 0.05). So mult(w) = 1 and
mult(steps) = r. The small preset has w = 2000; the large one w = int(0.05 steps).
"""
from __future__ import annotations

import functools
import math

import torch


def lr_multiplier(s: int, steps: int, warmup: int, lr_min_ratio: float = 0.05,
                  schedule: str = "cosine") -> float:
    """Multiplier of the peak learning rate at step s (1-based); see the module docstring."""
    if not 1 <= s <= steps:
        raise ValueError(f"step s={s} outside 1..{steps}")
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}; choose from ('cosine', 'constant')")
    w = warmup if warmup < steps else 0
    if s < w:
        return s / w
    r = lr_min_ratio
    return (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * (s - w) / (steps - w))) + r


@functools.lru_cache(maxsize=64)
def _table(steps: int, warmup: int, lr_min_ratio: float, schedule: str) -> tuple:
    return tuple(lr_multiplier(s, steps, warmup, lr_min_ratio, schedule)
                 for s in range(1, steps + 1))


def lr_multipliers(steps: int, warmup: int, lr_min_ratio: float = 0.05,
                   schedule: str = "cosine") -> torch.Tensor:
    """All multipliers, float64 (steps,), entry s-1 for step s; exactly :func:`lr_multiplier`."""
    return torch.tensor(_table(steps, warmup, lr_min_ratio, schedule), dtype=torch.float64)


def schedule_key(config) -> tuple:
    """Configs with equal keys share one multiplier table."""
    return (config.steps, config.warmup, config.lr_min_ratio, config.schedule)


def lr_at(config, s: int) -> tuple[float, float]:
    """(lr_W, lr_b) of ``config`` at step s (1-based): the peaks times the multiplier."""
    mult = _table(*schedule_key(config))[s - 1]
    return config.lr * mult, config.lr_b * mult
