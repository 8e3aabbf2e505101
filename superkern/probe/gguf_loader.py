"""GGUF heads through the ``gguf`` package: memory-mapped, only the head is dequantised.

In GGUF a tied model has no ``output.weight``; its head is ``token_embd.weight``. Shapes are
stored fastest-dimension first (``[m, n]``); the dequantised array is (n, m).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from superkern.probe.head import Head
from superkern.probe.names import resolve_tensor
from superkern.probe.vocab import vocab_from_gguf_field


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ValueError("reading a .gguf file needs the 'gguf' package "
                         "(pip install gguf)") from None
    return gguf


_SHARED: Optional[dict] = None  # set inside shared_readers(): file identity -> reader


@contextmanager
def shared_readers():
    """Within this block each GGUF file is parsed once: ``superkern probe --corpus`` reads a
    GGUF head and its tokenizer from the same file, and parsing a 262k-token vocabulary takes
    ~13 s. Readers are dropped when the outermost block ends."""
    global _SHARED
    outer = _SHARED is not None
    if not outer:
        _SHARED = {}
    try:
        yield
    finally:
        if not outer:
            _SHARED = None


def _open_reader(path: Path):
    gguf = _gguf()

    key = None
    if _SHARED is not None:
        try:
            st = os.stat(path)
            key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
        except OSError:
            key = None  # let the reader raise its own error below
        if key in _SHARED:
            return _SHARED[key]
    try:
        reader = gguf.GGUFReader(os.fspath(path), "r")
        if key is not None:
            _SHARED[key] = reader
        return reader
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt or truncated file
        raise ValueError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc}); "
                         "it may be truncated or corrupt") from None


def gguf_text(reader, key: str) -> Optional[str]:
    """A string metadata field of an open GGUF file (None when absent or unreadable)."""
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return bytes(f.parts[f.data[0]]).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - malformed metadata reads as absent
        return None


def load_gguf(path: Path, tensor: Optional[str] = None) -> Head:
    """Load the LM head of a GGUF file (any tensor type ``gguf.quants`` can dequantise)."""
    gguf = _gguf()

    reader = _open_reader(path)
    tensors = {t.name: t for t in reader.tensors}
    names = list(tensors)

    def shape_of(name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in reversed(list(tensors[name].shape)))

    name, kind = resolve_tensor(names, tensor, str(path), shape_of)
    t = tensors[name]
    shape = shape_of(name)
    if len(shape) != 2:
        raise ValueError(f"{path}: tensor {name!r} has shape {list(shape)}; an LM head must be "
                         "2-D (n tokens, m width)")
    qtype = t.tensor_type.name
    try:
        W = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError as exc:
        raise ValueError(f"{path}: tensor {name!r} has type {qtype}, which this gguf version "
                         f"cannot dequantise ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - short or malformed block data
        raise ValueError(f"{path}: cannot dequantise tensor {name!r} ({qtype}): "
                         f"{type(exc).__name__}: {exc}; the file may be corrupt") from None
    W = np.asarray(W)
    if W.size != shape[0] * shape[1]:
        raise ValueError(f"{path}: tensor {name!r} ({qtype}) dequantised to {W.size} values, "
                         f"expected {shape[0]} x {shape[1]}; the file may be truncated")
    if W.dtype not in (np.float32, np.float64):
        W = W.astype(np.float32)
    W = W.reshape(shape)
    if not W.flags.writeable or not W.flags.c_contiguous:  # F32/F16 come as views of the mmap
        W = np.array(W, copy=True, order="C")
    matrix = torch.from_numpy(W)
    has_output = "output.weight" in tensors
    if kind == "head":
        tied, reason = False, f"separate output matrix {name!r} in the GGUF file"
    elif kind == "embedding" and not has_output:
        tied, reason = True, "the GGUF file has no output.weight: the head is tied to token_embd"
    elif kind == "embedding":
        tied, reason = False, "input embedding chosen explicitly; the file has an output.weight"
    else:
        tied, reason = None, "tensor chosen explicitly; tying unknown"
    field = reader.fields.get("tokenizer.ggml.tokens")
    vocab = vocab_from_gguf_field(field) if field is not None else None
    arch = gguf_text(reader, "general.architecture")
    extra = {"architecture": arch} if arch is not None else {}
    return Head(matrix=matrix, source=str(path), tensor=name, dtype=qtype, tied=tied,
                tied_reason=reason, vocab=vocab,
                vocab_source="GGUF tokenizer.ggml.tokens" if vocab else "", format="gguf",
                extra=extra)
