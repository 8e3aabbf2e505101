"""A SentencePiece tokenizer rebuilt from the one stored in a GGUF file (Gemma, Llama 2,
Mistral v0.1 and other ``tokenizer.ggml.model = "llama"`` files).

llama.cpp's converter copies a SentencePiece BPE model into GGUF piece by piece: the piece
strings (``tokenizer.ggml.tokens``), their scores and their types, whose numbering is
SentencePiece's own (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), and
the normaliser's ``add_dummy_prefix`` as ``tokenizer.ggml.add_space_prefix``. The model is
put back together as a ``ModelProto`` and encoded by the ``sentencepiece`` library itself:
pieces are merged in score order, user-defined pieces match whole, and characters outside the
vocabulary fall back to byte pieces ``<0xXX>``. The aim is the model's own tokenizer, which
llama.cpp's encoder approximates (it matches user-defined pieces on the raw text and puts
the prefix space back after every special token). What the file does not keep cannot be
rebuilt: the normaliser is taken as ``identity`` (the NFKC map of a model trained with
SentencePiece's default ``nmt_nfkc`` is not stored), and user-defined pieces that the
converter only saw in the SentencePiece model (not in ``tokenizer_config.json``) are stored
as normal pieces. Token ids are the file's piece indices, that is, the head's rows.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np

from superkern.probe.gguf_loader import gguf_array
from superkern.probe.vocab import vocab_from_gguf_field

# SentencePiece's ModelProto.SentencePiece.Type, which GGUF's token_type copies
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class SentencePieceTokenizer:
    """A ``sentencepiece`` processor behind the small part of the ``tokenizers.Tokenizer``
    interface that :func:`superkern.analysis.tokens.count_tokens` uses."""

    def __init__(self, processor, name: str):
        self.sp = processor
        self.name = name

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, text: str, add_special_tokens: bool = False):
        ids = self.sp.encode(text)
        return SimpleNamespace(ids=ids, tokens=[self.sp.id_to_piece(i) for i in ids])

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False):
        return [SimpleNamespace(ids=ids) for ids in self.sp.encode(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode(list(ids))


def _numbers(reader, key: str, path) -> np.ndarray:
    if reader.fields.get(key) is None:
        raise ValueError(f"{path}: the GGUF SentencePiece tokenizer has no {key}")
    values = gguf_array(reader, key)
    if values is None:
        raise ValueError(f"{path}: unreadable {key}")
    return values


def _flag(reader, key: str, default: bool) -> bool:
    v = gguf_array(reader, key)  # absent or malformed: the default
    return default if v is None or v.size == 0 else bool(v[0])


def model_proto(tokens: Sequence[str], scores: np.ndarray, types: np.ndarray, *,
                add_dummy_prefix: bool, remove_extra_whitespaces: bool = False,
                path="GGUF file"):
    """A BPE ``ModelProto`` (serialised bytes) from a piece list, scores and types.

    Raises:
        ValueError: lengths differ, a type SentencePiece does not know, no unknown piece,
            repeated pieces, or byte pieces that are not the full set <0x00>..<0xFF>.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    n = len(tokens)
    # llama.cpp writes the spaces of user-defined pieces as ' ' (it matches them on raw text);
    # SentencePiece matches them after escaping whitespace, so they go back to '▁'.
    tokens = [t.replace(" ", "\u2581") if k == USER_DEFINED else t
              for t, k in zip(tokens, types.tolist())]
    if not (scores.size == types.size == n) or n == 0:
        raise ValueError(f"{path}: {n} pieces, {scores.size} scores and {types.size} types; "
                         "they must be as many and non-zero")
    types = np.where(types == 0, NORMAL, types)  # undefined: llama.cpp reads it as normal
    bad = np.flatnonzero((types < NORMAL) | (types > BYTE))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path}: piece {i} ({tokens[i]!r}) has token type {int(types[i])}; "
                         f"SentencePiece types are 0..6 ({bad.size} such pieces)")
    unknown = np.flatnonzero(types == UNKNOWN)
    if unknown.size != 1:
        raise ValueError(f"{path}: a SentencePiece model needs exactly one unknown piece, "
                         f"this one has {unknown.size}")
    normal = scores[types == NORMAL]
    if normal.size > 1 and np.all(normal == normal[0]):
        raise ValueError(f"{path}: all {normal.size} normal pieces have the score "
                         f"{float(normal[0]):g}: the converter had no SentencePiece model "
                         "(merge order lost); pass the model's tokenizer.json or "
                         "tokenizer.model instead")
    if len(set(tokens)) != n:
        raise ValueError(f"{path}: {n - len(set(tokens))} repeated piece strings")
    byte_pieces = {tokens[i] for i in np.flatnonzero(types == BYTE)}
    if byte_pieces and byte_pieces != {f"<0x{b:02X}>" for b in range(256)}:
        raise ValueError(f"{path}: {len(byte_pieces)} byte pieces; byte fallback needs "
                         "exactly <0x00>..<0xFF>")
    m = pb.ModelProto()
    for piece, score, kind in zip(tokens, scores.tolist(), types.tolist()):
        p = m.pieces.add()
        p.piece, p.score, p.type = piece, float(score), int(kind)
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = n
    m.trainer_spec.byte_fallback = bool(byte_pieces)
    m.trainer_spec.unk_id = int(unknown[0])
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = bool(add_dummy_prefix)
    m.normalizer_spec.remove_extra_whitespaces = bool(remove_extra_whitespaces)
    m.normalizer_spec.escape_whitespaces = True
    return m.SerializeToString()


def spm_tokenizer(reader, path: str | Path) -> SentencePieceTokenizer:
    """Rebuild the SentencePiece tokenizer of an open GGUF file (``tokenizer.ggml.model`` is
    ``llama``).

    Raises:
        ValueError: ``sentencepiece`` is not installed, or the stored tokenizer is incomplete
            or inconsistent (named).
    """
    try:
        import sentencepiece as spm
    except ImportError:
        raise ValueError("GGUF SentencePiece tokenizers need the 'sentencepiece' package "
                         "(pip install sentencepiece protobuf)") from None
    field = reader.fields.get("tokenizer.ggml.tokens")
    tokens = vocab_from_gguf_field(field) if field is not None else None
    if not tokens:
        raise ValueError(f"{path}: the GGUF tokenizer has no readable tokenizer.ggml.tokens")
    scores = _numbers(reader, "tokenizer.ggml.scores", path).astype(np.float64)
    types = _numbers(reader, "tokenizer.ggml.token_type", path).astype(np.int64)
    unk = gguf_array(reader, "tokenizer.ggml.unknown_token_id")
    if unk is not None and unk.size and not np.any(types == UNKNOWN):
        # Converters that start from tokenizer.json type every special piece as control and
        # name the unknown piece only here (Gemma 3's GGUF does).
        i = int(unk[0])
        if 0 <= i < types.size and types[i] == CONTROL:
            types[i] = UNKNOWN
        elif 0 <= i < types.size:
            raise ValueError(f"{path}: no piece is typed unknown, and unknown_token_id {i} "
                             f"({tokens[i]!r}) has type {int(types[i])}, not control; the "
                             "SentencePiece model cannot be rebuilt")
    # llama.cpp's default for SentencePiece vocabularies when the key is absent: a prefix space
    proto = model_proto(
        tokens, scores, types, path=path,
        add_dummy_prefix=_flag(reader, "tokenizer.ggml.add_space_prefix", True),
        remove_extra_whitespaces=_flag(reader, "tokenizer.ggml.remove_extra_whitespaces", False))
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(proto)
    except Exception as exc:  # noqa: BLE001 - sentencepiece raises RuntimeError/OSError
        raise ValueError(f"{path}: the GGUF SentencePiece tokenizer does not load ({exc})"
                         ) from None
    return SentencePieceTokenizer(sp, Path(path).stem)
