"""Launch-setting overrides from an environment variable (tuning on a GPU without code edits),
the installed Triton's version (some launch choices and fixes depend on it), and the device
guard every Triton launch runs under."""
from __future__ import annotations

import contextlib
import dataclasses
import os

import torch


def on_device(device: torch.device):
    """Make ``device`` current for a launch: Triton launches on the current CUDA device,
    whatever device the tensors live on (``cuda:1`` tensors would be read from GPU 0).
    Tensors elsewhere run only in Triton's interpreter: without it, a ValueError that says
    so (not Triton's "0 active drivers")."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    from superkern.backend import triton_interpreting

    if not triton_interpreting():
        raise ValueError(f"superkern's Triton kernels run {device.type} tensors only in "
                         "Triton's interpreter: set TRITON_INTERPRET=1 before they are "
                         "imported, or use CUDA tensors")
    return contextlib.nullcontext()


def parse_overrides(env_name: str, config_cls: type, bool_keys: tuple[str, ...] = ()) -> dict:
    """Parse ``ENV="key=value,key=value"`` into a dict of fields of dataclass ``config_cls``.

    Values are integers, except ``bool_keys`` ("0", "false" or "" mean False).

    Raises:
        ValueError: an unknown key (the message lists the known ones) or a non-integer value.
    """
    raw = os.environ.get(env_name, "").strip()
    if not raw:
        return {}
    names = {f.name for f in dataclasses.fields(config_cls)}
    out = {}
    for item in raw.split(","):
        key, _, val = item.partition("=")
        key = key.strip()
        if key not in names:
            raise ValueError(f"{env_name}: unknown key {key!r}; known: {sorted(names)}")
        if key in bool_keys:
            out[key] = val.strip().lower() not in ("0", "false", "")
            continue
        try:
            out[key] = int(val)
        except ValueError:
            raise ValueError(f"{env_name}: {key}={val!r} is not an integer") from None
    return out


def triton_version() -> tuple[int, int]:
    """(major, minor) of the installed Triton, read now (tests may patch ``__version__``)."""
    import triton

    return tuple(int(v) for v in triton.__version__.split(".")[:2])
