"""Heads that are already in memory: a torch tensor, a numpy array, or a torch module with
``get_output_embeddings()`` / ``get_input_embeddings()``."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from superkern.ops._checks import check_not_meta, native_tensor
from superkern.probe.head import Head


def from_array(W: Any) -> Head:
    if isinstance(W, np.ndarray):
        if W.dtype.kind != "f":
            raise ValueError(f"array has dtype {W.dtype}; an LM head must be floating point")
        W = native_tensor(W)
    return Head(matrix=_to_cpu(W.detach(), "the tensor"), source="<tensor>", tensor="<tensor>",
                dtype=str(W.dtype).replace("torch.", ""), tied=None,
                tied_reason="an in-memory tensor: tying unknown", format="memory",
                name="tensor")


def _weight(layer: Any) -> Optional[torch.Tensor]:
    w = getattr(layer, "weight", None) if layer is not None else None
    return w if isinstance(w, torch.Tensor) else None


def from_module(module: torch.nn.Module) -> Head:
    get_out: Optional[Callable] = getattr(module, "get_output_embeddings", None)
    get_in: Optional[Callable] = getattr(module, "get_input_embeddings", None)
    out = _weight(get_out()) if callable(get_out) else None
    inp = _weight(get_in()) if callable(get_in) else None
    if out is None and inp is None:
        raise ValueError(f"{type(module).__name__}: get_output_embeddings() and "
                         "get_input_embeddings() give no weight; pass the head tensor instead")
    W = out if out is not None else inp
    if out is not None and inp is not None:
        same = out is inp or (out.device.type != "meta" and out.data_ptr() == inp.data_ptr()
                              and out.shape == inp.shape)
        tied, reason = same, ("output and input embeddings share one tensor" if same else
                              "output embedding is a separate tensor")
        name = "get_output_embeddings().weight"
    elif out is not None:
        tied, reason, name = None, "no input embedding to compare with", \
            "get_output_embeddings().weight"
    else:
        tied, reason, name = True, "no output embedding: using the input embedding", \
            "get_input_embeddings().weight"
    return Head(matrix=_to_cpu(W.detach(), f"{type(module).__name__}: {name}"),
                source="<module>", tensor=name, dtype=str(W.dtype).replace("torch.", ""),
                tied=tied, tied_reason=reason, format="memory", name=type(module).__name__)


def _to_cpu(W: torch.Tensor, what: str) -> torch.Tensor:
    check_not_meta(W, what)
    return W.to("cpu")
