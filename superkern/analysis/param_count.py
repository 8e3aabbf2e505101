"""Exact parameter counts of the size-width models (paper Fig. 23) from their published
configurations, one formula per architecture family.

:func:`param_count` counts every weight, bias and norm scale a checkpoint stores, as its
modelling code builds them, and splits the total the way Kaplan et al. (2020) do: the
*non-embedding* count leaves out the token embedding, a learned position table and, when the
output layer is not tied to the input embedding, the unembedding. Everything else counts as
non-embedding, OPT-350m's ``project_in`` / ``project_out`` (512 <-> 1024) included, since they
are ordinary matrix multiplies on the residual stream. Buffers (causal masks, rotary
frequencies) are not parameters.

The configurations live in ``data/llm_configs.csv`` (columns explained there); the
``params_exact`` and ``params_non_embedding`` columns of ``data/llm_sizes.csv`` are these
counts, and a test keeps the two files in step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from superkern.analysis.tables import read_csv_columns

CONFIGS = Path(__file__).resolve().parent.parent / "data" / "llm_configs.csv"
FIELDS = ("layers", "hidden", "ffn", "heads", "kv_heads", "vocab", "positions", "tied",
          "embed_dim", "final_norm")


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _gpt2(c: Mapping[str, int]) -> tuple[int, int]:
    """GPT-2: pre-LN blocks of LayerNorm (scale and shift), fused q/k/v and output
    projections and a 2-layer MLP, all with biases; a final LayerNorm."""
    d, f = c["hidden"], c["ffn"]
    block = (2 * d + _linear(d, 3 * d) + _linear(d, d)
             + 2 * d + _linear(d, f) + _linear(f, d))
    return _tables(c, d), c["layers"] * block + 2 * d


def _opt(c: Mapping[str, int]) -> tuple[int, int]:
    """OPT: as GPT-2 with separate q, k, v projections (the same count); the token
    embedding may be narrower than the model (``embed_dim``), joined by bias-free
    ``project_in`` and ``project_out``; the post-LN OPT-350m has no final LayerNorm."""
    d, f, e = c["hidden"], c["ffn"], c["embed_dim"]
    block = 4 * _linear(d, d) + 2 * d + _linear(d, f) + _linear(f, d) + 2 * d
    projections = 2 * _linear(e, d, bias=False) if e != d else 0
    return _tables(c, e), c["layers"] * block + projections + 2 * d * c["final_norm"]


def _gpt_neox(c: Mapping[str, int]) -> tuple[int, int]:
    """GPT-NeoX (Pythia): two LayerNorms per block (parallel attention and MLP), fused q/k/v,
    biases everywhere, rotary positions (no table), a final LayerNorm, an untied
    ``embed_out``."""
    d, f = c["hidden"], c["ffn"]
    block = (4 * d + _linear(d, 3 * d) + _linear(d, d) + _linear(d, f) + _linear(f, d))
    return _tables(c, d), c["layers"] * block + 2 * d


def _qwen2(c: Mapping[str, int]) -> tuple[int, int]:
    """Qwen2 (Qwen2.5): RMSNorm (a scale only), grouped-query attention with biases on q, k
    and v but not on the output projection, a bias-free SwiGLU MLP (gate, up, down), rotary
    positions, a final RMSNorm."""
    d, f = c["hidden"], c["ffn"]
    if d % c["heads"] or c["heads"] % c["kv_heads"]:
        raise ValueError(f"qwen2: heads {c['heads']} must divide hidden {d} and be a multiple "
                         f"of kv_heads {c['kv_heads']}")
    kv = c["kv_heads"] * (d // c["heads"])
    block = (d + _linear(d, d) + 2 * _linear(d, kv) + _linear(d, d, bias=False)
             + d + 3 * _linear(d, f, bias=False))
    return _tables(c, d), c["layers"] * block + d


def _tables(c: Mapping[str, int], width: int) -> int:
    """Token embedding, learned position table and an untied unembedding."""
    unembed = 0 if c["tied"] else c["vocab"] * width
    return c["vocab"] * width + c["positions"] * c["hidden"] + unembed


FORMULAS: dict[str, Callable[[Mapping[str, int]], tuple[int, int]]] = {
    "gpt2": _gpt2, "opt": _opt, "gpt_neox": _gpt_neox, "qwen2": _qwen2}


def param_count(arch: Mapping[str, object]) -> dict[str, int]:
    """``{"total", "non_embedding", "embedding"}`` parameter counts of one configuration.

    Args:
        arch: ``arch`` (a key of :data:`FORMULAS`) and the integer :data:`FIELDS`, as in a
            row of ``data/llm_configs.csv``.

    Raises:
        ValueError: an unknown ``arch``, a missing field, or a field that is not a whole
            number (layers, widths, heads and vocab > 0; positions >= 0; tied and final_norm
            0 or 1).
    """
    name = str(arch.get("arch", ""))
    if name not in FORMULAS:
        raise ValueError(f"unknown arch {name!r}; known: {', '.join(FORMULAS)}")
    missing = [k for k in FIELDS if k not in arch]
    if missing:
        raise ValueError(f"{name}: configuration lacks {', '.join(missing)}")
    c: dict[str, int] = {}
    for k in FIELDS:
        v = arch[k]
        if isinstance(v, bool):
            raise ValueError(f"{name}: {k} must be a whole number, got {v!r}")
        try:
            iv = int(v)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            iv = None
        if iv is None or iv != v:
            raise ValueError(f"{name}: {k} must be a whole number, got {v!r}")
        c[k] = iv
    flags = ("tied", "final_norm")
    if any(c[k] not in (0, 1) for k in flags) or c["positions"] < 0 or any(
            c[k] < 1 for k in FIELDS if k not in flags + ("positions",)):
        raise ValueError(f"{name}: sizes must be > 0, positions >= 0, tied and final_norm "
                         f"0 or 1: {c}")
    embedding, rest = FORMULAS[name](c)
    return {"total": embedding + rest, "non_embedding": rest, "embedding": embedding}


def load_configs(path: str | Path = CONFIGS) -> dict[str, dict[str, object]]:
    """``{model: configuration}`` from a CSV like ``data/llm_configs.csv``."""
    keys, v = read_csv_columns(path, ("family", "model", "arch"), FIELDS)
    out: dict[str, dict[str, object]] = {}
    for i, (family, model, arch) in enumerate(keys):
        if model in out:
            raise ValueError(f"{path}: model {model!r} appears twice")
        out[model] = {"family": family, "arch": arch, **{k: float(v[k][i]) for k in FIELDS}}
    return out


def exact_counts(path: str | Path = CONFIGS) -> dict[str, dict[str, int]]:
    """:func:`param_count` of every model in a configuration CSV, by model name."""
    return {model: param_count(c) for model, c in load_configs(path).items()}
