"""Which engine trains a toy model: "torch" (this package) or "triton" (fused kernels in
``superkern.triton.toy``, written separately). The Triton module is imported lazily, in one
place (:func:`triton_toy`), so that a missing or broken kernel module never breaks
``import superkern`` and is easy to swap.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional

import torch

from superkern import backend as _backend
from superkern.toy.config import BACKENDS, TORCH_PRECISIONS

# The functions the engine calls (contract of superkern/triton/toy.py).
TRITON_FUNCS = ("toy_loss_grad_triton", "toy_sample_triton", "toy_adamw_step_triton")

_triton_cache: dict[str, object] = {}


def triton_toy() -> tuple[Optional[ModuleType], Optional[str]]:
    """(module, None) if ``superkern.triton.toy`` imports and has the contract's functions,
    else (None, reason). Cached after the first call."""
    if "mod" not in _triton_cache:
        mod, why = None, None
        if _backend.triton_error() is not None:
            why = f"triton not importable ({_backend.triton_error()})"
        else:
            try:
                mod = importlib.import_module("superkern.triton.toy")
                missing = [f for f in TRITON_FUNCS if not hasattr(mod, f)]
                if missing:
                    mod, why = None, f"superkern.triton.toy lacks {missing}"
            except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
                why = f"superkern.triton.toy not importable ({type(exc).__name__}: {exc})"
        _triton_cache["mod"], _triton_cache["why"] = mod, why
    return _triton_cache["mod"], _triton_cache["why"]  # type: ignore[return-value]


def _triton_why_not(device: torch.device) -> Optional[str]:
    mod, why = triton_toy()
    if mod is None:
        return why
    if device.type == "cuda":
        return _backend.old_gpu(device, "the triton toy engine")
    if device.type == "cpu" and _backend.triton_interpreting():
        return None
    return (f"the triton toy engine needs a CUDA device (got {device}); on CPU it runs only "
            "under TRITON_INTERPRET=1, set before the kernels are imported")


def resolve_toy_backend(backend: str, device: torch.device, precision: str) -> str:
    """"torch" or "triton" for a run on ``device``.

    "auto" (or ``SUPERKERN_BACKEND`` when it names torch/triton) picks triton on CUDA when the
    kernel module is usable, else torch; on CPU auto never picks the (slow) interpreter.

    Raises:
        ValueError: a named backend that cannot run here, or a precision only Triton has when
            Triton cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    if backend == "auto":
        env = os.environ.get(_backend.ENV_BACKEND, "")
        backend = env if env in ("torch", "triton") else "auto"
    device = torch.device(device)
    if backend == "auto":
        if device.type == "cuda" and _triton_why_not(device) is None:
            return "triton"
        if precision not in TORCH_PRECISIONS:
            why = _triton_why_not(device) or ("backend 'auto' does not use the CPU "
                                              "interpreter; pass backend='triton'")
            raise ValueError(f"precision {precision!r} needs the triton backend, which auto "
                             f"cannot use here: {why}")
        return "torch"
    if backend == "triton":
        why = _triton_why_not(device)
        if why is not None:
            raise ValueError(f"backend 'triton' is not available: {why}. Use backend='torch'")
        return "triton"
    if precision not in TORCH_PRECISIONS:
        raise ValueError(f"precision {precision!r} needs the triton backend; torch supports "
                         f"{TORCH_PRECISIONS}")
    return "torch"
