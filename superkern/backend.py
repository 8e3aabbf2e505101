"""Backend discovery and the single dispatch point.

``resolve(backend, tensor)`` turns ``"auto" | "torch" | "cpu" | "triton" | "cuda"`` into the
backend that will run. ``SUPERKERN_BACKEND`` overrides ``"auto"``. Auto never fails (it falls
back to ``torch``); an explicitly named backend that cannot run raises ``ValueError`` listing
what is available and why the named one is not.

Nothing here imports Triton or the extension eagerly at package import: probes are cached and
their failures are kept as strings for ``superkern env``.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
from typing import Optional

import torch

BACKENDS = ("torch", "cpu", "triton", "cuda")
ENV_BACKEND = "SUPERKERN_BACKEND"


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled module ``superkern._C`` or ``None``; see :func:`extension_error`."""
    try:
        return importlib.import_module("superkern._C")
    except Exception:  # noqa: BLE001 - any failure means "not usable"; the reason is kept
        return None


@functools.lru_cache(maxsize=None)
def extension_error() -> Optional[str]:
    try:
        importlib.import_module("superkern._C")
        return None
    except Exception as exc:  # noqa: BLE001
        msg = f"{type(exc).__name__}: {exc}"
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if isinstance(exc, ModuleNotFoundError) and os.path.exists(
                os.path.join(root, "CMakeLists.txt")):
            msg += (f"; superkern was imported from the source tree {root}, which has no built "
                    "extension: build it there (pip install --no-build-isolation -e .) or run "
                    "from outside the clone to use the installed package")
        return msg


@functools.lru_cache(maxsize=None)
def triton_error() -> Optional[str]:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def resolve_device(device=None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU. An unusable explicit device (an
    unknown name, CUDA where there is none, an index past the last GPU) is a ValueError. A
    CUDA device always carries its index (``"cuda"`` is the current device), so that it
    compares equal to the device of a tensor placed there."""
    if device is None or (isinstance(device, str) and device in ("", "auto")):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r} ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: torch sees {torch.cuda.device_count()} "
                             "CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"device {str(device)!r}: only cpu and cuda are supported")
    return dev


# One kernel of each of this package's Triton kernel modules.
_KERNELS = (("superkern.triton._overlap_kernel", "_overlap_kernel"),
            ("superkern.triton._toy_fused", "_rows_kernel"))


def triton_interpreting() -> bool:
    """True when this package's Triton kernels run in the CPU interpreter.

    Triton fixes that when a kernel is defined (``TRITON_INTERPRET`` as its modules are
    imported), so once they are imported their own kind counts: setting the variable later
    changes nothing, and must not make CPU tensors look runnable."""
    for module, kernel in _KERNELS:
        fn = getattr(sys.modules.get(module), kernel, None)
        if fn is not None:
            return type(fn).__name__ == "InterpretedFunction"
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")


def old_gpu(device: torch.device, what: str) -> Optional[str]:
    """The reason ``what`` cannot run on CUDA ``device`` older than compute capability 8.0
    (Triton supports 8.0 and newer; the CUDA kernel uses sm_80's mma, cp.async, ldmatrix),
    or None."""
    if not torch.cuda.is_available():
        return f"{what} needs CUDA, and torch sees no CUDA device"
    index = device.index if device.index is not None else torch.cuda.current_device()
    if not 0 <= index < torch.cuda.device_count():
        return (f"{what}: {device} does not exist (torch sees {torch.cuda.device_count()} "
                "CUDA device(s))")
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"{what} needs compute capability >= 8.0; {device} has {major}.{minor}"
    return None


def _why_not(name: str, device: torch.device) -> Optional[str]:
    """None if ``name`` can run on tensors living on ``device``, else the reason."""
    if name == "torch":
        return None
    if name == "cpu":
        if extension() is None:
            return f"extension superkern._C not importable ({extension_error()})"
        if device.type != "cpu":
            return f"the 'cpu' backend needs CPU tensors, got {device}"
        if not hasattr(extension(), "overlap_partials_cpu"):
            return "extension was built without the CPU overlap kernel"
        return None
    if name == "triton":
        if triton_error() is not None:
            return f"triton not importable ({triton_error()})"
        if device.type == "cuda":
            return old_gpu(device, "the 'triton' backend")
        if device.type == "cpu" and triton_interpreting():
            return None
        return (f"the 'triton' backend needs CUDA tensors (got {device}); on CPU it runs only "
                "under TRITON_INTERPRET=1, set before the kernels are imported")
    if name == "cuda":
        ext = extension()
        if ext is None:
            return f"extension superkern._C not importable ({extension_error()})"
        if not getattr(ext, "built_with_cuda", False):
            return "extension was built without CUDA (nvcc not found or SUPERKERN_NO_CUDA=1)"
        if not hasattr(ext, "overlap_partials_cuda"):
            return "extension has no CUDA overlap kernel"
        if device.type != "cuda":
            return f"the 'cuda' backend needs CUDA tensors, got {device}"
        return old_gpu(device, "the 'cuda' kernel")
    return f"unknown backend {name!r}; choose from {('auto',) + BACKENDS}"


def available(device: torch.device | str = "cpu") -> dict[str, Optional[str]]:
    """Map every backend to None (usable on ``device``) or the reason it is not."""
    device = torch.device(device)
    return {name: _why_not(name, device) for name in BACKENDS}


# Preference order for "auto", by device type.
# Triton before the hand-written CUDA kernel on GPUs until the CUDA kernel has been verified
# on hardware (see README, "Status").
_AUTO_ORDER = {"cuda": ("triton", "cuda", "torch"), "cpu": ("cpu", "torch")}


def resolve(backend: str, tensor: torch.Tensor, *, supported: tuple[str, ...] = BACKENDS) -> str:
    """Pick the backend that runs an op on ``tensor``.

    Args:
        backend: ``"auto"`` or one of :data:`BACKENDS`.
        tensor: the main input; its device decides what can run.
        supported: the backends that implement this op.

    Raises:
        ValueError: an explicitly named backend that is unknown or cannot run here.
    """
    where = ""
    if backend == "auto":
        backend = os.environ.get(ENV_BACKEND, "auto") or "auto"
        where = f" (set by {ENV_BACKEND})" if backend != "auto" else ""
    device = tensor.device
    if backend == "auto":
        for name in _AUTO_ORDER.get(device.type, ("torch",)):
            if name in supported and _why_not(name, device) is None:
                return name
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}{where}; choose from "
                         f"{('auto',) + BACKENDS}")
    if backend not in supported:
        raise ValueError(f"backend {backend!r}{where} does not implement this op; it has "
                         f"{supported}")
    reason = _why_not(backend, device)
    if reason is not None:
        usable = [n for n in supported if _why_not(n, device) is None]
        raise ValueError(f"backend {backend!r}{where} is not available: {reason}. "
                         f"Usable here for {device.type} tensors: {usable}")
    return backend


@contextlib.contextmanager
def env_named(backend: str, name: str):
    """Re-raise a ValueError from running backend ``name`` with the variable that chose it,
    when ``backend`` is "auto" and ``SUPERKERN_BACKEND`` is set: the caller asked for auto
    and would otherwise not see why ``name`` ran."""
    try:
        yield
    except ValueError as exc:
        chosen = os.environ.get(ENV_BACKEND) if backend == "auto" else None
        if chosen in (None, "", "auto"):  # auto chose: nothing to blame
            raise
        raise ValueError(f"{exc} [backend {name!r} set by {ENV_BACKEND}={chosen}]") from exc


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError (a RuntimeError) or torch's CPU allocator failing."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "can't allocate memory" in text or "out of memory" in text
