"""PyTorch checkpoints: a safe ``torch.load`` (weights only) and finding the state dict that
holds the head inside a training checkpoint."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

from superkern.probe.names import has_head, names_match, resolve_tensor

# Words of torch's weights-only errors that mean "this pickle needs code to load" (a class,
# a function such as os.system), as opposed to a stream that is not a valid pickle at all.
_REFUSAL_MARKS = ("unsupported global", "safe_globals", "allowlist")

# Keys under which training checkpoints nest the state dict, most common first.
WRAPPERS = ("state_dict", "model_state_dict", "model", "module", "ema", "net", "network")


def torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped when the file allows it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the pickle needs arbitrary Python objects ("refused"), or the file is not a
            readable checkpoint (truncated, corrupt, or another format under a torch suffix).
    """
    def load(mmap: bool) -> Any:
        if os.fspath(path).endswith(".safetensors"):
            # torch.load hands any path with this suffix to safetensors; a pickle shard so
            # named (told apart by its content) is read through a file object, unmapped
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            obj = load(True)  # zip checkpoints: memory-mapped, tensors read on demand
            _check_record_sizes(path, obj)
            return obj
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return load(False)  # legacy (non-zip) format
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, bad zip, EOF, KeyError
        msg = str(exc)
        if any(mark in msg.lower() for mark in _REFUSAL_MARKS):
            raise ValueError(f"{path}: refused: loading it needs unpickling arbitrary Python "
                             "objects (torch.load weights_only=True failed). Re-save it as a "
                             "state dict of tensors, or as safetensors.") from None
        lines = [s.strip() for s in msg.splitlines() if s.strip()]
        detail = next((s for s in lines if "nsupported" in s), lines[0] if lines else "")
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                         f"{detail}); it may be truncated, corrupt or another format") from None


def _check_record_sizes(path: Path, obj: Any) -> None:
    """A memory-mapped load does not compare a tensor's storage with its zip record (a plain
    load does): a record cut short would be read on into the bytes after it, garbage with no
    error. The storages the pickle builds must fit in the data records the file holds."""
    import re
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as z:
        held = sum(zi.file_size for zi in z.infolist()
                   if re.search(r"(^|/)data/[^/]+$", zi.filename))
    storages: dict[int, int] = {}

    def walk(o: Any, depth: int) -> None:
        if depth > 32:
            return
        if isinstance(o, torch.Tensor):
            if o.layout == torch.strided and o.device.type != "meta" and not o.is_nested:
                st = o.untyped_storage()
                storages[st.data_ptr()] = st.nbytes()
        elif isinstance(o, dict):
            for v in o.values():
                walk(v, depth + 1)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v, depth + 1)
    walk(obj, 0)
    need = sum(storages.values())
    if need > held:
        raise ValueError(f"its tensors need {need} bytes of storage but its data records hold "
                         f"{held}: a record is cut short or missing")


def _tensors(obj: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def pick_state_dict(obj: dict, tensor: Optional[str], path: Path):
    """``(state dict, name, kind, prefix, heads elsewhere)`` of the head in a checkpoint dict.

    The model's own state dict is searched first: the top level and the usual wrappers
    (``{"model": sd, "step": 5}``, ``{"model_state_dict": sd, "epoch": 3}``, ``WRAPPERS``
    order); other nested dicts (``{"teacher": sd}``, ``{"extra": {...}}``) only when those
    hold nothing that matches. Within a tier a separate LM head beats an input embedding, and
    among equals the first wins. ``prefix`` is the key of the nested dict ("" at the top
    level): ``prefix + "." + name`` names the tensor, and works as ``tensor=`` to pick another
    copy (``ema.lm_head.weight``). ``heads elsewhere``: LM-head names (prefixed) in the other
    dicts, when an input embedding was chosen (its tying is then unknown).
    """
    wrapped = [k for k in WRAPPERS if isinstance(obj.get(k), dict)]
    others = [k for k, v in obj.items() if isinstance(v, dict) and k not in wrapped]
    cands = {k: _tensors(obj[k]) if k else _tensors(obj) for k in [""] + wrapped + others}
    cands = {k: sd for k, sd in cands.items() if sd}
    if not cands:
        raise ValueError(f"{path}: holds a {type(obj).__name__} with no tensors at its top level "
                         f"or under {wrapped + others or 'any key'}; expected a state dict "
                         "(name -> tensor)")
    for tier in ([k for k in [""] + wrapped if k in cands], [k for k in others if k in cands]):
        found = []
        for k in tier:
            sd = cands[k]
            if not names_match(sd, tensor):
                continue
            try:
                name, kind = resolve_tensor(list(sd), tensor, str(path),
                                            lambda n, sd=sd: tuple(sd[n].shape))
            except ValueError:
                if found:  # an ambiguity further on does not undo a match
                    continue
                raise
            found.append((sd, name, kind, k))
            if tensor is not None or kind == "head":
                return (*found[-1], [])
        if found:
            chosen = found[0][3]
            elsewhere = [f"{k}.{n}" if k else n for k, sd in cands.items() if k != chosen
                         for n in sd if has_head([n])]
            return (*found[0], elsewhere)
    # Nothing matched: resolve over everything, prefixed by where it sits, so that the error
    # lists every candidate (or a prefixed tensor= name such as "model.lm_head.weight" works).
    flat = {f"{k}.{n}" if k else n: t for k, sd in cands.items() for n, t in sd.items()}
    name, kind = resolve_tensor(list(flat), tensor, str(path), lambda n: tuple(flat[n].shape))
    return flat, name, kind, "", []
