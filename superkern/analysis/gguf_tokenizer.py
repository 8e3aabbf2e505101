"""A tokenizer rebuilt from the one stored in a GGUF file.

Two kinds are rebuilt:
- byte-level BPE (``tokenizer.ggml.model = "gpt2"``) as a ``tokenizers`` tokenizer, for the
  pre-tokenizer families whose splitting rule is one of four, grouped as llama.cpp groups
  them: GPT-2's regex; single digits split off first and then GPT-2's regex (StarCoder,
  SmolLM and kin); Llama 3's regex; Qwen2's. Vocabulary and merges come from the file.
- SentencePiece BPE (``"llama"``: Gemma, Llama 2 and kin) by :mod:`.gguf_spm`.

Token ids are the head's row indices. Anything else (other regexes, WordPiece, Unigram) is
refused by name rather than approximated.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from superkern.probe.gguf_loader import _open_reader, gguf_array, gguf_shards, gguf_text
from superkern.probe.vocab import vocab_from_gguf_field

# tokenizer.ggml.pre values: digits split one by one, then GPT-2's regex
DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                    "minerva-7b"}
# tokenizer.ggml.pre values: GPT-2's regex alone
GPT2_ONLY = {"gpt-2", "phi-2", "jina-es", "jina-de", "jina-v1-en", "jina-v2-es", "jina-v2-de",
             "jina-v2-code", "gigachat", "roberta-bpe", "a.x-4.0", "mellum", "mpt", "olmo",
             "jais"}


# tokenizer.ggml.pre values of llama.cpp's LLAMA3 group: Llama 3's regex (numbers in runs of
# up to three digits), applied before byte-level mapping, and whole words found in the
# vocabulary taken as they are ("ignore_merges", as Llama 3's tokenizer.json has it)
LLAMA3 = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
          "lfm2"}
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# ... and of its QWEN2 group (those whose tokenizer.json is Qwen2's): the same regex with
# single digits, after the NFC normalisation Qwen2's tokenizer.json applies
QWEN2 = {"qwen2", "deepseek-r1-qwen"}
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
SUPPORTED = DIGITS_THEN_GPT2 | GPT2_ONLY | LLAMA3 | QWEN2
USER_DEFINED = 4  # tokenizer.ggml.token_type of an added token that is not special


def _pre_tokenizer(pre: str):
    """The ``tokenizers`` pre-tokenizer of a supported llama.cpp pre-tokenizer name."""
    from tokenizers import Regex, pre_tokenizers

    if pre in LLAMA3 | QWEN2:
        regex = LLAMA3_REGEX if pre in LLAMA3 else QWEN2_REGEX
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        byte_level])
    return byte_level


def gguf_tokenizer(path: str | Path):
    """``(tokenizer, pre)`` rebuilt from a GGUF file's byte-level BPE or SentencePiece
    tokenizer (``pre`` is ``"sentencepiece"`` for the second).

    Raises:
        ValueError: the file has no tokenizer, or one of a kind not rebuilt here (named).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    reader = _open_reader(gguf_shards(Path(path))[0])  # a split model's metadata file
    kind = gguf_text(reader, "tokenizer.ggml.model")
    pre = (gguf_text(reader, "tokenizer.ggml.pre") or "default").lower()
    if kind is None:
        raise ValueError(f"{path}: the GGUF file stores no tokenizer")
    if kind == "llama":
        from superkern.analysis.gguf_spm import spm_tokenizer

        return spm_tokenizer(reader, path), "sentencepiece"
    if kind != "gpt2" or pre not in SUPPORTED:
        raise ValueError(f"{path}: tokenizer model {kind!r} with pre-tokenizer {pre!r} is not "
                         f"rebuilt (supported: model 'llama' (SentencePiece), or 'gpt2' with "
                         f"pre in {sorted(SUPPORTED)}); pass a tokenizer.json")
    fields = {k: reader.fields.get(f"tokenizer.ggml.{k}") for k in ("tokens", "merges")}
    missing = [k for k, f in fields.items() if f is None]
    if missing:
        raise ValueError(f"{path}: the GGUF tokenizer has no tokenizer.ggml.{missing[0]}")
    tokens = vocab_from_gguf_field(fields["tokens"])
    merges = vocab_from_gguf_field(fields["merges"])
    if not tokens or merges is None:
        raise ValueError(f"{path}: unreadable tokenizer.ggml.tokens / merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path}: {len(tokens) - len(vocab)} repeated token strings")
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    bad = next((m for m, p in zip(merges, pairs) if len(p) != 2), None)
    if bad is not None:
        raise ValueError(f"{path}: merge {bad!r} is not two tokens separated by a space")
    try:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre in LLAMA3))
    except Exception as exc:  # noqa: BLE001 - the Rust side raises a bare Exception
        raise ValueError(f"{path}: the GGUF tokenizer does not build ({exc})") from None
    tok.pre_tokenizer = _pre_tokenizer(pre)
    if pre in QWEN2:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    types = gguf_array(reader, "tokenizer.ggml.token_type")
    if types is not None and types.size == len(tokens):
        # User-defined tokens (an added token that is not special: Qwen3's <think>) match
        # whole, on the raw text, as in llama.cpp and tokenizer.json; control tokens do not.
        user = [tokens[i] for i in np.flatnonzero(types == USER_DEFINED)]
        if user:
            tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    return tok, pre
