"""What ``superkern env`` reports: versions, GPU, and which backends are usable (and why not)."""
from __future__ import annotations

import platform
import sys
from typing import Any

import torch

from superkern import backend as _backend


def env_info() -> dict[str, Any]:
    """Versions, device and backend availability as a JSON-ready dict."""
    info: dict[str, Any] = {
        "superkern": __import__("superkern").__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "triton_interpret": _backend.triton_interpreting(),
    }
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001
        info["triton"] = f"unavailable ({type(exc).__name__}: {exc})"
    info["libraries"] = _library_versions()
    ext = _backend.extension()
    info["extension"] = ("not importable: " + str(_backend.extension_error())) if ext is None else {
        "built_with_cuda": bool(getattr(ext, "built_with_cuda", False)),
        "built_with_openmp": bool(getattr(ext, "built_with_openmp", False)),
        "cpu_threads": ext.cpu_num_threads() if hasattr(ext, "cpu_num_threads") else None,
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    info["backends"] = {d: {k: (v or "ok") for k, v in _backend.available(d).items()}
                        for d in devices}
    return info


_LIBRARIES = ("numpy", "scipy", "safetensors", "gguf", "tokenizers", "sentencepiece",
              "matplotlib", "tqdm")


def _library_versions() -> dict[str, str]:
    """Installed versions of the readers and analysis libraries (from package metadata: no
    imports), or "not installed"."""
    from importlib import metadata

    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def format_env(info: dict[str, Any]) -> str:
    lines = []
    for key, value in info.items():
        if key in ("libraries", "extension") and isinstance(value, dict):
            lines.append(f"{key:<17} " + ", ".join(f"{k} {v}" for k, v in value.items()))
        elif key == "backends":
            for dev, table in value.items():
                lines.append(f"backends for {dev} tensors:")
                lines.extend(f"  {name:<7} {why}" for name, why in table.items())
        else:
            lines.append(f"{key:<17} {value}")
    return "\n".join(lines)
