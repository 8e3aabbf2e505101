"""Zipf exponent of token or word counts with the pinned recipe (SPEC section 3).

Recipe: sort counts descending; take ``points`` (1000) values evenly spaced in log10(rank) over
[0, log10 N]; round them to integer ranks, keeping duplicates (so low ranks, which repeat, weigh
more, as in the paper's code); least-squares line of log10(count) on log10(rank);
alpha = -slope. The recipe moves alpha by 0.1 or more against other choices, hence pinned.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
from scipy import stats

_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class ZipfFit:
    """Result of :func:`zipf_fit`.

    Attributes:
        alpha: -slope of log10(count) on log10(rank).
        stderr: standard error of the slope (of the sampled points; they are not independent,
            so treat it as a fit-quality number, not a confidence interval).
        intercept: log10 of the fitted count at rank 1.
        r2: R^2 of the line.
        n_types: distinct items with count > 0 (N); ``n_tokens`` their total count.
        points: sampled points (with duplicates).
    """

    alpha: float
    stderr: float
    intercept: float
    r2: float
    n_types: int
    n_tokens: int
    points: int


def zipf_fit(counts: Sequence[float] | np.ndarray, points: int = 1000) -> ZipfFit:
    """Fit the Zipf exponent of ``counts`` (any order; zeros are dropped).

    Raises:
        ValueError: fewer than 2 positive counts, negative or non-finite counts.
    """
    c = np.asarray(counts, dtype=np.float64).ravel()
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("counts must be finite and >= 0")
    c = np.sort(c[c > 0])[::-1]
    n = c.size
    if n < 2:
        raise ValueError(f"need at least 2 positive counts, got {n}")
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    ranks = np.rint(10.0 ** np.linspace(0.0, np.log10(n), points)).astype(np.int64)
    ranks = np.clip(ranks, 1, n)
    x = np.log10(ranks.astype(np.float64))
    y = np.log10(c[ranks - 1])
    res = stats.linregress(x, y)
    return ZipfFit(alpha=-float(res.slope), stderr=float(res.stderr),
                   intercept=float(res.intercept), r2=float(res.rvalue ** 2), n_types=int(n),
                   n_tokens=int(round(float(c.sum()))), points=int(points))


def counts_from_tokens(tokens: Iterable[str]) -> np.ndarray:
    """Counts of each distinct token (order irrelevant to the fit)."""
    return np.fromiter(Counter(tokens).values(), dtype=np.float64)


def tokenize(text: str) -> list[str]:
    """Whitespace tokenisation of lowercased text (the CLI's text mode)."""
    return _TOKEN.findall(text.lower())


def _parse_counts(text: str) -> np.ndarray | None:
    """Counts from 'COUNT' or 'TOKEN COUNT' lines (or TOKEN<TAB>COUNT); None if not that form."""
    values = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        last = line.rsplit(None, 1)[-1]
        try:
            v = float(last)
        except ValueError:
            return None
        if v < 0 or v != v:
            return None
        values.append(v)
    return np.asarray(values, dtype=np.float64) if values else None


def load_counts(path: str | Path, mode: Literal["auto", "counts", "text", "json"] = "auto"
                ) -> tuple[np.ndarray, str]:
    """Read counts from a file. Returns ``(counts, mode_used)``.

    Modes: ``json`` (an object ``{token: count}``, as the paper's token-frequency files, or a
    list of counts); ``counts`` (one count per line, or ``token count`` lines: the last field is
    the count); ``text`` (lowercased, whitespace-tokenised, then counted). ``auto`` tries json,
    then counts, then text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if mode in ("auto", "json"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            if mode == "json":
                raise ValueError(f"{path}: not valid JSON") from None
        else:
            vals = list(obj.values()) if isinstance(obj, dict) else obj
            if isinstance(vals, list) and all(isinstance(v, (int, float)) for v in vals):
                return np.asarray(vals, dtype=np.float64), "json"
            if mode == "json":
                raise ValueError(f"{path}: JSON must be {{token: count}} or a list of counts")
    if mode in ("auto", "counts"):
        counts = _parse_counts(text)
        if counts is not None:
            return counts, "counts"
        if mode == "counts":
            raise ValueError(f"{path}: every non-empty line must end in a count")
    return counts_from_tokens(tokenize(text)), "text"
