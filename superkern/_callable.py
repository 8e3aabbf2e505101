"""Packages that are also functions: ``superkern.probe(path)`` and ``superkern.sweep(spec)``.

A plain re-export of a function named like its package would shadow the package, so the
package module's class is swapped for one whose ``__call__`` forwards to the function; its
submodules (``superkern.probe.loaders``, ``superkern.sweep.grid``, ...) stay importable.
``inspect.signature`` (and so a notebook's ``superkern.probe?``) shows the function's
signature; ``help()`` shows the package's text.
"""
from __future__ import annotations

import inspect
import sys
import types
from typing import Any, Callable


def make_callable(module_name: str, function: Callable[[], Callable[..., Any]]) -> None:
    """Make the (already imported) module ``module_name`` callable as ``function()``, which
    returns the function to run (so that it can be imported on the first call)."""

    def __call__(self: types.ModuleType, *args: Any, **kwargs: Any) -> Any:
        return function()(*args, **kwargs)

    def signature(self: types.ModuleType) -> inspect.Signature:
        return inspect.signature(function())

    cls = type("CallableModule", (types.ModuleType,),
               {"__call__": __call__, "__signature__": property(signature)})
    sys.modules[module_name].__class__ = cls
