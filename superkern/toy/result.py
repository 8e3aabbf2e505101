"""``ToyResult``: what one trained toy model leaves behind."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from superkern.toy.config import ToyConfig

TAIL = 100  # the final loss averages the reported loss over this many last steps


def _json_float(v: Any) -> Any:
    """NaN / Inf -> None (strict JSON); numpy / torch scalars -> float."""
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else None


def _json_clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    return _json_float(obj)


@dataclass
class ToyResult:
    """One trained model.

    Attributes:
        config: the (filled) :class:`ToyConfig`.
        final_loss: mean of the reported loss (training loss * n) over the last 100 steps
            (all steps of a shorter run), each on a fresh batch; ``final_loss_std`` their
            standard deviation (ddof = 1; NaN, stored as null, for a one-step run).
        curve: ``[(step, reported loss), ...]`` sampled every ``log_every`` steps (plus the
            first and the last step); single-batch values, so noisy.
        W: (n, m) and b: (n,) final parameters, CPU fp32.
        phi_half, phi_1: fractions of rows with norm > 1/2 and > 1.
        geometry: see :func:`superkern.toy.geometry.toy_geometry`.
        seconds: training wall time of the launch group this model was trained in;
            ``steps_per_second`` = steps / seconds; ``group_size`` = models in that group.
        backend, precision, device: where and how it ran.
        diverged: the loss or W became non-finite.
        test_loss: mean reported loss of the final W and b on ``config.test_batches`` fresh
            batches (:mod:`superkern.toy.evaluate`); ``test_loss_std`` their std (ddof 1).
            NaN (stored as null) when ``test_batches`` is 0.
    """

    config: ToyConfig
    final_loss: float
    final_loss_std: float
    curve: list
    W: torch.Tensor
    b: torch.Tensor
    phi_half: float
    phi_1: float
    geometry: dict
    seconds: float
    backend: str
    precision: str
    device: str
    steps_per_second: float
    group_size: int = 1
    diverged: bool = False
    versions: dict = field(default_factory=dict)
    test_loss: float = math.nan
    test_loss_std: float = math.nan

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def __repr__(self) -> str:  # one line: W, b and the curve are in the fields
        c = self.config
        return (f"ToyResult({self.run_id}: n={c.n}, m={c.m}, gamma={c.gamma:g}, "
                f"final_loss={self.final_loss:.6g} +- {self.final_loss_std:.2g}, "
                f"phi_half={self.phi_half:.4g}, phi_1={self.phi_1:.4g}, "
                f"{self.seconds:.1f} s on {self.backend}"
                + (", diverged" if self.diverged else "") + ")")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no W or b); non-finite numbers become ``None``."""
        return _json_clean({
            "run_id": self.run_id, "config": self.config.to_dict(),
            "final_loss": self.final_loss, "final_loss_std": self.final_loss_std,
            "test_loss": self.test_loss, "test_loss_std": self.test_loss_std,
            "phi_half": self.phi_half, "phi_1": self.phi_1, "geometry": self.geometry,
            "curve": [[int(s), v] for s, v in self.curve],
            "seconds": self.seconds, "steps_per_second": self.steps_per_second,
            "group_size": self.group_size, "backend": self.backend,
            "precision": self.precision, "device": self.device, "diverged": self.diverged,
            "versions": self.versions,
        })

    def save(self, directory: str | os.PathLike, name: Optional[str] = None) -> Path:
        """Write W and b to ``<directory>/<name or run_id>.safetensors`` atomically.

        The file is written to a temporary name in the same directory, synced, and moved
        into place with ``os.replace``, so a reader never sees a partial file. The metadata
        holds the run id and the config as JSON.

        Returns:
            The path written.
        """
        from safetensors.torch import save

        from superkern._atomic import write_atomic

        if str(directory).endswith(".safetensors") and not Path(directory).is_dir():
            raise ValueError(f"save takes a folder and names the file itself "
                             f"(<folder>/<run_id>.safetensors), got the file name {directory!s}; "
                             "pass its folder, and name= for another file name")
        path = Path(directory) / f"{name or self.run_id}.safetensors"
        meta = {"run_id": self.run_id,
                "config": json.dumps(self.config.to_dict(), sort_keys=True)}
        tensors = {"W": self.W.detach().to("cpu", torch.float32).contiguous(),
                   "b": self.b.detach().to("cpu", torch.float32).contiguous()}
        write_atomic(path, save(tensors, metadata=meta))  # fsynced before the rename
        return path


def load_weights(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, ToyConfig]:
    """(W, b, config) from a file written by :meth:`ToyResult.save`."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            W, b = f.get_tensor("W"), f.get_tensor("b")
    except Exception as exc:  # noqa: BLE001 - SafetensorError, a missing tensor: a bad file
        raise ValueError(f"{path}: not a readable weights file ({type(exc).__name__}: "
                         f"{exc})") from None
    if "config" not in meta:
        raise ValueError(f"{path} has no toy config metadata (not written by ToyResult.save)")
    try:
        cfg = ToyConfig.from_dict(json.loads(meta["config"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: its config metadata is not JSON ({exc})") from None
    if tuple(W.shape) != (cfg.n, cfg.m) or tuple(b.shape) != (cfg.n,):
        raise ValueError(f"{path}: W has shape {list(W.shape)} and b {list(b.shape)}, but its "
                         f"config says n={cfg.n}, m={cfg.m} (W must be [n, m], b [n])")
    return W, b, cfg
