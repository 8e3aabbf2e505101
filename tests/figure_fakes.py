"""The synthetic sweep behind the figure tests: a trainer whose losses follow the paper's laws
(no torch training) and saves a W with known row norms, run through the real sweep runner."""
from __future__ import annotations

import math

import numpy as np
import torch

from superkern.sweep import build_configs, run_sweep
from superkern.toy import ToyConfig, toy_probabilities


def law_alpha_m(c: ToyConfig) -> float:
    """The exponent the synthetic trainer builds in: max(1, 2(alpha-1)) strong, else weak."""
    a = c.alpha if c.dist == "power" else 1.0
    return max(1.0, 2 * (a - 1)) if c.gamma < 0 else max(0.2, a - 1)


class SynthResult:
    def __init__(self, c: ToyConfig, rng: np.random.Generator):
        self.config = c
        E = float(toy_probabilities(c).sum())
        self.final_loss = 2.0 * E * c.m ** -law_alpha_m(c) * math.exp(rng.normal(0, 0.01))
        self.final_loss_std = 0.02 * self.final_loss
        strong = c.gamma < 0
        self.phi_half = 1.0 if strong else c.m / c.n
        self.phi_1 = min(1.0, c.m ** 2 / 2 / c.n) if strong else 0.0
        self.geometry = {"mean_sq_strong": 1.1 / c.m if strong else None,
                         "welch_kappa2_strong": 1.0 / c.m}
        gen = torch.Generator().manual_seed(c.seed * 1000 + c.m)
        W = torch.randn(c.n, c.m, generator=gen)
        W /= W.norm(dim=1, keepdim=True)
        if strong:
            W *= torch.linspace(1.3, 0.7, c.n)[:, None]
        else:
            W[c.m:] *= 0.01
        self.W = W

    def to_dict(self):
        return {"final_loss": self.final_loss, "final_loss_std": self.final_loss_std,
                "phi_half": self.phi_half, "phi_1": self.phi_1, "geometry": self.geometry,
                "seconds": 0.0, "backend": "synthetic", "device": "cpu"}

    def save(self, directory):
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.config.run_id}.safetensors"
        save_file({"W": self.W, "b": torch.zeros(self.config.n)}, str(path))
        return path


def synth_train(configs, device=None, progress=None):
    rng = np.random.default_rng(len(configs))
    return [SynthResult(c, rng) for c in configs]


def synth_configs():
    base = dict(preset="small", steps=10, batch=8, dist="power")
    dicts = [dict(base, n=100, m=m, gamma=g, alpha=a)
             for g in (-1.0, -0.7778, -0.5556, -0.3333, 0.5556, 1.0)
             for a in (0.5, 1.0, 1.5, 2.0) for m in (10, 20, 40)]
    dicts += [dict(base, n=200, m=m, gamma=-1.0, alpha=a) for a in (1.0, 2.0)
              for m in (21, 30, 45)]
    dicts += [dict(base, n=100, m=m, gamma=g, alpha=1.0, density_s=s)
              for s in (0.0, 0.5, 1.0) for g in (-1.0, 0.5556) for m in (10, 20, 40)]
    dicts += [dict(preset="large", n=256, steps=10, batch=8, m=m, gamma=g, **d)
              for d in ({"dist": "exponential"}, {"dist": "power", "alpha": 1.2},
                        {"dist": "linear"}) for g in (-1.0, 0.1) for m in (8, 16, 32, 64, 128)]
    return build_configs(dicts)


def write_synth_results(out):
    """Run the synthetic grid into folder ``out``; returns its results file."""
    run_sweep(synth_configs(), out, experiment="synthetic", train_fn=synth_train,
              progress=False)
    return out / "results.jsonl"
