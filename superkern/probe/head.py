"""``Head``: one LM-head (or embedding) matrix with where it came from and its vocabulary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch


@dataclass
class Head:
    """A loaded LM head: rows are token vectors.

    Attributes:
        matrix: (n, m) floating torch tensor on the CPU (n tokens, width m). Quantised GGUF
            tensors are dequantised to float32; other formats keep their stored dtype.
        source: the file the matrix was read from (or ``"<tensor>"`` / ``"<module>"``).
        tensor: the tensor's name inside that file.
        dtype: the stored type (``"bfloat16"``, ``"float32"``, GGUF ``"Q8_0"`` ...).
        tied: True if the head is the input embedding (tied weights), False if it is a separate
            output matrix, None if unknown (e.g. a bare array).
        tied_reason: the evidence for ``tied``, in words.
        vocab: token strings by id when the checkpoint has a tokenizer, else None. It may be
            shorter than n (padded vocabularies); ``token(i)`` handles that.
        vocab_source: where the vocabulary came from.
        format: ``"safetensors"``, ``"safetensors-sharded"``, ``"gguf"``, ``"npy"``, ``"torch"``,
            ``"torch-sharded"`` or ``"memory"``.
        name: a short display name (package alias, folder or file stem).
        load_seconds: wall time of the load.
    """

    matrix: torch.Tensor
    source: str
    tensor: str
    dtype: str
    tied: Optional[bool]
    tied_reason: str
    vocab: Optional[list[str]] = None
    vocab_source: str = ""
    format: str = ""
    name: str = ""
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def m(self) -> int:
        return int(self.matrix.shape[1])

    def token(self, i: int) -> str:
        """Token string of row ``i`` or ``"#i"`` when there is no vocabulary entry."""
        if self.vocab is not None and 0 <= i < len(self.vocab) and self.vocab[i]:
            return self.vocab[i]
        return f"#{i}"

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (no matrix, no vocabulary)."""
        return {
            "name": self.name, "source": self.source, "format": self.format,
            "tensor": self.tensor, "shape": [self.n, self.m], "dtype": self.dtype,
            "tied": self.tied, "tied_reason": self.tied_reason,
            "vocab_size": None if self.vocab is None else len(self.vocab),
            "vocab_source": self.vocab_source, "load_seconds": self.load_seconds,
            **self.extra,
        }
