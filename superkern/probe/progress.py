"""A tqdm bar (stderr) over weighted stages of a long computation.

The engine reports nothing while one pass runs, so the bar advances per stage by that stage's
estimated cost, and a daemon thread refreshes it so the elapsed time keeps moving. It appears
only after ``delay`` seconds and, by default, only on a terminal.
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Optional


class Stages:
    """Weighted stage progress. ``plan({name: cost})`` fixes the weights of later stages."""

    def __init__(self, enabled: Optional[bool] = None, desc: str = "probe",
                 delay: float = 2.0, first_share: float = 0.05) -> None:
        from tqdm import tqdm

        self.total = 1000.0
        self.desc = desc
        self.bar = tqdm(total=self.total, desc=desc, file=sys.stderr, delay=delay,
                        disable=None if enabled is None else not enabled, leave=False,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
        self.first = self.total * first_share
        self.weights: dict[str, float] = {}
        self.done = 0.0
        self._stop = threading.Event()
        self._thread = None
        if not self.bar.disable:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.bar.update(0)
                if self.bar.n or self.bar.last_print_t - self.bar.start_t >= self.bar.delay:
                    self.bar.refresh()
            except Exception:  # noqa: BLE001 - a cosmetic thread must never kill the run
                return

    def plan(self, costs: dict[str, float]) -> None:
        total = sum(costs.values()) or 1.0
        rest = self.total - self.done
        self.weights = {k: rest * v / total for k, v in costs.items()}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.bar.set_description_str(f"{self.desc} ({name})", refresh=False)
        yield
        step = self.weights.get(name, self.first if not self.weights else 0.0)
        step = min(step, self.total - self.done)
        self.done += step
        self.bar.update(step)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self.bar.close()
