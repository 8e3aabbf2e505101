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

import sys
import types
from typing import Any

from superkern.probe.head import Head
from superkern.probe.loaders import load_head


def compare(*args: Any, **kwargs: Any):
    """See :func:`superkern.probe.comparison.compare`."""
    from superkern.probe.comparison import compare as _compare

    return _compare(*args, **kwargs)


def run_probe(*args: Any, **kwargs: Any):
    """See :func:`superkern.probe.core.probe`."""
    from superkern.probe.core import probe as _probe

    return _probe(*args, **kwargs)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any):
        return run_probe(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["Head", "compare", "load_head", "run_probe"]
