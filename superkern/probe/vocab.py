"""Token strings by id from a tokenizer file, without the ``tokenizers`` package.

``tokenizer.json`` (Hugging Face fast tokenizers: WordPiece / BPE ``vocab`` dicts, Unigram
``[token, score]`` lists, plus ``added_tokens``) or ``vocab.txt`` (one token per line, id = line
number). Tokens are kept as stored (e.g. GPT-2's ``Ġ`` for a leading space).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

# Token ids at or past this are ignored: the largest vocabularies have ~262k tokens, and one
# corrupt id (1e12) must not allocate a list of that length.
MAX_TOKEN_ID = 1 << 22


def _valid_id(i: Any) -> bool:
    return isinstance(i, int) and not isinstance(i, bool) and 0 <= i < MAX_TOKEN_ID


def _from_tokenizer_json(path: Path) -> Optional[list[str]]:
    data: Any = json.loads(path.read_text(encoding="utf-8"))
    by_id: dict[int, str] = {}
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):
        for tok, i in vocab.items():
            if _valid_id(i):
                by_id[i] = str(tok)
    elif isinstance(vocab, list):  # Unigram: [[token, score], ...], id = position
        for i, entry in enumerate(vocab[:MAX_TOKEN_ID]):
            if isinstance(entry, (list, tuple)) and entry:
                by_id[i] = str(entry[0])
    added_tokens = data.get("added_tokens") if isinstance(data, dict) else None
    for added in added_tokens if isinstance(added_tokens, list) else []:
        if isinstance(added, dict) and _valid_id(added.get("id")):
            by_id[added["id"]] = str(added.get("content", ""))
    if not by_id:
        return None
    out = [""] * (max(by_id) + 1)
    for i, tok in by_id.items():
        out[i] = tok
    return out


def _from_vocab_txt(path: Path) -> Optional[list[str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines or None


def vocab_from_folder(folder: Path) -> tuple[Optional[list[str]], str]:
    """``(tokens, source)`` from ``tokenizer.json`` or ``vocab.txt`` in ``folder``; ``(None, "")``
    when neither exists or can be parsed (a broken tokenizer file must not stop the probe)."""
    for fname, parse in (("tokenizer.json", _from_tokenizer_json), ("vocab.txt", _from_vocab_txt)):
        path = folder / fname
        if path.is_file():
            try:
                tokens = parse(path)
            except Exception:  # noqa: BLE001 - any malformed file: no vocabulary, not no probe
                continue
            if tokens:
                return tokens, str(path)
    return None, ""


def vocab_from_gguf_field(field: Any) -> Optional[list[str]]:
    """Token strings from a GGUF ``tokenizer.ggml.tokens`` field (array of strings)."""
    try:
        return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
    except Exception:  # noqa: BLE001 - malformed metadata: no vocabulary rather than no probe
        return None
