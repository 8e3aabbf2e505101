"""LM-head probe: load any head (safetensors, sharded, GGUF, npy, PyTorch, in memory) and
report its superposition geometry.

This package is itself callable, so that ``superkern.probe(path, ...)`` runs
:func:`superkern.probe.core.probe` while ``superkern.probe.loaders`` etc. stay importable
submodules (a plain re-export of a function named ``probe`` would shadow the package).

- ``superkern.load_head(path, tensor=None) -> Head``
- ``superkern.probe(path="minilm", ...) -> ProbeReport``
- ``superkern.compare([path, ...]) -> Comparison``
"""
from __future__ import annotations

from typing import Any

from superkern._callable import make_callable
from superkern.probe.head import Head
from superkern.probe.loaders import load_head


def compare(*args: Any, **kwargs: Any):
    """See :func:`superkern.probe.comparison.compare`."""
    from superkern.probe.comparison import compare as _compare

    return _compare(*args, **kwargs)


def run_probe(*args: Any, **kwargs: Any):
    """See :func:`superkern.probe.core.probe`."""
    return _probe_function()(*args, **kwargs)


def _probe_function():
    from superkern.probe.core import probe as _probe

    return _probe


make_callable(__name__, _probe_function)

__all__ = ["Head", "compare", "load_head", "run_probe"]
