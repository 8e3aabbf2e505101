"""Figures as PNG bytes (matplotlib's object API: no pyplot, no global backend change).

Probe: row-norm histogram; overlap histogram (density, log scale) with the random-vector
density f_m. Compare: mean c^2 vs m (paper Fig. 8a style, log-log, with 1/m) and per-head
row-norm distributions (paper Fig. 20 style). With token counts: row norm vs token frequency
rank (paper Fig. 6a style).
"""
from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np

from superkern.probe import baselines


def new_figure(w: float = 6.4, h: float = 4.2, dpi=110):
    """A Figure on an Agg canvas (``dpi=None``: matplotlib's default)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def norm_histogram_png(report) -> bytes:
    ns = report.norms
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    edges = ns.edges.numpy()
    ax.stairs(ns.hist.numpy(), edges, fill=True, alpha=0.6, label="rows")
    ax.axvline(ns.median, color="k", ls="--", lw=1, label=f"median {ns.median:.3g}")
    for t, name in ((0.5, "1/2"), (1.0, "1")):
        if edges[0] <= t <= edges[-1]:
            ax.axvline(t, color="tab:red", ls=":", lw=1, label=f"norm = {name}")
    ax.set_xlabel("row norm ||W_i||")
    ax.set_ylabel("rows")
    ax.set_title(f"{report.head.name or report.head.tensor}: row norms "
                 f"(n={report.rows_analysed}, m={report.m})", fontsize=10)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def overlap_histogram_png(report) -> bytes:
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    m = report.m
    drawn = False
    lo, hi = np.inf, 0.0
    for key, style in (("all", "-"), ("centred", "--")):
        b = report.blocks.get(key)
        s = b.stats if b is not None else None
        if s is None or s.hist is None or s.n_pairs == 0:
            continue
        edges = s.edges.numpy()
        dens = s.hist.numpy() / (s.n_pairs * np.diff(edges))
        ax.stairs(np.where(dens > 0, dens, np.nan), edges, ls=style,
                  label=f"{b.title}" + (" (sampled)" if b.sampled else ""))
        drawn = True
        if (dens > 0).any():
            lo, hi = min(lo, dens[dens > 0].min()), max(hi, dens.max())
    if m >= 2:
        c = np.linspace(-1, 1, 4001)
        f = baselines.random_density(c, m)
        hi = max(hi, f.max())
        # The random density falls off like (1 - c^2)^(m/2): clip it to the data's range.
        floor = lo / 10 if np.isfinite(lo) else f.max() * 1e-12
        ax.plot(c, np.where(f > floor, f, np.nan), color="k", lw=1,
                label=f"random unit vectors, m={m}")
        lo = min(lo, floor)
    ax.set_yscale("log")
    if np.isfinite(lo) and hi > 0:
        ax.set_ylim(lo / 2, hi * 3)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("overlap c = u_i . u_j")
    ax.set_ylabel("density")
    ax.set_title(f"{report.head.name or report.head.tensor}: pairwise overlaps", fontsize=10)
    if drawn or m >= 2:
        ax.legend(fontsize=8)
    return png_bytes(fig)


def mean_sq_vs_m_png(rows: Sequence[dict[str, Any]]) -> bytes:
    """Fig. 8a style: mean c^2 (exact) against m, log-log, with the 1/m line of random vectors
    (the paper draws a slope-1 guide: it reports the 1/m scaling, not the magnitude)."""
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    ms = np.array([r["m"] for r in rows], dtype=float)
    for r in rows:
        ax.scatter([r["m"]], [r["mean_sq"]], s=30, zorder=3)
        ax.annotate(r["name"], (r["m"], r["mean_sq"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
        if r.get("mean_sq_centred") is not None:
            ax.scatter([r["m"]], [r["mean_sq_centred"]], s=30, facecolors="none",
                       edgecolors="gray", zorder=2)
    lo, hi = ms.min() / 1.5, ms.max() * 1.5
    x = np.geomspace(lo, hi, 50)
    ax.plot(x, 1.0 / x, "k--", lw=1, label="1/m (random unit vectors)")
    ax.scatter([], [], facecolors="none", edgecolors="gray", label="centred")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(sorted({int(m) for m in ms}))
    ax.set_xlabel("model width m")
    ax.set_ylabel("mean squared overlap  <c^2>")
    ax.set_title("Mean squared overlap of LM-head rows vs width", fontsize=10)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def row_norms_png(names: Sequence[str], norms: Sequence[np.ndarray]) -> bytes:
    return png_bytes(row_norms_figure(names, norms))


def row_norms_figure(names: Sequence[str], norms: Sequence[np.ndarray]):
    """Fig. 20 style: per head, the row-norm distribution (violin), mean +- std, min and max."""
    fig = new_figure(max(4.0, 1.1 * len(names) + 2), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    pos = np.arange(1, len(names) + 1)
    # Norms far from 1 (fp64 heads near 1e160) are drawn in units of a power of ten, so that
    # the density estimate and the std do not overflow.
    top = max((float(np.max(x)) for x in norms if np.size(x)), default=1.0)
    unit = 1.0 if not top > 0 or 1e-3 < top < 1e3 else 10.0 ** math.floor(math.log10(top))
    vals = [np.asarray(x, dtype=float) / unit for x in norms]
    ax.violinplot(vals, positions=pos, showextrema=False, widths=0.8)
    for p, x in zip(pos, vals):
        ax.errorbar([p], [x.mean()], yerr=[x.std()], fmt="o", color="k", ms=4, capsize=3)
        ax.scatter([p], [x.max()], color="tab:red", s=10)
        ax.scatter([p], [x.min()], color="k", s=10)
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("row norm ||W_i||" + ("" if unit == 1.0 else f" / {unit:.0e}"))
    # two lines: one was wider than the figure of two or three heads and was cut at its ends
    ax.set_title("Row norms per head\n(dot: mean +- std; red: max; black: min)", fontsize=9)
    return fig


def norm_vs_frequency_png(report, max_points: int = 40000) -> bytes:
    return png_bytes(norm_vs_frequency_figure(report, max_points))


def norm_vs_frequency_figure(report, max_points: int = 40000):
    """Row norm against token frequency rank (the paper's Fig. 6a for an LM head): one dot per
    seen token (an even subsample past ``max_points``), coloured by whether its norm is above
    the median, with the median norm per frequency-rank bin, raw and of the centred rows.
    With the bins' overlaps, a second panel: m<c^2> inside each bin, raw and centred."""
    f = report.frequency
    rn = f.ranked_norms
    ranks = f.ranks  # equal counts share their average rank
    pick = np.unique(np.linspace(0, rn.size - 1, min(rn.size, max_points)).astype(np.int64))
    med = float(np.median(rn))
    above = rn[pick] > med
    has_o = bool(f.bins) and "mean_sq" in f.bins[0] and f.m > 0
    fig = new_figure(12.0 if has_o else 7.0, 4.4)
    ax = fig.add_subplot(1, 2 if has_o else 1, 1)
    ax.scatter(ranks[pick][~above], rn[pick][~above], s=2, color="0.6", alpha=0.5,
               label="norm <= median", rasterized=True)
    ax.scatter(ranks[pick][above], rn[pick][above], s=2, color="tab:purple", alpha=0.5,
               label="norm > median", rasterized=True)
    mids = [np.sqrt(b["ranks"][0] * b["ranks"][1]) for b in f.bins]
    ax.plot(mids, [b["median_norm"] for b in f.bins], "k-o", ms=4, lw=1.5,
            label="median per rank bin")
    centred = [b["median_centred"] for b in f.bins]
    if np.isfinite(centred).any():
        ax.plot(mids, centred, "--s", color="tab:orange", ms=4, lw=1.5,
                label=f"median ||W_i - mean|| (rho {f.spearman_centred:+.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("token frequency rank (1 = most frequent in the corpus)")
    ax.set_ylabel("row norm ||W_i||")
    ax.set_title(f"{report.head.name or report.head.tensor}: norm vs frequency, Spearman "
                 f"rho = {f.spearman:+.3f} ({f.rows} tokens seen)", fontsize=10)
    legend = ax.legend(fontsize=8)
    for h in getattr(legend, "legend_handles", getattr(legend, "legendHandles", []))[:2]:
        h.set_sizes([16])  # the dots, readable in the legend
    if has_o:
        _bin_overlaps(fig.add_subplot(1, 2, 2), f, mids)
    return fig


def _bin_overlaps(ax, f, mids) -> None:
    """m<c^2> inside each frequency-rank bin, raw and centred, with the random level 1."""
    for key, style, label in (("mean_sq", "k-o", "raw rows"),
                              ("mean_sq_centred", "--s", "centred rows")):
        y = np.array([f.m * b[key] for b in f.bins], dtype=float)
        ok = np.isfinite(y) & (y > 0)
        if ok.any():
            ax.plot(np.asarray(mids)[ok], y[ok], style, ms=4, lw=1.5, label=label,
                    **({"color": "tab:orange"} if key != "mean_sq" else {}))
    _overlap_axes(ax, "token frequency rank", "m x mean c^2 inside the bin",
                  "overlaps among tokens of similar frequency")


def _overlap_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Log-log axes of m<c^2> against frequency rank, with the random level 1."""
    ax.axhline(1.0, color="0.5", ls=":", lw=1, label="random directions")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def frequency_overlaps_png(heads: Sequence[tuple[str, int, dict[str, Any]]]) -> bytes:
    return png_bytes(frequency_overlaps_figure(heads))


def frequency_overlaps_figure(heads: Sequence[tuple[str, int, dict[str, Any]]]):
    """``compare --corpus``: m<c^2> of the centred rows inside each token-frequency bin against
    the bin's frequency rank, one line per ``(name, m, frequency dict)`` head, with the random
    level 1."""
    fig = new_figure(7.0, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    for name, m, f in heads:
        mids = np.array([np.sqrt(b["ranks"][0] * b["ranks"][1]) for b in f["bins"]])
        y = np.array([m * b["mean_sq_centred"] if b.get("mean_sq_centred") is not None
                      else np.nan for b in f["bins"]], dtype=float)
        ok = np.isfinite(y) & (y > 0)
        if ok.any():  # a head whose bins all hold one token has nothing to draw
            ax.plot(mids[ok], y[ok], "-o", ms=4, lw=1.5, label=f"{name} (m = {m})")
    _overlap_axes(ax, "token frequency rank (bin centre)",
                  "m x mean c^2 inside the bin (centred rows)",
                  "Overlaps among tokens of similar frequency")
    return fig
