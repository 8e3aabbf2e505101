"""``load_head``: find and load the LM head of a checkpoint, touching nothing else.

Formats: safetensors (one file, a Hugging Face folder, or shards through
``model.safetensors.index.json``, opening only the shard that holds the head), GGUF, ``.npy``,
PyTorch state dicts (``torch.load(weights_only=True)``), and in-memory tensors / modules.
Every user error is a ValueError or FileNotFoundError naming the path and what is wrong.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from superkern.ops._checks import native_tensor
from superkern.probe.head import Head
from superkern.probe.memory import from_array, from_module
from superkern.probe.names import has_head, resolve_tensor
from superkern.probe.packages import resolve_alias
from superkern.probe.torch_files import pick_state_dict, torch_load
from superkern.probe.vocab import vocab_from_folder

_MAGIC = {b"GGUF": "gguf", b"\x93NUMPY": "npy", b"PK\x03\x04": "torch"}
_SUFFIX = {".safetensors": "safetensors", ".gguf": "gguf", ".npy": "npy", ".pt": "torch",
           ".pth": "torch", ".bin": "torch", ".json": "index"}


def load_head(source: Any, tensor: Optional[str] = None, *,
              vocab: Optional[list[str]] = None) -> Head:
    """Load an LM head (or token embedding) as a :class:`Head`.

    Args:
        source: a path (file or Hugging Face model folder), an installed-package alias
            (``"minilm"``, ``"smollm2"``, ``"gemma3-270m"``), a Hugging Face Hub repo id
            (``"ORG/NAME[@REV][/FILE]"``, fetching only the head's file: see
            :mod:`superkern.probe.hub`), a (n, m) torch tensor or numpy array, a torch module
            with ``get_output_embeddings()``, or a ``Head``.
        tensor: the tensor name to use instead of the automatic choice (untied heads such as
            ``lm_head.weight`` first, then tied input embeddings).
        vocab: token strings to attach (overrides the checkpoint's tokenizer).

    Raises:
        FileNotFoundError: the path, or a shard named by an index file, does not exist.
        ValueError: unreadable / corrupt file, no or ambiguous head tensor, a head that is not
            2-D or not floating point, a pickle that needs arbitrary code to load.
    """
    t0 = time.perf_counter()
    if isinstance(source, Head):
        head = dataclasses.replace(source) if vocab is not None else source  # caller's kept
    elif isinstance(source, (torch.Tensor, np.ndarray)):
        head = from_array(source)
    elif isinstance(source, torch.nn.Module):
        head = from_module(source)
    elif isinstance(source, (str, os.PathLike)):
        head = _from_path(source, tensor)
    else:
        raise ValueError(f"cannot load an LM head from a {type(source).__name__}; pass a path, "
                         "a tensor/array, or a torch module")
    _check_matrix(head)
    if vocab is not None:
        if isinstance(vocab, (str, bytes, os.PathLike)) or not isinstance(vocab, Sequence):
            raise ValueError(f"vocab must be a list of token strings, one per row, got a "
                             f"{type(vocab).__name__}")
        if len(vocab) > head.n:  # shorter is fine: padded vocabularies leave rows unnamed
            raise ValueError(f"vocab has {len(vocab)} tokens but the head has only {head.n} "
                             "rows")
        head.vocab, head.vocab_source = [str(t) for t in vocab], "given"
    if not head.load_seconds:
        head.load_seconds = time.perf_counter() - t0
    return head


_ENGINE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _check_matrix(head: Head) -> None:
    W = head.matrix
    where = f"{head.source}: tensor {head.tensor!r}"
    if W.is_nested:
        raise ValueError(f"{where} is a nested tensor (rows of different lengths); an LM head "
                         "must be one 2-D matrix (n tokens, m width)")
    if W.device.type == "meta":
        raise ValueError(f"{where} is on the meta device: shape {list(W.shape)} with no values "
                         "(saved from a model built without weights); save the real weights")
    if W.layout != torch.strided:  # a sparse (COO, CSR, ...) matrix: the kernels read dense rows
        if W.dim() != 2:
            raise ValueError(f"{where} is a {W.layout} tensor of shape {list(W.shape)}; an LM "
                             "head must be 2-D (n tokens, m width)")
        head.matrix = W = W.to_dense()
    if W.dim() != 2:
        raise ValueError(f"{where} has shape {list(W.shape)}; an LM head must be 2-D "
                         "(n tokens, m width)")
    if str(W.dtype).endswith("_x2"):  # float4_e2m1fn_x2: two 4-bit values per element
        raise ValueError(f"{where} has dtype {W.dtype}, which packs two values per element "
                         f"(the stored shape {list(W.shape)} stands for {W.shape[0]} x "
                         f"{2 * W.shape[1]}); dequantise it to a float dtype first")
    if not W.dtype.is_floating_point:
        raise ValueError(f"{where} has dtype {W.dtype}; an LM head must be floating point")
    if W.shape[0] == 0 or W.shape[1] == 0:
        raise ValueError(f"{where} is empty: shape {list(W.shape)}")
    if W.dtype not in _ENGINE_DTYPES:  # float8 variants: widened (head.dtype keeps the stored one)
        try:
            head.matrix = W.to(torch.float32)
        except (RuntimeError, NotImplementedError) as exc:
            raise ValueError(f"{where} has dtype {W.dtype}, which this torch cannot convert to "
                             f"float32 ({type(exc).__name__}); dequantise it first") from None


def _from_path(source: Any, tensor: Optional[str]) -> Head:
    text = os.fspath(source)
    if not text.strip():  # Path('') is '.': an empty argument must not mean "here"
        raise ValueError(f"empty path {text!r}: name a checkpoint file or folder")
    alias = resolve_alias(text) if not os.path.exists(text) else None
    if alias is not None:
        path, alias_tensor, name = alias
        head = _from_path(path, tensor or alias_tensor)
        head.name = name
        return head
    path = Path(text)
    if not path.exists():
        from superkern.probe.hub import load_hub_head, parse_repo_ref

        ref = parse_repo_ref(text)  # ORG/NAME[@REV][/FILE]: a local path always wins
        if ref is not None:
            return load_hub_head(ref, tensor)
        raise FileNotFoundError(f"{path}: no such file or directory (nor a package alias: "
                                "minilm, smollm2, gemma3-270m; nor a Hub repo id ORG/NAME)")
    t0 = time.perf_counter()
    head = _load_folder(path, tensor) if path.is_dir() else _load_file(path, tensor)
    head.load_seconds = time.perf_counter() - t0
    if not head.name:
        head.name = path.name if path.is_dir() else path.stem
    return head


def _sniff(path: Path) -> str:
    """Format from the magic bytes (GGUF, npy, zip, a safetensors header) first, then the
    suffix."""
    with open(path, "rb") as f:
        start = f.read(16)
    for magic, k in _MAGIC.items():
        if start.startswith(magic) and not (k == "torch" and path.suffix == ".npz"):
            return k
    # safetensors: an 8-byte little-endian header length, then the JSON header. Checked before
    # the suffix: a safetensors file saved as .bin or .pt is still one.
    if len(start) > 8 and start[8:9] == b"{" and \
            2 <= int.from_bytes(start[:8], "little") <= path.stat().st_size - 8:
        return "safetensors"
    kind = _SUFFIX.get(path.suffix.lower())
    if kind:
        return kind
    raise ValueError(f"{path}: unrecognised format (expected .safetensors, .gguf, .npy, "
                     ".pt/.pth/.bin, an index .json or a model folder)")


def _load_file(path: Path, tensor: Optional[str]) -> Head:
    kind = _sniff(path)
    if kind == "gguf":
        from superkern.probe.gguf_loader import load_gguf

        return load_gguf(path, tensor)
    if kind == "npy":
        return _load_npy(path, tensor)
    if kind == "index":
        return _load_index(path, tensor)
    if kind == "torch":
        sd = torch_load(path)
        return _from_state_dict(sd, tensor, path, "torch")
    return _load_safetensors(path, tensor)


def _load_folder(path: Path, tensor: Optional[str]) -> Head:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).is_file():
            return _load_index(path / index, tensor)
    if (path / "model.safetensors").is_file():
        return _load_safetensors(path / "model.safetensors", tensor)
    for pattern in ("*.safetensors", "*.gguf", "pytorch_model.bin", "*.pt", "*.pth", "*.npy"):
        found = sorted(path.glob(pattern))
        if len(found) > 1 and pattern == "*.gguf":
            from superkern.probe.gguf_loader import split_set

            first = split_set(found)
            found = [first] if first is not None else found
        if len(found) == 1:
            return _load_file(found[0], tensor)
        if len(found) > 1:
            raise ValueError(f"{path}: {len(found)} files match {pattern} and there is no index "
                             f"file; pass one file: {[f.name for f in found[:10]]}")
    raise ValueError(f"{path}: no model weights found (looked for model.safetensors, an index "
                     "json, *.safetensors, *.gguf, pytorch_model.bin, *.pt, *.npy)")


# --- safetensors -------------------------------------------------------------------------

def _safe_open(path: Path):
    """Open a safetensors file lazily (header only); corrupt files become ValueError."""
    import safetensors

    try:
        return safetensors.safe_open(os.fspath(path), framework="pt")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends: a bad header
        raise ValueError(f"{path}: not a readable safetensors file ({type(exc).__name__}: "
                         f"{exc}); it may be truncated or corrupt") from None


def _read_config(folder: Path) -> dict:
    """The model folder's config.json; {} when there is none, and ``{"_unreadable": why}``
    when there is one that cannot be read (the tying note then says so)."""
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        return {"_unreadable": f"{type(exc).__name__}: {exc}"}
    if not isinstance(cfg, dict):
        return {"_unreadable": f"a JSON {type(cfg).__name__}, not an object"}
    if "tie_word_embeddings" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg, "tie_word_embeddings": cfg["text_config"].get("tie_word_embeddings")}
    return cfg


def _tie_info(kind: str, name: str, names: list[str], cfg: dict) -> tuple[Optional[bool], str]:
    tie = cfg.get("tie_word_embeddings")
    if kind == "head":
        if tie is True:
            return True, (f"separate tensor {name!r} stored, but config.json has "
                          "tie_word_embeddings=true (a stored copy of the embedding)")
        return False, f"separate LM-head tensor {name!r}"
    if kind == "embedding":
        if has_head(names):
            return False, "input embedding chosen explicitly; the checkpoint also has an LM head"
        if tie is True:
            return True, "no LM-head tensor; config.json has tie_word_embeddings=true"
        if tie is False:
            return False, ("no LM-head tensor stored although config.json has "
                           "tie_word_embeddings=false; using the input embedding")
        if cfg.get("_unreadable"):
            return True, ("no LM-head tensor: only the input embedding is present (config.json "
                          f"is unreadable: {cfg['_unreadable']})")
        return True, ("no LM-head tensor: only the input embedding is present "
                      "(config.json does not set tie_word_embeddings)")
    return None, "tensor chosen explicitly; tying unknown"


def _get_tensor(f, path: Path, name: str) -> torch.Tensor:
    try:
        return f.get_tensor(name)
    except Exception as exc:  # noqa: BLE001 - short data region, bad dtype
        raise ValueError(f"{path}: cannot read tensor {name!r} ({type(exc).__name__}: {exc}); "
                         "the file may be truncated or corrupt") from None


def _shape_checked(f, path: Path, name: str) -> None:
    shape = list(f.get_slice(name).get_shape())
    if len(shape) != 2:
        raise ValueError(f"{path}: tensor {name!r} has shape {shape}; an LM head must be 2-D "
                         "(n tokens, m width)")


def _finish(W: torch.Tensor, path: Path, name: str, kind: str, names: list[str], fmt: str,
            folder: Path) -> Head:
    tied, reason = _tie_info(kind, name, names, _read_config(folder))
    vocab, vsrc = vocab_from_folder(folder)
    dtype = str(W.dtype).replace("torch.", "")
    return Head(matrix=W, source=str(path), tensor=name, dtype=dtype, tied=tied,
                tied_reason=reason, vocab=vocab, vocab_source=vsrc, format=fmt)


def _load_safetensors(path: Path, tensor: Optional[str]) -> Head:
    with _safe_open(path) as f:
        names = list(f.keys())
        name, kind = resolve_tensor(names, tensor, str(path),
                                    lambda n: tuple(f.get_slice(n).get_shape()))
        _shape_checked(f, path, name)
        W = _get_tensor(f, path, name)
    return _finish(W, path, name, kind, names, "safetensors", path.parent)


def read_weight_map(index: Path) -> dict[str, str]:
    """A sharded checkpoint's ``weight_map`` (tensor name -> shard file beside the index);
    ValueError when the json is unreadable or has no ``weight_map`` of strings."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{index}: not a readable index json ({exc})") from None
    wmap = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
        raise ValueError(f"{index}: not a sharded-checkpoint index (no 'weight_map' mapping "
                         "tensor names to shard files)")
    return wmap


def _load_index(index: Path, tensor: Optional[str]) -> Head:
    """Sharded checkpoint: read the index, open only the shard that holds the head."""
    wmap = read_weight_map(index)
    names = list(wmap)
    folder = index.parent

    loaded: dict[Path, Any] = {}
    kind_of = functools.cache(lambda shard: _shard_kind(index, shard))  # one sniff per shard

    def shape_of(n: str) -> tuple[int, ...]:  # error messages only: reads shard headers
        shard = folder / wmap[n]
        if kind_of(shard) == "safetensors":
            with _safe_open(shard) as f:
                return tuple(f.get_slice(n).get_shape())
        if shard not in loaded:  # one (memory-mapped) load per shard, not one per name
            loaded[shard] = torch_load(shard)
        return tuple(loaded[shard][n].shape)

    name, kind = resolve_tensor(names, tensor, str(index), shape_of)
    shard = folder / wmap[name]
    if not shard.is_file():
        raise FileNotFoundError(f"{index}: tensor {name!r} is in shard {wmap[name]!r}, which "
                                f"does not exist ({shard})")
    if kind_of(shard) == "torch":
        head = _from_state_dict(torch_load(shard), name, shard, "torch-sharded", names=names)
        head.tied, head.tied_reason = _tie_info(kind, name, names, _read_config(folder))
        return head
    with _safe_open(shard) as f:
        if name not in f.keys():
            raise ValueError(f"{index}: says {name!r} is in {wmap[name]!r}, but that shard has "
                             "no such tensor")
        _shape_checked(f, shard, name)
        W = _get_tensor(f, shard, name)
    return _finish(W, shard, name, kind, names, "safetensors-sharded", folder)


def _shard_kind(index: Path, shard: Path) -> str:
    """"safetensors" or "torch", by content (any suffix case); ValueError for anything else."""
    kind = _sniff(shard)
    if kind not in ("safetensors", "torch"):
        raise ValueError(f"{index}: shard {shard.name!r} is a {kind} file; a sharded "
                         "checkpoint's shards must be safetensors or PyTorch checkpoints")
    return kind


# --- numpy, torch ------------------------------------------------------------------------

def _load_npy(path: Path, tensor: Optional[str]) -> Head:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - bad magic, short file, pickled object arrays
        raise ValueError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc}); "
                         "it may be truncated or corrupt") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: expected a single .npy array, got {type(arr).__name__}")
    if arr.ndim != 2:
        raise ValueError(f"{path}: array has shape {list(arr.shape)}; an LM head must be 2-D "
                         "(n tokens, m width)")
    if arr.dtype.kind != "f":
        raise ValueError(f"{path}: array has dtype {arr.dtype}; an LM head must be floating point")
    if tensor is not None:
        raise ValueError(f"{path}: a .npy file holds one array; tensor={tensor!r} (--tensor) "
                         "does not apply to it")
    W = native_tensor(arr, copy=True)  # leaves the read-only memory map behind
    vocab, vsrc = vocab_from_folder(path.parent)
    return Head(matrix=W, source=str(path), tensor="<array>", dtype=str(arr.dtype),
                tied=None, tied_reason="a bare array: tying unknown", vocab=vocab,
                vocab_source=vsrc, format="npy")


def _from_state_dict(obj: Any, tensor: Optional[str], path: Path, fmt: str,
                     names: Optional[list[str]] = None) -> Head:
    prefix, elsewhere = "", []
    if isinstance(obj, torch.Tensor):  # a file holding one bare tensor: that is the head
        sd, name, kind = {tensor or "<tensor>": obj}, tensor or "<tensor>", "explicit"
    elif isinstance(obj, dict):
        sd, name, kind, prefix, elsewhere = pick_state_dict(obj, tensor, path)
    else:
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a tensor or a state dict "
                         "(name -> tensor)")
    W = sd[name]
    shown = f"{prefix}.{name}" if prefix else name  # which copy: "ema.lm_head.weight"
    if W.dim() != 2:
        raise ValueError(f"{path}: tensor {shown!r} has shape {list(W.shape)}; an LM head must "
                         "be 2-D (n tokens, m width)")
    head = _finish(W.detach(), path, shown, kind, names or list(sd), fmt, path.parent)
    if kind == "embedding" and elsewhere:  # the model's dict has no head; another dict does
        head.tied, head.tied_reason = None, (
            f"input embedding of the model's state dict; {elsewhere[0]!r} elsewhere in the "
            f"checkpoint is an LM head (tensor={elsewhere[0]!r} takes it): tying unknown")
    return head
