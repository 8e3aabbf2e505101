"""The one switch for torch's fp32 matmuls (IEEE fp32 or tf32), set and restored.

torch keeps the switch per process, so the sections that need it take one process-wide,
re-entrant lock while they hold it: two threads of superkern never see each other's setting
(a tf32 training run and an fp32 reference in two threads run one after the other), and the
caller's value is what is left afterwards, whatever the threads did. Code of the caller's own
that runs matmuls in another thread meanwhile does see the setting: torch offers nothing
finer.

On torch >= 2.9 only the ``fp32_precision`` properties are read and written: the legacy
``allow_tf32`` flags, mixed with them, leave torch in a state where reading either raises.
A property is written only when its value must change, and put back as it was, ``"none"``
(follow the parent setting) included. cuBLAS matmuls get "tf32" or "ieee"; CPU (oneDNN)
matmuls always get "ieee": ``set_float32_matmul_precision("medium")`` turns them to bf16.
Older torch has only the ``allow_tf32`` flag of cuBLAS, which is then used.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import torch

_LOCK = threading.RLock()


def _new_api() -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision")


def _pin(prop, parent, want: str) -> Callable[[], None]:
    """Set ``prop.fp32_precision`` to ``want`` if it differs; return what puts it back.

    The getter reports an inherited value, not "none": a value equal to the parent's is
    taken as inherited and put back as "none" (the same effect now, and it follows the
    parent later as before)."""
    cur = prop.fp32_precision
    if (cur if cur != "none" else "ieee") == want:  # "none" all the way up is IEEE
        return lambda: None
    restore = "none" if cur == parent.fp32_precision else cur

    prop.fp32_precision = want

    def undo() -> None:
        prop.fp32_precision = restore
    return undo


def _pin_legacy(tf32: bool) -> Callable[[], None]:
    matmul = torch.backends.cuda.matmul
    old = matmul.allow_tf32
    if old == tf32:
        return lambda: None
    matmul.allow_tf32 = tf32

    def undo() -> None:
        matmul.allow_tf32 = old
    return undo


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """fp32 matmuls with tf32 off ("fp32", the reference) or on ("tf32"), restored after."""
    tf32 = precision == "tf32"
    with _LOCK:
        if _new_api():
            b = torch.backends
            undo = [_pin(b.cuda.matmul, b, "tf32" if tf32 else "ieee")]
            if hasattr(b, "mkldnn") and hasattr(b.mkldnn, "matmul"):
                undo.append(_pin(b.mkldnn.matmul, b.mkldnn, "ieee"))
        else:
            undo = [_pin_legacy(tf32)]
        try:
            yield
        finally:
            for u in reversed(undo):
                u()


def tf32_enabled() -> bool:
    """Whether torch's fp32 CUDA matmuls run on tf32 now (for tests and benchmarks)."""
    if _new_api():
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)
