"""Row-norm figures, read from the saved weights: paper Figs. 6a, 6b, 9, 11 and 12, and the
overlaps among features of similar frequency (superkern's counterpart of the probe's
frequency bins; not a paper figure).

The row norm ||W_i|| sorts features into the paper's groups: about 0 (not learned) or about 1
(learned) at weak superposition, split at 1/2 for phi_half; above or below 1 (strongly or
weakly represented) at strong superposition, split at 1 for phi_1. Features are indexed by
frequency rank (p_i decreases with i for every built-in distribution). Seeds of one cell are
pooled; histogram counts are per model (log scale in weak-superposition panels).
"""
from __future__ import annotations

from typing import Optional, Sequence

from matplotlib import colormaps
from matplotlib.figure import Figure
import numpy as np

from superkern.analysis.fig_geometry import grid_runs
from superkern.analysis.figures import Context, MissingData, figure, footer, subplots
from superkern.analysis.tables import Run, dist_label, run_grid
from superkern.analysis.weights import cached_stats

STRONG_SPLIT = 1.0  # phi_1: ||W_i|| > 1
WEAK_SPLIT = 0.5    # phi_half: ||W_i|| > 1/2
_PAPER_ORDER = ("power", "exponential", "linear")


def _saved(ctx: Context, runs: Sequence[Run], what: str) -> list[Run]:
    """The runs whose weights file exists; MissingData when weights are off or none is saved."""
    if not ctx.use_weights:
        raise MissingData(f"{what} reads saved weights (disabled)")
    keep = [r for r in runs if r.weights is not None and r.weights.is_file()]
    if not keep:
        raise MissingData(f"{what} needs saved weights (a sweep run without --no-weights)")
    return keep


def _norms(ctx: Context, runs: Sequence[Run]) -> list[np.ndarray]:
    """Row norms of each run's W (unreadable files left out, with the loader's warning)."""
    out = [cached_stats(r.weights, ctx.cache, "norms") for r in runs]
    return [v for v in out if v is not None]


def _nearest(values, target: float) -> float:
    return min(values, key=lambda v: abs(v - target))


def _gamma(runs: Sequence[Run], target: float, what: str) -> float:
    """The gamma of ``runs`` nearest ``target`` on target's side of 0 (strong: gamma < 0,
    weak: gamma > 0)."""
    side = sorted({r.gamma for r in runs if r.gamma * target > 0})
    if not side:
        regime = "strong" if target < 0 else "weak"
        raise MissingData(f"{what} needs {regime}-superposition runs (gamma "
                          f"{'<' if target < 0 else '>'} 0)")
    return _nearest(side, target)


def _edges(norms: Sequence[np.ndarray], bins: int = 48) -> np.ndarray:
    top = max([1.5] + [float(v.max()) * 1.02 for v in norms if v.size])
    return np.linspace(0.0, top, bins + 1)


def _norm_grid(ctx: Context, rows: Sequence[tuple[str, float, list[Run]]], title: str,
               note: str) -> Figure:
    """One histogram of row norms per (row, width) panel. ``rows``: (label, split, runs)."""
    widths = sorted({r.m for _, _, runs in rows for r in runs})
    cells = {(i, w): _norms(ctx, [r for r in runs if r.m == w])
             for i, (_, _, runs) in enumerate(rows) for w in widths}
    if not any(cells.values()):
        raise MissingData(f"{title}: no readable weights file")
    edges = _edges([v for vs in cells.values() for v in vs])
    fig, axes = subplots(len(rows), len(widths), sharex=True, squeeze=False,
                         figsize=(1.9 * len(widths) + 1.2, 1.3 * len(rows) + 1.0))
    for i, (label, split, _) in enumerate(rows):
        for k, w in enumerate(widths):
            ax = axes[i][k]
            vs = cells[(i, w)]
            if vs:
                pooled = np.concatenate(vs)
                ax.hist(pooled, bins=edges, weights=np.full(pooled.size, 1.0 / len(vs)),
                        color="tab:purple" if split == STRONG_SPLIT else "tab:blue")
                if split == WEAK_SPLIT:  # n - m rows near 0 beside ~m near 1: log counts
                    ax.set_yscale("log")
            else:
                ax.text(0.5, 0.5, "no weights", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
            ax.axvline(split, color="tab:red", lw=0.8, ls="--")
            ax.tick_params(which="both", labelsize=6)
            if i == 0:
                ax.set_title(f"m = {w}", fontsize=8)
            if k == 0:
                ax.set_ylabel(label, fontsize=7)
            if i == len(rows) - 1:
                ax.set_xlabel("||W_i||", fontsize=7)
    fig.suptitle(f"{title}: rows per model by norm (dashed: the split at "
                 f"{STRONG_SPLIT:g} strong, {WEAK_SPLIT:g} weak)", fontsize=10)
    fig.tight_layout(rect=(0, 0.02, 1, 0.98))
    footer(fig, ctx, [r for _, _, runs in rows for r in runs], note)
    return fig


def _alpha_rows(ctx: Context, what: str, strong: bool) -> Figure:
    """Figs. 11 / 12: the small grid at one weight decay, one row of panels per alpha."""
    runs, note = grid_runs(ctx, what)
    runs = _saved(ctx, runs, what)
    if strong:
        g = _gamma(runs, -0.55, what)
        split = STRONG_SPLIT
    else:
        g = _gamma(runs, 0.55, what)
        split = WEAK_SPLIT
    sel = [r for r in runs if r.gamma == g]
    rows = [(f"alpha={a:g}", split, [r for r in sel if r.alpha == a])
            for a in sorted({r.alpha for r in sel})]
    regime = "strong" if strong else "weak"
    return _norm_grid(ctx, rows, f"{what}, {regime} superposition (gamma = {g:.3g})", note)


@figure("fig11", "Row-norm histograms at weak superposition, every alpha and width (Fig. 11)")
def fig11(ctx: Context):
    return _alpha_rows(ctx, "Fig. 11", strong=False)


@figure("fig12", "Row-norm histograms at strong superposition, every alpha and width (Fig. 12)")
def fig12(ctx: Context):
    return _alpha_rows(ctx, "Fig. 12", strong=True)


def _dist_order(label: str) -> tuple[int, str]:
    head = label.split()[0]
    return (_PAPER_ORDER.index(head) if head in _PAPER_ORDER else len(_PAPER_ORDER), label)


@figure("fig9", "Row-norm histograms of the large toy models, both regimes (Fig. 9)")
def fig9(ctx: Context):
    runs, note = run_grid([r for r in ctx.results.runs if r.config.get("preset") == "large"],
                          axes=("gamma", "alpha", "dist"))
    if not runs:
        raise MissingData("Fig. 9 needs large-preset runs (the 'fig1' experiment)")
    runs = _saved(ctx, runs, "Fig. 9")
    rows = []
    for label in sorted({dist_label(r.config) for r in runs}, key=_dist_order):
        mine = [r for r in runs if dist_label(r.config) == label]
        if any(r.gamma < 0 for r in mine):
            g = _gamma(mine, -1.0, "Fig. 9")
            rows.append((f"{label}\nstrong {g:g}", STRONG_SPLIT, [r for r in mine if r.gamma == g]))
        if any(r.gamma > 0 for r in mine):
            g = _gamma(mine, 0.1, "Fig. 9")
            rows.append((f"{label}\nweak {g:g}", WEAK_SPLIT, [r for r in mine if r.gamma == g]))
    if not rows:
        raise MissingData("Fig. 9 needs runs with gamma != 0")
    return _norm_grid(ctx, rows, f"Fig. 9 (n = {runs[0].n})", note)


def _strong_alpha1(ctx: Context, what: str) -> tuple[list[Run], str, float, float]:
    """Saved strong runs of the power-law grid at the gamma nearest -1 and alpha nearest 1."""
    runs, note = grid_runs(ctx, what)
    runs = _saved(ctx, runs, what)
    g = _gamma(runs, -1.0, what)
    a = _nearest({r.alpha for r in runs if r.gamma == g}, 1.0)
    return [r for r in runs if r.gamma == g and r.alpha == a], note, g, a


def rank_fraction_above(norms: Sequence[np.ndarray], edges: np.ndarray,
                        split: float = STRONG_SPLIT) -> np.ndarray:
    """Fraction of features with norm > split in each rank bin [edges[k], edges[k+1]) (ranks
    count from 1), pooled over models of one width; NaN where a bin holds no feature."""
    num = np.zeros(len(edges) - 1)
    den = np.zeros(len(edges) - 1)
    for v in norms:
        ranks = np.arange(1, v.size + 1)
        num += np.histogram(ranks, bins=edges, weights=(v > split).astype(float))[0]
        den += np.histogram(ranks, bins=edges)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


@figure("fig6a", "Strong superposition: row norm against feature frequency rank (Fig. 6a)")
def fig6a(ctx: Context):
    sel, note, g, a = _strong_alpha1(ctx, "Fig. 6a")
    widths = sorted({r.m for r in sel})
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4.4))
    w0 = _nearest(widths, 39)
    one = _norms(ctx, [r for r in sel if r.m == w0])  # the first readable seed
    if not one:
        raise MissingData(f"Fig. 6a: no readable weights file at m = {w0}")
    v = one[0]
    ranks = np.arange(1, v.size + 1)
    above = v > STRONG_SPLIT
    ax1.scatter(ranks[~above], v[~above], s=3, color="0.6", label="norm <= 1")
    ax1.scatter(ranks[above], v[above], s=3, color="tab:purple", label="norm > 1")
    ax1.axhline(STRONG_SPLIT, color="tab:red", lw=0.8, ls="--")
    ax1.set_xscale("log")
    ax1.set_xlabel("feature rank i (p_i decreasing)")
    ax1.set_ylabel("||W_i||")
    ax1.set_title(f"one model: m = {w0}", fontsize=9)
    ax1.legend(fontsize=7, markerscale=3)
    n = v.size
    edges = np.unique(np.geomspace(1, n + 1, 25).astype(int))
    mids = np.sqrt(edges[:-1] * np.maximum(edges[1:] - 1, edges[:-1]))
    for col, w in zip(colormaps["viridis"](np.linspace(0, 0.9, len(widths))), widths):
        frac = rank_fraction_above(_norms(ctx, [r for r in sel if r.m == w]), edges)
        ax2.plot(mids, frac, "o-", ms=3, color=col, label=f"m={w}")
    ax2.set_xscale("log")
    ax2.set_ylim(-0.03, 1.03)
    ax2.set_xlabel("feature rank i (log bins)")
    ax2.set_ylabel("fraction of features with norm > 1")
    ax2.legend(fontsize=7)
    # the paper's finding (frequent features have norm > 1) is what the panels test, so the
    # title states the question, not the answer
    fig.suptitle(f"Strong superposition (gamma = {g:.3g}, alpha = {a:g}): row norm against "
                 "feature frequency rank (the paper: frequent features have norm > 1)")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, sel, note)
    return fig


@figure("fig6b", "Strong superposition: row norms bimodal around 1 (Fig. 6b)")
def fig6b(ctx: Context):
    sel, note, g, a = _strong_alpha1(ctx, "Fig. 6b")
    widths = sorted({r.m for r in sel})
    per_width: list[tuple[int, Optional[np.ndarray]]] = []
    for w in widths:
        vs = _norms(ctx, [r for r in sel if r.m == w])
        per_width.append((w, np.concatenate(vs) if vs else None))
    found = [v for _, v in per_width if v is not None]
    if not found:
        raise MissingData("Fig. 6b: no readable weights file")
    edges = _edges(found, bins=60)
    fig, ax = subplots(figsize=(5.6, 4.4))
    for col, (w, v) in zip(colormaps["viridis"](np.linspace(0, 0.9, len(widths))), per_width):
        if v is not None:
            ax.hist(v, bins=edges, density=True, histtype="step", color=col, label=f"m={w}")
    ax.axvline(STRONG_SPLIT, color="tab:red", lw=0.8, ls="--", label="norm = 1")
    ax.set_xlabel("row norm ||W_i||")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    ax.set_title(f"gamma = {g:.3g}, alpha = {a:g}, n = {sel[0].n}", fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, sel, note)
    return fig


@figure("freq_overlaps", "Strong superposition: overlaps among features of similar frequency "
                         "(the probe's frequency bins, for the toy model)")
def freq_overlaps(ctx: Context):
    """m<c^2> inside each of 8 log-spaced frequency-rank bins, at the gamma nearest -1: one
    line per width at the alpha nearest 1 (left), one line per alpha at the width nearest 39
    (right). The same binning as ``superkern probe --corpus`` gives LM heads."""
    runs, note = grid_runs(ctx, "freq_overlaps")
    runs = _saved(ctx, runs, "freq_overlaps")
    g = _gamma(runs, -1.0, "freq_overlaps")
    strong = [r for r in runs if r.gamma == g]
    a0 = _nearest({r.alpha for r in strong}, 1.0)
    w0 = _nearest({r.m for r in strong}, 39)
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4.4), sharey=True)
    drawn = []
    for ax, key, fixed in ((ax1, "m", [r for r in strong if r.alpha == a0]),
                           (ax2, "alpha", [r for r in strong if r.m == w0])):
        values = sorted({getattr(r, key) for r in fixed})
        for col, v in zip(colormaps["viridis"](np.linspace(0, 0.9, len(values))), values):
            used = [(r, cached_stats(r.weights, ctx.cache, "freqbins"))
                    for r in fixed if getattr(r, key) == v]
            used = [(r, st) for r, st in used if st is not None]  # unreadable files: none
            if not used:
                continue
            mids = used[0][1][0]  # one grid has one n: every seed has the same bins
            # mean over seeds of the finite values; a one-feature bin is NaN in every seed
            # (no nanmean: its warning would need the process-wide warnings filters)
            per_seed = np.array([st[1] for _, st in used], dtype=np.float64)
            count = np.isfinite(per_seed).sum(axis=0)
            y = np.where(count > 0, np.nansum(per_seed, axis=0) / np.maximum(count, 1), np.nan)
            ok = np.isfinite(y) & (y > 0)
            ax.plot(mids[ok], y[ok], "o-", ms=3, color=col, label=f"{key}={v:g}")
            drawn += [r for r, _ in used]
        ax.axhline(1.0, color="0.5", ls=":", lw=1, label="random directions")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("feature frequency rank (bin centre)")
        ax.legend(fontsize=7)
    if not drawn:
        raise MissingData("freq_overlaps: no readable weights file")
    ax1.set_ylabel("m x mean c^2 inside the bin")
    ax1.set_title(f"alpha = {a0:g}, every width", fontsize=9)
    ax2.set_title(f"m = {w0}, every alpha", fontsize=9)
    fig.suptitle(f"Strong superposition (gamma = {g:.3g}): overlaps among features of similar "
                 "frequency (seeds averaged)", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, list({id(r): r for r in drawn}.values()), note)  # a run in both panels
    return fig
