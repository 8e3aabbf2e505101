"""Zipf exponent of token or word counts with the pinned recipe (SPEC section 3).

Recipe: sort counts descending; take ``points`` (1000) values evenly spaced in log10(rank) over
[0, log10 N]; round them to integer ranks, keeping duplicates (so low ranks, which repeat, weigh
more, as in the paper's code); least-squares line of log10(count) on log10(rank);
alpha = -slope. The recipe moves alpha by 0.1 or more against other choices, hence pinned.
"""
from __future__ import annotations

import json
import math
import numbers
import re
import warnings
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
        n_types: distinct items with count > 0 (N); ``n_tokens`` their total count (-1 when
            that total overflows fp64).
        points: sampled points (with duplicates); ``distinct_ranks`` the ranks among them
            (the pinned recipe samples low ranks repeatedly: about 550-650 for N of 5000 to
            50000, and N itself for a small vocabulary, whose ``stderr`` then counts every
            repeat).
    """

    alpha: float
    stderr: float
    intercept: float
    r2: float
    n_types: int
    n_tokens: int
    points: int
    distinct_ranks: int = 0


def zipf_fit(counts: Sequence[float] | np.ndarray, points: int = 1000) -> ZipfFit:
    """Fit the Zipf exponent of ``counts`` (any order; zeros are dropped). Counts that are
    all equal give alpha = 0 with standard error 0 and R^2 NaN (undefined for a flat line).

    Raises:
        ValueError: fewer than 2 positive counts, negative or non-finite counts.
    """
    if isinstance(counts, (dict, str, bytes)):
        raise ValueError(f"counts must be a sequence of numbers (for a {{token: count}} dict "
                         f"pass its values()), got a {type(counts).__name__}")
    if isinstance(points, bool) or not isinstance(points, numbers.Integral) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    try:
        c = np.asarray(counts, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError("counts must be a sequence of numbers") from None
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("counts must be finite and >= 0")
    c = np.sort(c[c > 0])[::-1]
    n = c.size
    if n < 2:
        raise ValueError(f"need at least 2 positive counts, got {n}")
    with np.errstate(over="ignore"):
        total = float(np.sum(c))  # inf for counts near fp64's limit: reported as -1
    top = float(c[0])
    c = c / top  # the fit is scale-free; its intercept gets log10(top) back
    ranks = np.rint(10.0 ** np.linspace(0.0, np.log10(n), points)).astype(np.int64)
    ranks = np.clip(ranks, 1, n)
    x = np.log10(ranks.astype(np.float64))
    y = np.log10(c[ranks - 1])
    if c[-1] == c[0]:  # all counts equal: a flat line, exactly; R^2 (0/0) is undefined
        slope, stderr, intercept, r2 = 0.0, 0.0, 0.0, math.nan
    else:
        res = stats.linregress(x, y)
        slope, stderr, intercept, r2 = (float(res.slope), float(res.stderr),
                                        float(res.intercept), float(res.rvalue ** 2))
    return ZipfFit(alpha=-slope + 0.0, stderr=stderr,
                   intercept=intercept + math.log10(top),
                   r2=r2, n_types=int(n),
                   n_tokens=int(round(total)) if math.isfinite(total) else -1,
                   points=int(points), distinct_ranks=int(np.unique(ranks).size))


def counts_from_tokens(tokens: Iterable[str]) -> np.ndarray:
    """Counts of each distinct token (order irrelevant to the fit)."""
    return np.fromiter(Counter(tokens).values(), dtype=np.float64)


def tokenize(text: str) -> list[str]:
    """Whitespace tokenisation of lowercased text (the CLI's text mode)."""
    return _TOKEN.findall(text.lower())


def _count(field: str) -> float | None:
    try:
        v = float(field)
    except ValueError:
        return None
    return v if v >= 0 and v == v and v != float("inf") else None


def _is_number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


class _Lines:
    """A counts candidate read in one pass over its non-empty, non-comment lines, two ways:
    by the count its last field holds ('COUNT', 'TOKEN COUNT', 'TOKEN<TAB>COUNT',
    'TOKEN,COUNT'), and by a leading count ('COUNT TOKEN' as ``sort | uniq -c`` writes: two
    whitespace-separated fields, the first the count, or the count alone for the empty token
    that runs of spaces give; numbered lines of prose are not). In both, a first line that
    does not parse, such as a 'token,count' header, is skipped."""

    def __init__(self, text: str):
        last: tuple[list[float], list[int]] = ([], [])   # (counts, numbers of other lines)
        lead: tuple[list[float], list[int]] = ([], [])
        self.num = self.total = 0   # lines whose last field is any number; all lines
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            field = re.split(r"[\s,;]+", line)[-1]
            fields = line.split()
            v_last = _count(field)
            for (values, bad), v in ((last, v_last),
                                     (lead, _count(fields[0]) if len(fields) in (1, 2)
                                      else None)):
                if v is not None:
                    values.append(v)
                elif self.total:
                    bad.append(lineno)
            # any number counts here, negative and non-finite too (parsed again only then)
            self.num += v_last is not None or _is_number(field)
            self.total += 1
        self._last, self._lead = last, lead

    def counts(self, count_first: bool = False) -> tuple[np.ndarray | None, list[int]]:
        """``(counts, bad)``: the counts (None if no line parsed) by the last field, or with
        ``count_first`` by the leading one, and the 1-based numbers of the other lines."""
        values, bad = self._lead if count_first else self._last
        return (np.asarray(values, dtype=np.float64) if values else None), bad


def _json_counts(obj: object) -> np.ndarray | None:
    """{token: count}, a list of counts (numbers, or numbers written as strings), or the
    per-token-id counts file ``superkern fit zipf --save-counts`` writes."""
    if isinstance(obj, dict) and str(obj.get("format", "")).startswith("superkern-token-counts/"):
        obj = obj.get("counts")
    vals = list(obj.values()) if isinstance(obj, dict) else obj
    if not isinstance(vals, list) or not vals:
        return None
    out = [_count(str(v)) if isinstance(v, (int, float, str)) and not isinstance(v, bool)
           else None for v in vals]
    return None if any(v is None for v in out) else np.asarray(out, dtype=np.float64)


def load_counts(path: str | Path, mode: Literal["auto", "counts", "text", "json"] = "auto"
                ) -> tuple[np.ndarray, str]:
    """Read counts from a file. Returns ``(counts, mode_used)``.

    Modes: ``json`` (an object ``{token: count}``, as the paper's token-frequency files, a
    list of counts, or a counts file written by ``--save-counts``); ``counts`` (one count
    per line, or ``token count`` / ``token,count`` / tab-separated lines: the last field is
    the count; a header line is skipped), or ``count token`` lines as ``uniq -c`` writes them
    when not every line ends in a count but every line starts with one; ``text`` (lowercased,
    whitespace-tokenised, then counted). ``auto``: a file that parses as JSON must be such
    JSON; otherwise counts when at least 90% of the lines end in a count (an error names the
    lines that do not when some do not), then ``count token`` lines, else text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if mode in ("auto", "json"):
        obj: object = None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            if mode == "json" or text.lstrip()[:1] in ("{", "["):
                raise ValueError(f"{path}: not valid JSON ({exc}); pass --mode text to count "
                                 "its words") from None
        # auto: only an object or a list is JSON input; one bare number is a counts file
        if mode == "json" or isinstance(obj, (dict, list)):
            counts = _json_counts(obj)
            if counts is None:
                raise ValueError(f"{path}: JSON must be {{token: count}}, a list of counts "
                                 f"(non-negative numbers) or a counts file written by "
                                 f"--save-counts; got {type(obj).__name__} "
                                 f"{json.dumps(obj)[:80]}")
            return counts, "json"
    if mode in ("auto", "counts"):
        lines = _Lines(text)
        counts, bad = lines.counts()
        n = 0 if counts is None else counts.size
        # 'COUNT TOKEN' lines (uniq -c) end in a word: read the leading count instead of
        # falling back to text, which would count each count and word as one token; also when
        # only the first line ends in a word (taken for a header) and the rest in numbers
        lead, lead_bad = lines.counts(count_first=True)
        k = 0 if lead is None else lead.size
        if k and not lead_bad and k > n:
            return lead, "counts, count first"
        if n and not bad:
            return counts, "counts"
        if n < 0.9 * (n + len(bad)) and k and k >= 0.9 * (k + len(lead_bad)):
            shown = ", ".join(map(str, lead_bad[:10])) + (" ..." if len(lead_bad) > 10 else "")
            raise ValueError(f"{path}: {len(lead_bad)} of {k + len(lead_bad)} lines are not "
                             f"'count token' (lines {shown}) while the rest are, as uniq -c "
                             "writes them; fix those lines (or pass --mode text)")
        num, total = lines.num, lines.total
        if mode == "counts" or (n and n >= 0.9 * (n + len(bad))) or (
                total and num >= 0.9 * total):
            if n + len(bad) == 0:
                raise ValueError(f"{path}: no line ends in a count (a non-negative finite "
                                 "number); pass --mode text to count the words")
            shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
            raise ValueError(f"{path}: {len(bad)} of {n + len(bad)} lines do not end in a count "
                             f"(lines {shown or 'all'}); every line but a header must end in "
                             "a non-negative finite number (or pass --mode text)")
    if mode == "auto" and n >= 3 and n >= 0.5 * (n + len(bad)):
        warnings.warn(f"{path}: read as text (its words counted): {n} of {n + len(bad)} lines "
                      "end in a count, short of the 90% a counts file needs; fix the other "
                      "lines or pass --mode counts to see which they are")
    return counts_from_tokens(tokenize(text)), "text"
