"""Row norm against token frequency: the LM-head counterpart of the paper's Fig. 6a.

In the toy model, frequent features get the larger norms (strongly represented). For an LM
head the analogue compares each token's row norm with how often the token occurs in a corpus
(per-id counts from ``superkern fit zipf CORPUS --tokenizer T --save-counts FILE``). The
comparison uses the analysed rows of tokens seen at least once: Spearman's rank correlation
of norm and count, and the median norm in log-spaced bins of frequency rank. Both are also
given for the norms of the mean-centred rows, ||W_i - mean||: a direction shared by all rows
(large in some heads) can carry a frequency trend of its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from scipy import stats


@dataclass
class FrequencyStats:
    """Summary of row norm vs token count (see the module docstring).

    Attributes:
        source: where the counts came from. tokens_counted: their total.
        rows: rows compared (analysed, count > 0). unseen: analysed rows with count 0.
        padded: head rows past the end of the counts (taken as count 0: vocabulary padding).
        spearman, spearman_p: rank correlation of norm and count, and its p-value.
        spearman_centred: the same for the centred rows' norms (NaN when not given).
        bins: per frequency-rank bin (rank 1 = most frequent): ranks, tokens, count range,
            median and mean norm, the fraction with norm above the overall median, and the
            median centred norm.
        unseen_median_norm: median norm of the unseen rows (NaN if none).
    """

    source: str
    tokens_counted: int
    rows: int
    unseen: int
    padded: int
    spearman: float
    spearman_p: float
    spearman_centred: float
    bins: list[dict[str, Any]]
    unseen_median_norm: float
    ranked_norms: np.ndarray = field(repr=False)   # norms in decreasing-count order
    ranked_counts: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "tokens_counted": self.tokens_counted,
                "rows": self.rows, "unseen": self.unseen, "padded": self.padded,
                "spearman": self.spearman, "spearman_p": self.spearman_p,
                "spearman_centred": self.spearman_centred,
                "unseen_median_norm": self.unseen_median_norm, "bins": self.bins}


def check_counts_fit(n_counts: int, n_rows: int) -> None:
    """More counted ids than head rows means counts from another tokenizer: ValueError."""
    if n_counts > n_rows:
        raise ValueError(f"the token counts cover {n_counts} ids but the head has {n_rows} "
                         "rows: counts from another tokenizer?")


def frequency_stats(norms: np.ndarray, counts: np.ndarray, source: str = "",
                    n_bins: int = 8, centred: Optional[np.ndarray] = None) -> FrequencyStats:
    """Compare row norms with token counts.

    Args:
        norms: (n,) row norms, NaN for rows that were not analysed.
        counts: per-token-id counts, length <= n (missing ids: count 0).
        source: a label for the counts. n_bins: log-spaced frequency-rank bins.
        centred: (n,) norms of the mean-centred rows (NaN where not computed), optional.

    Raises:
        ValueError: more counts than head rows (the wrong tokenizer), or fewer than 3 analysed
            rows with a nonzero count.
    """
    norms = np.asarray(norms, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    n = norms.size
    check_counts_fit(counts.size, n)
    padded = n - counts.size
    full = np.concatenate([counts, np.zeros(padded)])
    analysed = np.isfinite(norms)
    seen = analysed & (full > 0)
    k = int(seen.sum())
    if k < 3:
        raise ValueError(f"only {k} analysed row(s) have a nonzero token count (of "
                         f"{int(analysed.sum())} analysed, {counts.size} counted ids); need 3")
    order = np.flatnonzero(seen)[np.argsort(-full[seen], kind="stable")]
    rn, rc = norms[order], full[order]
    rho, p = stats.spearmanr(rn, rc)
    cn = np.full(k, np.nan) if centred is None else np.asarray(centred, np.float64)[order]
    ok = np.isfinite(cn)
    rho_c = float(stats.spearmanr(cn[ok], rc[ok])[0]) if ok.sum() >= 3 else math.nan
    med = float(np.median(rn))
    edges = np.unique(np.rint(np.geomspace(1, k + 1, n_bins + 1)).astype(np.int64))
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        part, cnt, cpart = rn[lo - 1:hi - 1], rc[lo - 1:hi - 1], cn[lo - 1:hi - 1]
        bins.append({"ranks": [int(lo), int(hi - 1)], "tokens": int(part.size),
                     "count_max": float(cnt.max()), "count_min": float(cnt.min()),
                     "median_norm": float(np.median(part)), "mean_norm": float(part.mean()),
                     "above_median": float((part > med).mean()),
                     "median_centred": (float(np.median(cpart[np.isfinite(cpart)]))
                                        if np.isfinite(cpart).any() else math.nan)})
    unseen = analysed & (full == 0)
    return FrequencyStats(
        source=source, tokens_counted=int(round(float(counts.sum()))), rows=k,
        unseen=int(unseen.sum()), padded=int(padded), spearman=float(rho),
        spearman_p=float(p), spearman_centred=rho_c, bins=bins,
        unseen_median_norm=float(np.median(norms[unseen])) if unseen.any() else math.nan,
        ranked_norms=rn, ranked_counts=rc)


def _p_text(p: float) -> str:
    return "< 1e-300" if p == 0 else f"= {p:.2g}"


def format_frequency(d: Optional[dict[str, Any]]) -> list[str]:
    """Text lines of the report block (empty without token counts)."""
    if not d:
        return []
    out = ["", f"Row norm vs token frequency ({d['source']}: {d['tokens_counted']} tokens; "
               f"{d['rows']} rows seen, {d['unseen']} unseen"
               + (f", {d['padded']} past the counts" if d["padded"] else "") + ")",
           f"  Spearman rho = {d['spearman']:+.3f} (p {_p_text(d['spearman_p'])}); centred rows "
           f"{d['spearman_centred']:+.3f}; median norm of unseen tokens "
           f"{d['unseen_median_norm']:.4g}",
           "  freq. ranks      tokens   counts            median norm  > overall median"
           "  centred"]
    for b in d["bins"]:
        out.append(f"  {b['ranks'][0]:>6}-{b['ranks'][1]:<8} {b['tokens']:>7}   "
                   f"{b['count_max']:>8.0f}-{b['count_min']:<8.0f} {b['median_norm']:>10.4g}"
                   f"  {b['above_median']:>14.2f}  {b['median_centred']:>7.4g}")
    return out
