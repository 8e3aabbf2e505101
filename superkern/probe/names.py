"""Which tensor of a checkpoint is the LM head.

Untied output matrices are preferred; the input embedding is the head of a tied model. Each
pattern matches a tensor named exactly like it or ending in ``"." + pattern`` (a prefix such as
``model.`` or ``transformer.``), except the generic GGUF-style names, which must match exactly
(``output.weight`` would otherwise catch e.g. ``...attention.output.weight``).
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

# Separate LM-head matrices, most specific first.
HEAD_PATTERNS = (
    "lm_head.weight",              # Llama, Mistral, Qwen, OPT, GPT-2 (HF), Gemma (when untied)
    "embed_out.weight",            # Pythia / GPT-NeoX
    "lm_head.linear.weight",       # Phi-1/1.5 (old layout)
    "output_layer.weight",         # ChatGLM
    "output.weight",               # GGUF, Meta's original Llama checkpoints
)
# Input embeddings (the head of a tied model), most specific first.
EMBEDDING_PATTERNS = (
    "model.embed_tokens.weight",           # Llama family, Qwen, Gemma, Mistral
    "model.decoder.embed_tokens.weight",   # OPT, BART decoder
    "language_model.embed_tokens.weight",  # multimodal wrappers (Gemma 3, Mistral 3) in
                                           # transformers >= 4.52: model.language_model.*
    "transformer.wte.weight",              # GPT-2, MPT, GPT-J
    "wte.weight",                          # GPT-2 original checkpoints
    "gpt_neox.embed_in.weight",            # Pythia input side
    "embeddings.word_embeddings.weight",   # BERT family (MiniLM), ELECTRA
    "transformer.word_embeddings.weight",  # Bloom, Falcon
    "word_embeddings.weight",
    "token_embd.weight",                   # GGUF
    "tok_embeddings.weight",               # Meta's original Llama checkpoints
    "embed_tokens.weight",
    "shared.weight",                       # T5 / BART shared embedding
)
EXACT_ONLY = frozenset({"output.weight", "shared.weight", "embed_tokens.weight",
                        "word_embeddings.weight", "wte.weight"})


def _matches(name: str, pattern: str) -> bool:
    if name == pattern:
        return True
    return pattern not in EXACT_ONLY and name.endswith("." + pattern)


def find_pattern(names: Iterable[str], patterns: tuple[str, ...], where: str) -> Optional[str]:
    """First pattern (in priority order) that some name matches; ambiguity is an error.

    Raises:
        ValueError: two or more tensors match the same pattern (they are listed).
    """
    names = list(names)
    for pattern in patterns:
        hits = [n for n in names if _matches(n, pattern)]
        exact = [n for n in hits if n == pattern]
        if len(hits) == 1:
            return hits[0]
        if len(exact) == 1:  # "lm_head.weight" beats "foo.lm_head.weight"
            return exact[0]
        if len(hits) > 1:
            raise ValueError(f"{where}: ambiguous LM head: tensors {sorted(hits)} all match "
                             f"{pattern!r}; choose one with tensor= (CLI: --tensor NAME)")
    return None


def describe_candidates(names: Iterable[str], shape_of: Callable[[str], tuple[int, ...]],
                        limit: int = 25) -> str:
    """Human-readable list of the 2-D tensors (largest first) for an error message."""
    two_d = []
    for n in names:
        try:
            shape = tuple(shape_of(n))
        except Exception:  # noqa: BLE001 - a listing must not fail on one odd tensor
            continue
        if len(shape) == 2:
            two_d.append((shape[0] * shape[1], n, shape))
    if not two_d:
        return "the file has no 2-D tensors at all"
    two_d.sort(key=lambda t: (-t[0], t[1]))
    lines = [f"{n} {list(s)}" for _, n, s in two_d[:limit]]
    more = f" ... and {len(two_d) - limit} more" if len(two_d) > limit else ""
    return "2-D tensors: " + ", ".join(lines) + more


def resolve_tensor(names: list[str], tensor: Optional[str], where: str,
                   shape_of: Callable[[str], tuple[int, ...]]) -> tuple[str, str]:
    """Pick the head tensor among ``names``.

    Args:
        names: every tensor name of the checkpoint.
        tensor: an explicit choice (exact name, or a unique suffix after a ``.``) or None.
        where: the file, for messages.
        shape_of: name -> shape; only called to build error messages.

    Returns:
        ``(name, kind)`` with kind ``"head"`` (a separate output matrix), ``"embedding"`` (the
        input embedding, i.e. a tied head) or ``"explicit"`` (chosen by the caller, not a
        known name).

    Raises:
        ValueError: no match (lists the 2-D candidates with shapes) or an ambiguous match.
    """
    if tensor is not None:
        if tensor in names:
            chosen = tensor
        else:
            hits = [n for n in names if n.endswith("." + tensor)]
            if len(hits) > 1:
                raise ValueError(f"{where}: tensor={tensor!r} is ambiguous: {sorted(hits)}")
            if not hits:
                raise ValueError(f"{where}: no tensor named {tensor!r}; "
                                 f"{describe_candidates(names, shape_of)}")
            chosen = hits[0]
        if any(_matches(chosen, p) for p in HEAD_PATTERNS):
            return chosen, "head"
        if any(_matches(chosen, p) for p in EMBEDDING_PATTERNS):
            return chosen, "embedding"
        return chosen, "explicit"
    head = find_pattern(names, HEAD_PATTERNS, where)
    if head is not None:
        return head, "head"
    emb = find_pattern(names, EMBEDDING_PATTERNS, where)
    if emb is not None:
        return emb, "embedding"
    known = ", ".join(HEAD_PATTERNS[:3] + EMBEDDING_PATTERNS[:3] + ("token_embd.weight",))
    raise ValueError(f"{where}: no LM head or token embedding found among {len(names)} tensors "
                     f"(looked for {known}, ... with or without prefixes); pass tensor= "
                     f"(CLI: --tensor NAME). {describe_candidates(names, shape_of)}")


def names_match(names: Iterable[str], tensor: Optional[str] = None) -> bool:
    """True if :func:`resolve_tensor` would find something among ``names`` (possibly an
    ambiguity, which it reports): the named tensor, or a known head or embedding name."""
    names = list(names)
    if tensor is not None:
        return any(n == tensor or n.endswith("." + tensor) for n in names)
    return any(_matches(n, p) for n in names for p in HEAD_PATTERNS + EMBEDDING_PATTERNS)


def has_head(names: Iterable[str]) -> bool:
    """True if some tensor looks like a separate LM-head matrix."""
    return any(_matches(n, p) for n in names for p in HEAD_PATTERNS)
