"""The one switch for torch's fp32 matmuls (IEEE fp32 or tf32), set and restored.

torch keeps the switch per process, so the sections that need it take one process-wide,
re-entrant lock while they hold it: two threads of superkern never see each other's setting
(a tf32 training run and an fp32 reference in two threads run one after the other), and the
caller's value is what is left afterwards, whatever the threads did. Code of the caller's own
that runs matmuls in another thread meanwhile does see the setting: torch offers nothing
finer. A child forked while a section was open gets a free lock and the caller's setting.

On torch >= 2.9 only the ``fp32_precision`` properties are read and written: the legacy
``allow_tf32`` flags, mixed with them, leave torch in a state where reading either raises.
A property is written only when its value must change, and put back as it was, ``"none"``
(follow the parent setting: for cuBLAS that is torch's "cuda" setting, read through
``torch.backends.cudnn``) included. cuBLAS matmuls get "tf32" or "ieee"; CPU (oneDNN) matmuls
always get "ieee": ``set_float32_matmul_precision("medium")`` turns them to bf16. Older torch
has one legacy setting, ``set_float32_matmul_precision``: "highest" or "high" inside, the
caller's string put back after.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, Iterator

import torch

_LOCK = threading.RLock()
_OPEN: list[list[Callable[[], None]]] = []  # the undo lists of the open sections, outermost first
_OWNER = [0]  # threading.get_ident() of the thread in the open sections


def _after_fork_in_child() -> None:
    """A forked child inherits the lock as held by a thread that does not exist there, and
    the setting of that thread's section: a fresh lock, and the caller's setting back. (A
    fork from inside a section leaves the child in it, to close it as the parent does.)"""
    global _LOCK
    if _OPEN and _OWNER[0] == threading.get_ident():
        return
    _LOCK = threading.RLock()
    while _OPEN:
        for undo in reversed(_OPEN.pop()):
            undo()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _new_api() -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision")


def _pin(prop, parent, want: str, undo: list) -> None:
    """Set ``prop.fp32_precision`` to ``want`` if it differs, having added to ``undo`` what
    puts it back.

    The getter reports an inherited value, not "none": a value equal to the parent's is
    taken as inherited and put back as "none" (the same effect now, and it follows the
    parent later as before)."""
    cur = prop.fp32_precision
    if (cur if cur != "none" else "ieee") == want:  # "none" all the way up is IEEE
        return
    restore = "none" if cur == parent.fp32_precision else cur

    def back() -> None:
        prop.fp32_precision = restore
    undo.append(back)
    prop.fp32_precision = want


def _pin_legacy(tf32: bool, undo: list) -> None:
    """torch < 2.9: the one legacy setting ("highest": IEEE everywhere; "high": tf32 on
    cuBLAS), the caller's string put back (writing allow_tf32 would turn "medium" into
    "high")."""
    old = torch.get_float32_matmul_precision()
    want = "high" if tf32 else "highest"
    if old == want:
        return
    undo.append(lambda: torch.set_float32_matmul_precision(old))
    torch.set_float32_matmul_precision(want)


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """fp32 matmuls with tf32 off ("fp32", the reference) or on ("tf32"), restored after."""
    tf32 = precision == "tf32"
    with _LOCK:
        # recorded before each write and dropped after the last undo: a fork from another
        # thread at any moment finds every change it must undo
        undo: list[Callable[[], None]] = []
        _OPEN.append(undo)
        _OWNER[0] = threading.get_ident()
        try:
            if _new_api():
                b = torch.backends
                cuda_parent = b.cudnn if hasattr(b.cudnn, "fp32_precision") else b
                _pin(b.cuda.matmul, cuda_parent, "tf32" if tf32 else "ieee", undo)
                if hasattr(b, "mkldnn") and hasattr(b.mkldnn, "matmul"):
                    _pin(b.mkldnn.matmul, b.mkldnn, "ieee", undo)
            else:
                _pin_legacy(tf32, undo)
            yield
        finally:
            while undo:  # run, then drop: a fork in between only runs it again
                undo[-1]()
                undo.pop()
            _OPEN.pop()


def tf32_enabled() -> bool:
    """Whether torch's fp32 CUDA matmuls run on tf32 now (for tests and benchmarks)."""
    if _new_api():
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)
