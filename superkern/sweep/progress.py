"""The sweep's progress bar: steps per second and ETA over all launches, models done."""
from __future__ import annotations

import sys
from typing import Any


class LaunchBar:
    """tqdm on stderr counting launch steps (so it/s is steps per second and the ETA is right),
    with models done in the postfix. Silent when disabled or tqdm is missing."""

    def __init__(self, total_steps: int, total_models: int, enabled: bool) -> None:
        self.models_total = total_models
        self.models_done = 0
        self.bar = None
        if enabled and total_steps > 0:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total_steps, unit="step", file=sys.stderr,
                                dynamic_ncols=True, smoothing=0.05, desc="sweep")
                self._postfix()
            except ImportError:
                self.bar = None
        self._launch_base = 0
        self._launch_seen = 0
        self._launch_steps = 0

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"models {self.models_done}/{self.models_total}")

    def start_launch(self, steps: int) -> None:
        self._launch_base += self._launch_seen
        self._launch_seen = 0
        self._launch_steps = steps

    def callback(self, done: float, total: float, *_: Any) -> None:
        """Progress hook handed to the trainer, ``callback(model_steps_done, model_steps_total)``
        (``superkern.toy.train_many``'s protocol). Every model of a launch has the same step
        count, so the launch's step is ``done / total * steps``."""
        if self.bar is None or not total:
            return
        step = int(self._launch_steps * float(done) / float(total))
        if step > self._launch_seen:
            self.bar.update(step - self._launch_seen)
            self._launch_seen = step

    def finish_launch(self, steps: int, models: int) -> None:
        if self.bar is not None and steps > self._launch_seen:
            self.bar.update(steps - self._launch_seen)
        self._launch_seen = steps
        self.models_done += models
        self._postfix()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
