"""GGUF heads through the ``gguf`` package: memory-mapped, only the head is dequantised.

In GGUF a tied model has no ``output.weight``; its head is ``token_embd.weight``. Shapes are
stored fastest-dimension first (``[m, n]``); the dequantised array is (n, m).

Large models come split into several files (llama.cpp's ``gguf-split`` names them
``<name>-00001-of-00003.gguf`` ...): the first holds the metadata and tokenizer, each holds
some of the tensors. Any file of such a set names the whole set.
"""
from __future__ import annotations

import os
import re
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
_KEPT: Optional[dict] = None  # ... and file identity -> _Kept (see shrink_shared)


@contextmanager
def shared_readers():
    """Within this block each GGUF file is parsed once: ``superkern probe --corpus`` reads a
    GGUF head and its tokenizer from the same file, and parsing a 262k-token vocabulary takes
    ~13 s. Readers are dropped when the outermost block ends."""
    global _SHARED, _KEPT
    outer = _SHARED is not None
    if not outer:
        _SHARED, _KEPT = {}, {}
    try:
        yield
    finally:
        if not outer:
            _SHARED = _KEPT = None


def drop_shared() -> None:
    """Forget the readers :func:`shared_readers` holds (the block stays open, and so do the
    :func:`shrink_shared` summaries not yet loaded): a probe calls it once the head is loaded,
    so the parsed metadata is not kept through the O(n^2 m) pass."""
    if _SHARED is not None:
        _SHARED.clear()


def shrink_shared() -> None:
    """Replace each parsed reader held by what :func:`load_gguf` needs of it (:class:`_Kept`):
    ``compare --corpus`` builds every head's tokenizer before any probe, holding one parsed
    file at a time, and loads each head later without parsing its file again. The first load
    takes the summary back (a :func:`drop_shared` after it unmaps the file); ``compare``
    probes a head named twice once."""
    if _SHARED is not None:
        _KEPT.update({key: r if isinstance(r, _Kept) else _Kept(r)
                      for key, r in _SHARED.items()})
        _SHARED.clear()


class _Kept:
    """What :func:`load_gguf` reads of a parsed GGUF file, without the parse: the tensor table
    (views of the memory-mapped file), the metadata fields of at most 64 values, and the
    token strings. About 40 MB for a 262k-token vocabulary, where the parse holds ~0.7 GB
    (numpy arrays for each string). Not enough to rebuild a tokenizer from."""

    def __init__(self, reader):
        self.tensors = reader.tensors
        self.fields = {k: f for k, f in reader.fields.items() if len(f.data) <= 64}
        self.vocab = _vocab(reader)


def _vocab(reader) -> Optional[list[str]]:
    if isinstance(reader, _Kept):
        return reader.vocab
    field = reader.fields.get("tokenizer.ggml.tokens")
    return vocab_from_gguf_field(field) if field is not None else None


def _open_reader(path: Path, kept: bool = False):
    """The parsed GGUF file (one parse per file inside :func:`shared_readers`); with
    ``kept``, its :class:`_Kept` summary will do where one is held (taken back, see
    :func:`shrink_shared`)."""
    gguf = _gguf()

    key = None
    if _SHARED is not None:
        try:
            st = os.stat(path)
            key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
        except OSError:
            key = None  # let the reader raise its own error below
        held = _SHARED.get(key)
        if held is None and kept:
            held = _KEPT.pop(key, None)
        if held is not None and (kept or not isinstance(held, _Kept)):
            _SHARED[key] = held
            return held
    try:
        reader = gguf.GGUFReader(os.fspath(path), "r")
        if key is not None:
            _SHARED[key] = reader
        return reader
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt or truncated file
        raise ValueError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc}); "
                         "it may be truncated or corrupt") from None


_SPLIT = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def gguf_shards(path: Path) -> list[Path]:
    """The files of the GGUF model ``path`` belongs to, first (metadata) file first: ``[path]``
    for a single file, every ``-NNNNN-of-MMMMM`` file for a split one.

    Raises:
        FileNotFoundError: a file of the set is missing (all missing ones are named).
        ValueError: the name's numbers are inconsistent (file 0, or past the count).
    """
    path = Path(path)
    m = _SPLIT.match(path.name)
    if m is None or int(m["count"]) == 1:
        return [path]
    no, count = int(m["no"]), int(m["count"])
    if not 1 <= no <= count:
        raise ValueError(f"{path}: split file number {no} is outside 1..{count}")
    width = len(m["no"])
    shards = [path.with_name(f"{m['prefix']}-{i:0{width}d}-of-{m['count']}{path.suffix}")
              for i in range(1, count + 1)]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: a GGUF model split into {count} files; "
                                f"{len(missing)} missing: {missing[:8]}")
    return shards


def split_set(files: list[Path]) -> Optional[Path]:
    """The first file when ``files`` are the files of one split GGUF model (a folder holding
    one split model is not ambiguous), else None.

    Raises:
        FileNotFoundError: every file belongs to one split model, but some of it is missing.
    """
    found = [_SPLIT.match(Path(f).name) for f in files]
    if not files or not all(found) or len({(Path(f).parent, m["prefix"], m["count"])
                                           for f, m in zip(files, found)}) != 1:
        return None
    shards = gguf_shards(Path(files[0]))  # names the missing files
    return shards[0] if len(shards) > 1 and sorted(shards) == sorted(map(Path, files)) else None


def folder_gguf(folder: Path) -> Optional[Path]:
    """The GGUF model a folder holds: its one ``*.gguf`` file, or the first file of the one
    split model its ``*.gguf`` files make up; None otherwise."""
    files = sorted(Path(folder).glob("*.gguf"))
    if len(files) == 1:
        return files[0]
    return split_set(files) if files else None


def _split_key(reader, key: str) -> Optional[int]:
    v = gguf_array(reader, key)  # absent or malformed: None
    return None if v is None or v.size == 0 else int(v[0])


def _readers(path: Path) -> list:
    """Open every file of the model (see :func:`gguf_shards`) and check their split keys."""
    shards = gguf_shards(path)
    readers = [_open_reader(p, kept=True) for p in shards]
    count = _split_key(readers[0], "split.count")
    if len(shards) == 1 and count is not None and count > 1:
        raise ValueError(f"{path}: this file is one of {count} files of a split GGUF model, "
                         "but its name does not say which (expected NAME-0000K-of-"
                         f"{count:05d}.gguf, as gguf-split writes them)")
    if len(shards) > 1:
        for i, (p, r) in enumerate(zip(shards, readers)):
            n, no = _split_key(r, "split.count"), _split_key(r, "split.no")
            if n is not None and n != len(shards):
                raise ValueError(f"{p}: its split.count is {n}, but its name says "
                                 f"{len(shards)} files")
            if no is not None and no != i:
                raise ValueError(f"{p}: its split.no is {no}, but its name makes it file "
                                 f"{i + 1} of {len(shards)} (split.no {i}): files renamed?")
    return readers


def gguf_array(reader, key: str) -> Optional[np.ndarray]:
    """A numeric array metadata field of an open GGUF file (None when absent or unreadable)."""
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return np.concatenate([np.asarray(f.parts[i]).ravel() for i in f.data])
    except Exception:  # noqa: BLE001 - malformed metadata reads as absent
        return None


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

    readers = _readers(path)
    reader = readers[0]  # metadata and tokenizer live in the first file of a split model
    tensors = {}
    for r in readers:
        for t in r.tensors:
            if t.name in tensors:
                raise ValueError(f"{path}: tensor {t.name!r} is stored in two files of the "
                                 "split model")
            tensors[t.name] = t
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
    data = t.data
    if data.dtype.byteorder not in ("=", "|"):  # a big-endian file's F32/F16: dequantize
        data = data.astype(data.dtype.newbyteorder("="))  # would read its bytes as native
    try:
        W = gguf.quants.dequantize(data, t.tensor_type)
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
    vocab = _vocab(reader)
    arch = gguf_text(reader, "general.architecture")
    extra = {"architecture": arch} if arch is not None else {}
    return Head(matrix=matrix, source=str(path), tensor=name, dtype=qtype, tied=tied,
                tied_reason=reason, vocab=vocab,
                vocab_source="GGUF tokenizer.ggml.tokens" if vocab else "", format="gguf",
                extra=extra)
