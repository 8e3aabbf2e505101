"""The one place where the sweep and analysis layers touch the toy engine (``superkern.toy``).

Everything else in ``superkern.sweep`` and ``superkern.analysis`` works on plain config dicts,
run ids and result objects obtained through these functions, so a change in the engine's API
is absorbed here.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

# ToyConfig's fields as documented by the engine's contract; used to reject typos in a grid
# before the engine is imported (and as the column order of summaries).
CONFIG_FIELDS: tuple[str, ...] = (
    "n", "m", "gamma", "dist", "alpha", "E", "density_s", "steps", "batch", "preset", "lr",
    "lr_b", "loss_scale", "seed", "precision", "backend", "log_every", "test_batches")

def _toy():
    import superkern.toy as toy  # lazy: importing the sweep layer never needs torch kernels

    return toy


def config_fields() -> tuple[str, ...]:
    """Field names of ``superkern.toy.ToyConfig`` (falls back to the documented list)."""
    try:
        return tuple(f.name for f in dataclasses.fields(_toy().ToyConfig))
    except (ImportError, AttributeError, TypeError):
        return CONFIG_FIELDS


def make_config(values: Mapping[str, Any]):
    """Build and validate one ``ToyConfig`` from a dict; ValueError on any problem."""
    cls = _toy().ToyConfig
    known = set(config_fields())
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; ToyConfig has {sorted(known)}")
    try:
        return cls(**dict(values))
    except TypeError as exc:  # wrong types reach the dataclass as TypeError
        raise ValueError(f"invalid config {dict(values)}: {exc}") from None


def config_from_dict(d: Mapping[str, Any]):
    """Rebuild a ``ToyConfig`` from a stored row's config dict."""
    cls = _toy().ToyConfig
    if hasattr(cls, "from_dict"):
        return cls.from_dict(dict(d))
    return cls(**dict(d))


def config_to_dict(config) -> dict[str, Any]:
    """JSON-ready dict of a config (``to_dict`` if the engine has it)."""
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    return dataclasses.asdict(config)


def run_id(config) -> str:
    """The engine's stable hash of a config."""
    return str(config.run_id)


def default_train_fn() -> Callable[..., list]:
    """``superkern.toy.train_many``."""
    return _toy().train_many


def evaluate_fn() -> Callable[..., list]:
    """``superkern.toy.evaluate_test_losses``: test losses of models from their W and b."""
    return _toy().evaluate_test_losses


def resolve_device(device: Optional[str]) -> Any:
    """The torch device a run with ``device`` uses (None: CUDA when available)."""
    from superkern.backend import resolve_device as resolve

    return resolve(device)


def resolve_backend(config: Any, device: Any) -> str:
    """The engine ("torch" or "triton") ``config`` runs on at ``device``; ValueError when
    none can run it there."""
    from superkern.toy.backend import resolve_toy_backend

    return resolve_toy_backend(config.backend, device, config.precision)


def load_weights(path) -> tuple[Any, Any, Any]:
    """``(W, b, config)`` from a weights file a sweep saved (``superkern.toy.load_weights``)."""
    return _toy().load_weights(path)


def check_group_by(group_by: Optional[str]) -> None:
    """ValueError unless ``group_by`` is None (the trainer's default, "bucket") or one of
    ``train_many``'s width-grouping policies ("bucket", "width", "none")."""
    if group_by is None:
        return
    from superkern.toy.api import GROUP_BY

    if group_by not in GROUP_BY:
        raise ValueError(f"unknown group_by {group_by!r}; choose from {GROUP_BY}")


def _probabilities_fallback(cfg: Mapping[str, Any]) -> np.ndarray:
    """SPEC section 2 feature frequencies, used only if the engine lacks ``toy_probabilities``."""
    n = int(cfg["n"])
    dist = cfg.get("dist", "power")
    if isinstance(dist, (list, tuple)):
        return np.asarray(dist, dtype=np.float64)
    i = np.arange(n, dtype=np.float64)
    if dist == "power":
        p = (i + 1.0) ** -float(cfg.get("alpha", 1.0))
    elif dist == "exponential":
        p = np.exp(-i / 400.0)
    elif dist == "linear":
        p = (n - i) / n
    else:
        raise ValueError(f"unknown dist {dist!r}")
    s = cfg.get("density_s")
    if s is not None:
        p = p / p.sum()
        return p * (1.0 + float(s) * (1.0 / p[0] - 1.0))
    return p / p.sum() * float(cfg.get("E") or 1.0)


@functools.lru_cache(maxsize=256)
def _probabilities_cached(n: int, dist: Any, alpha: Optional[float], E: float,
                          density_s: Optional[float]) -> np.ndarray:
    try:
        fn = _toy().toy_probabilities
    except (ImportError, AttributeError):
        return _probabilities_fallback({"n": n, "dist": dist, "alpha": alpha, "E": E,
                                        "density_s": density_s})
    p = fn((n, dist, 1.0 if alpha is None else alpha, E, density_s))
    if hasattr(p, "detach"):
        p = p.detach().cpu().double().numpy()
    return np.asarray(p, dtype=np.float64)


def probabilities(cfg: Mapping[str, Any]) -> np.ndarray:
    """Feature frequencies p_i (length n, float64) of a stored config dict."""
    dist = cfg.get("dist", "power")
    if isinstance(dist, list):
        dist = tuple(float(v) for v in dist)
    alpha = cfg.get("alpha")
    s = cfg.get("density_s")
    return _probabilities_cached(int(cfg["n"]), dist, None if alpha is None else float(alpha),
                                 float(cfg.get("E") or 1.0), None if s is None else float(s))


def activation_density(cfg: Mapping[str, Any]) -> float:
    """E = sum_i p_i of a stored config dict."""
    return float(probabilities(cfg).sum())


def unlearned_loss(cfg: Mapping[str, Any], phi_half: float) -> float:
    """Loss of the features a model leaves out: <v^2> sum_{i > phi_half n} p_i (SPEC 3),
    over p sorted descending (the least frequent features are the unlearned ones): the
    engine's ``superkern.toy.geometry.unlearned_loss`` of the config's p."""
    return _toy().geometry.unlearned_loss(probabilities(cfg), float(phi_half))


def unlearned_loss_integral(cfg: Mapping[str, Any], phi_half: float) -> float:
    """The paper's integral form (Appendix D.5) of :func:`unlearned_loss`, power law only.

    ``<v^2> E int_{phi n}^{n} i^-a di / int_1^n i^-a di``; NaN for other distributions.
    """
    if cfg.get("dist", "power") != "power" or cfg.get("density_s") is not None:
        return math.nan
    n, a = float(cfg["n"]), float(cfg.get("alpha", 1.0))
    phi = max(float(phi_half), 1.0 / n)
    e = float(cfg.get("E") or 1.0)
    if abs(a - 1.0) < 1e-12:
        frac = -math.log(phi) / math.log(n)
    else:
        frac = (phi ** (1 - a) - 1) / (1 - n ** (1 - a)) * n ** (1 - a)
    return _toy().geometry.V2_MEAN * e * frac


def results_as_sequence(results: Any, expected: int) -> Sequence[Any]:
    """Check that a trainer returned one result per config."""
    results = list(results)
    if len(results) != expected:
        raise RuntimeError(f"trainer returned {len(results)} results for {expected} configs")
    return results
