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
        rows: rows compared (analysed, nonzero, count > 0). unseen: the same with count 0.
        padded: head rows past the end of the counts (taken as count 0: vocabulary padding).
        spearman, spearman_p: rank correlation of norm and count, and its p-value.
        spearman_centred: the same for the centred rows' norms (NaN when not given).
        bins: per frequency-rank bin (rank 1 = most frequent): ranks, tokens, count range,
            median and mean norm, the fraction with norm above the overall median, and the
            median centred norm.
        unseen_median_norm: median norm of the unseen rows (NaN if none).
        m: the head's width. With ``overlaps``, each bin (and ``unseen_overlap``) also has
            ``mean_sq`` and ``mean_sq_centred``: the exact mean c^2 over the pairs inside it,
            of the raw and of the centred rows (1/m for random directions).
    """

    source: str
    tokens_counted: int | float
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
    ranks: np.ndarray = field(repr=False)          # their frequency ranks (ties: average)
    m: int = 0
    unseen_overlap: Optional[dict[str, float]] = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "tokens_counted": self.tokens_counted,
                "rows": self.rows, "unseen": self.unseen, "padded": self.padded,
                "spearman": self.spearman, "spearman_p": self.spearman_p,
                "spearman_centred": self.spearman_centred,
                "unseen_median_norm": self.unseen_median_norm, "m": self.m,
                "unseen_overlap": self.unseen_overlap, "bins": self.bins}


def prepare_counts(counts, n_rows: int) -> np.ndarray:
    """Per-id counts as n_rows float64 values: ids past the end count 0, and trailing ids past
    the head that count 0 are dropped.

    Raises:
        ValueError: not a flat array, or a nonzero count for an id the head has no row for
            (counts from another tokenizer).
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"token counts must be one value per token id, got shape {c.shape}")
    nz = np.flatnonzero(c)
    if nz.size and nz[-1] >= n_rows:
        raise ValueError(f"the token counts cover {c.size} ids (id {int(nz[-1])} is counted) "
                         f"but the head has {n_rows} rows: counts from another tokenizer?")
    full = np.zeros(n_rows)
    full[:min(c.size, n_rows)] = c[:n_rows]
    return full


def seen_rows(norms: np.ndarray, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(analysed, seen) masks: analysed = a finite, nonzero norm (zero rows carry no
    direction and have no centred norm); seen = analysed with a nonzero count.

    Raises:
        ValueError: fewer than 3 seen rows (nothing to correlate).
    """
    analysed = np.isfinite(norms) & (norms > 0)
    seen = analysed & (full > 0)
    k = int(seen.sum())
    if k < 3:
        raise ValueError(f"only {k} analysed nonzero row(s) have a nonzero token count (of "
                         f"{int(analysed.sum())} analysed, {int((full > 0).sum())} counted "
                         "ids); need 3")
    return analysed, seen


def _ranking(full: np.ndarray, seen: np.ndarray, n_bins: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seen rows in decreasing-count order, their ranks (ties: average) and bin numbers
    (log-spaced in rank; a tie group never straddles two bins)."""
    order = np.flatnonzero(seen)[np.argsort(-full[seen], kind="stable")]
    rank = stats.rankdata(-full[order], method="average")
    edges = np.unique(np.geomspace(1, order.size + 1, n_bins + 1))
    which = np.clip(np.searchsorted(edges, rank, side="right") - 1, 0, len(edges) - 2)
    return order, rank, which


def frequency_bins(norms: np.ndarray, counts: np.ndarray, n_bins: int = 8
                   ) -> tuple[list[np.ndarray], np.ndarray]:
    """Row ids of each frequency-rank bin of :func:`frequency_stats` (most frequent first),
    and of the unseen rows (analysed, count 0)."""
    norms = np.asarray(norms, dtype=np.float64)
    full = prepare_counts(counts, norms.size)
    analysed, seen = seen_rows(norms, full)
    order, _, which = _ranking(full, seen, n_bins)
    return ([order[which == b] for b in np.unique(which)],
            np.flatnonzero(analysed & (full == 0)))


def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its p-value; NaN (without scipy's warning) when either side is
    constant, such as equal norms or equal counts."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, math.nan
    rho, p = stats.spearmanr(a, b)
    return float(rho), float(p)


def frequency_stats(norms: np.ndarray, counts: np.ndarray, source: str = "",
                    n_bins: int = 8, centred: Optional[np.ndarray] = None, m: int = 0,
                    overlaps: Optional[list[dict[str, float]]] = None,
                    unseen_overlap: Optional[dict[str, float]] = None) -> FrequencyStats:
    """Compare row norms with token counts.

    Ties in count share their average rank, and a tie group is never split between bins
    (most tokens of a corpus count 1, 2 or 3: ordering them by id would bin by id).

    Args:
        norms: (n,) row norms, NaN for rows that were not analysed; zero rows are left out.
        counts: per-token-id counts (missing ids: count 0); see :func:`prepare_counts`.
        source: a label for the counts. n_bins: log-spaced frequency-rank bins.
        centred: (n,) norms of the mean-centred rows (NaN where not computed), optional.
        m: the head's width (for the report's m * mean c^2).
        overlaps: per bin of :func:`frequency_bins`, ``{"mean_sq", "mean_sq_centred"}``;
            unseen_overlap: the same for the unseen rows.

    Raises:
        ValueError: see :func:`prepare_counts` and :func:`seen_rows`.
    """
    norms = np.asarray(norms, dtype=np.float64)
    n = norms.size
    full = prepare_counts(counts, n)
    padded = max(0, n - np.asarray(counts).size)
    analysed, seen = seen_rows(norms, full)
    k = int(seen.sum())
    order, rank, which = _ranking(full, seen, n_bins)
    rn, rc = norms[order], full[order]
    rho, p = _spearman(rn, rc)
    cn = np.full(k, np.nan) if centred is None else np.asarray(centred, np.float64)[order]
    ok = np.isfinite(cn)
    rho_c = _spearman(cn[ok], rc[ok])[0] if ok.sum() >= 3 else math.nan
    med = float(np.median(rn))
    bins = []
    if overlaps is not None and len(overlaps) != np.unique(which).size:
        raise ValueError(f"{len(overlaps)} overlap entries for {np.unique(which).size} bins")
    for nb, b in enumerate(np.unique(which)):
        sel = which == b
        part, cnt, cpart = rn[sel], rc[sel], cn[sel]
        pos = np.flatnonzero(sel) + 1  # whole tie groups: a contiguous run of positions
        bins.append({"ranks": [int(pos[0]), int(pos[-1])],
                     "tokens": int(sel.sum()),
                     "count_max": float(cnt.max()), "count_min": float(cnt.min()),
                     "median_norm": float(np.median(part)), "mean_norm": float(part.mean()),
                     "above_median": float((part > med).mean()),
                     "median_centred": (float(np.median(cpart[np.isfinite(cpart)]))
                                        if np.isfinite(cpart).any() else math.nan),
                     **_overlap_fields(None if overlaps is None else overlaps[nb])})
    unseen = analysed & (full == 0)
    total = float(full.sum())  # counts, or frequencies (which print as such, not rounded)
    whole = bool(np.all(full == np.round(full)))
    return FrequencyStats(
        source=source, tokens_counted=int(round(total)) if whole else total,
        rows=k,
        unseen=int(unseen.sum()), padded=int(padded), spearman=float(rho),
        spearman_p=float(p), spearman_centred=rho_c, bins=bins,
        unseen_median_norm=float(np.median(norms[unseen])) if unseen.any() else math.nan,
        ranked_norms=rn, ranked_counts=rc, ranks=rank, m=int(m),
        unseen_overlap=None if unseen_overlap is None else _overlap_fields(unseen_overlap))


def _overlap_fields(o: Optional[dict[str, float]]) -> dict[str, float]:
    if o is None:
        return {}
    return {"mean_sq": float(o.get("mean_sq", math.nan)),
            "mean_sq_centred": float(o.get("mean_sq_centred", math.nan))}


def _p_text(p: float) -> str:
    return "< 1e-300" if p == 0 else f"= {p:.2g}"


def format_frequency(d: Optional[dict[str, Any]]) -> list[str]:
    """Text lines of the report block (empty without token counts)."""
    if not d:
        return []
    has_c = d["spearman_centred"] is not None and math.isfinite(d["spearman_centred"])
    has_o = bool(d["bins"]) and "mean_sq" in d["bins"][0] and bool(d.get("m"))
    has_oc = has_o and any(math.isfinite(b["mean_sq_centred"])
                           for b in d["bins"] + [d.get("unseen_overlap") or {}]
                           if "mean_sq_centred" in b)
    m = d.get("m") or 0
    n = d["rows"] + d["unseen"]
    whole = all(float(b[k]).is_integer() for b in d["bins"] for k in ("count_max", "count_min"))
    cf = ".0f" if whole else ".3g"  # frequencies (probabilities) are not token counts
    total = d["tokens_counted"]
    total = f"{total} tokens" if whole and isinstance(total, int) else \
        f"total frequency {float(total):.4g}"
    out = ["", f"Row norm vs token frequency ({d['source']}: {total}; "
               f"{d['rows']} rows seen, {d['unseen']} unseen"
               + (f", {d['padded']} past the counts" if d["padded"] else "") + ")",
           f"  Spearman rho = {d['spearman']:+.3f} (p {_p_text(d['spearman_p'])})"
           + (f"; centred rows {d['spearman_centred']:+.3f}" if has_c else "")
           + (f"; median norm of unseen tokens {d['unseen_median_norm']:.4g}"
              if d["unseen"] else ""),
           "  freq. ranks      tokens   counts            median norm  > overall median"
           + ("  centred" if has_c else "")
           + ("   m<c^2>" + ("  m<c^2> centred" if has_oc else "") if has_o else "")]
    if d["padded"] > 0.01 * max(n, 1):
        out.insert(2, f"  note: {d['padded']} head rows lie past the counts' ids: counts from "
                      "another tokenizer?")
    for b in d["bins"]:
        out.append(f"  {b['ranks'][0]:>6}-{b['ranks'][1]:<8} {b['tokens']:>7}   "
                   f"{b['count_max']:>8{cf}}-{b['count_min']:<8{cf}} {b['median_norm']:>10.4g}"
                   f"  {b['above_median']:>14.2f}"
                   + (f"  {b['median_centred']:>7.4g}" if has_c else "")
                   + (_overlap_cells(b, m, has_oc) if has_o else ""))
    u = d.get("unseen_overlap")
    if has_o and u and d["unseen"]:
        out.append(f"  {'unseen':<15} {d['unseen']:>7}   {0:>8}{'':<9} "
                   f"{d['unseen_median_norm']:>10.4g}  {'':>14}" + ("  " + " " * 7 if has_c else "")
                   + _overlap_cells(u, m, has_oc))
    if has_o:
        out.append("  m<c^2>: m times the mean squared cosine over the pairs inside the bin "
                   "(exact); 1 for random directions")
    return out


def _overlap_cells(b: dict[str, Any], m: int, centred: bool) -> str:
    def cell(v: float, width: int) -> str:  # a one-token group has no pairs: "-"
        return f"{m * v:>{width}.3g}" if math.isfinite(v) else f"{'-':>{width}}"

    return "  " + cell(b["mean_sq"], 7) + ("  " + cell(b["mean_sq_centred"], 15) if centred
                                          else "")
