"""Shared helpers of the sweep tests: a fake trainer (no torch work; its source is also
written out as a module for subprocess tests), a small experiment document and its configs."""
from __future__ import annotations

import textwrap

from superkern.sweep import apply_overrides, build_configs, expand
from superkern.sweep.grid import parse_experiment

# A fake trainer: no torch work, deterministic numbers, optional sleep per launch. Also used by
# the subprocess of the kill test (written out as a module there).
FAKE = textwrap.dedent('''
    import json, time
    from pathlib import Path

    class FakeResult:
        def __init__(self, config):
            self.config = config
            self.final_loss = 1.0 / config.m
            self.final_loss_std = 0.01 / config.m
            self.phi_half = 1.0 if config.gamma < 0 else config.m / config.n
            self.phi_1 = 0.5
            self.geometry = {"mean_sq_strong": 1.0 / config.m}

        def to_dict(self):
            return {"run_id": self.config.run_id, "config": self.config.to_dict(),
                    "final_loss": self.final_loss, "final_loss_std": self.final_loss_std,
                    "phi_half": self.phi_half, "phi_1": self.phi_1, "geometry": self.geometry,
                    "curve": [[1, 2.0], [self.config.steps, self.final_loss]], "seconds": 0.0,
                    "backend": "fake", "precision": self.config.precision, "device": "cpu"}

        def save(self, directory):
            d = Path(directory)
            d.mkdir(parents=True, exist_ok=True)
            p = d / f"{self.config.run_id}.safetensors"
            p.write_bytes(b"fake")
            return p

    def make_fake(sleep=0.0, calls=None):
        def train(configs, device=None, progress=None):
            if calls is not None:
                calls.append([c.run_id for c in configs])
            for s in range(1, 4):
                time.sleep(sleep / 3)
                if progress:
                    progress(s * len(configs) * configs[0].steps // 3,
                             len(configs) * configs[0].steps)
            return [FakeResult(c) for c in configs]
        return train
''')
_ns: dict = {}
exec(FAKE, _ns)  # noqa: S102 - test helper defined once, shared with the subprocess
make_fake = _ns["make_fake"]

DOC = {
    "experiment": {"name": "t"},
    "base": {"preset": None, "n": 64, "steps": 30, "batch": 16},
    "grid": {"data": [{"dist": "exponential"}, {"dist": "power", "alpha": 1.5}],
             "gamma": {"linspace": [-1.0, 1.0, 3]},
             "m": {"powers_of_2": [2, 4]}, "seeds": [0, 1]},
    "variants": {"quick": {"m": [4, 8], "steps": 10}},
}


def small_configs(**over):
    exp = apply_overrides(parse_experiment(DOC), [f"{k}={v}" for k, v in over.items()])
    return build_configs(expand(exp))


