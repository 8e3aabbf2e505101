"""Representation-geometry figures: paper Figs. 3, 6c, 6d, 10, 13, 15, 16."""
from __future__ import annotations

import math

from matplotlib import colormaps
from matplotlib.figure import Figure
import numpy as np

from superkern.analysis.fig_scaling import heatmap
from superkern.analysis.figures import (Context, MissingData, figure, footer, subplots,
                                        width_ticks)
from superkern.analysis.scaling import unlearned_table
from superkern.analysis.tables import Run, dist_label, run_grid
from superkern.analysis.weights import cached_stats, random_var_abs


def plain_runs(ctx: Context, dist: str | None = "power") -> list[Run]:
    """Runs at the default activation density (E = 1, no density sweep)."""
    return [r for r in ctx.results.runs if r.config.get("density_s") is None
            and float(r.config.get("E") or 1.0) == 1.0
            and (dist is None or r.config.get("dist") == dist)]


def _mean_grid(runs: list[Run], m: int, value: str):
    gammas = sorted({r.gamma for r in runs})
    alphas = sorted({r.alpha for r in runs})
    z = np.full((len(alphas), len(gammas)), np.nan)
    for i, a in enumerate(alphas):
        for j, g in enumerate(gammas):
            vals = [getattr(r, value) for r in runs if r.m == m and r.alpha == a and r.gamma == g]
            if vals:  # the mean over seeds
                z[i, j] = float(np.mean(vals))
    return gammas, alphas, z


def grid_runs(ctx: Context, what: str) -> tuple[list[Run], str]:
    """The power-law runs of the largest (gamma, alpha) grid (see ``main_grid``), and a
    footer note on what was left out."""
    runs, note = run_grid(plain_runs(ctx))
    if len({r.gamma for r in runs}) < 2 or len({r.alpha for r in runs}) < 2:
        raise MissingData(f"{what} needs power-law runs over >= 2 weight decays and >= 2 data "
                          "exponents (the 'small' experiment)")
    return runs, note


@figure("fig3", "Fraction represented phi_half vs weight decay and data exponent (Fig. 3)")
def fig3(ctx: Context):
    runs, note = grid_runs(ctx, "Fig. 3")
    widths = sorted({r.m for r in runs})
    m0 = min(widths, key=lambda w: abs(w - 39))
    a0 = min({r.alpha for r in runs}, key=lambda a: abs(a - 1.0))
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4.5))
    for col, w in zip(colormaps["viridis"](np.linspace(0, 0.9, len(widths))), widths):
        pts = sorted((r.gamma, r.phi_half) for r in runs if r.m == w and r.alpha == a0)
        if pts:
            g, ph = np.array(pts).T
            ax1.plot(g, ph, "o-", ms=3, color=col, label=f"m={w}")
            ax1.axhline(w / runs[0].n, color=col, lw=0.6, ls=":")
    ax1.set_yscale("log")
    ax1.set_xlabel("weight decay gamma")
    ax1.set_ylabel("phi_half (dotted: m/n)")
    ax1.set_title(f"alpha = {a0:g}", fontsize=9)
    ax1.legend(fontsize=7)
    g, a, z = _mean_grid(runs, m0, "phi_half")
    heatmap(ax2, g, a, z, "phi_half", cmap="viridis_r", vmin=0, vmax=1)
    ax2.set_title(f"m = {m0}", fontsize=9)
    fig.suptitle("Weight decay tunes superposition: phi_half ~ 1 (gamma < 0) to ~ m/n (gamma > 0)")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, runs, note)
    return fig


@figure("fig13", "phi_half heatmaps at every width (Fig. 13)")
def fig13(ctx: Context):
    runs, note = grid_runs(ctx, "Fig. 13")
    widths = sorted({r.m for r in runs})
    fig, axes = subplots(1, len(widths), figsize=(3.3 * len(widths), 3.4), squeeze=False)
    for ax, w in zip(axes[0], widths):
        g, a, z = _mean_grid(runs, w, "phi_half")
        heatmap(ax, g, a, z, "phi_half", cmap="viridis_r", vmin=0, vmax=1)
        ax.set_title(f"m = {w}", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    footer(fig, ctx, runs, note)
    return fig


def _strong_grid(ctx: Context, keep) -> tuple[list[Run], str]:
    """Strong-superposition runs (gamma < 0) passing ``keep``, from one grid (every field but
    gamma, alpha and the distribution equal), and a footer note on what was left out."""
    return run_grid([r for r in plain_runs(ctx, dist=None) if r.gamma < 0 and keep(r)],
                    axes=("gamma", "alpha", "dist"))


def _scatter_runs(fig, ax, runs: list[Run], ys, **kw) -> None:
    """Runs at their widths, coloured by distribution when there are several (Fig. 10),
    else by the power law's alpha (Fig. 6)."""
    dists = sorted({dist_label(r.config) for r in runs})
    if len(dists) > 1:
        for col, d in zip(colormaps["tab10"](np.arange(len(dists))), dists):
            sel = [i for i, r in enumerate(runs) if dist_label(r.config) == d]
            ax.scatter([runs[i].m for i in sel], [ys[i] for i in sel], color=col, label=d, **kw)
        return
    alphas = np.array([r.alpha for r in runs])
    finite = alphas[np.isfinite(alphas)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    sc = ax.scatter([r.m for r in runs], ys, c=np.nan_to_num(alphas), cmap="viridis",
                    vmin=lo, vmax=hi, label=dists[0] if dists else None, **kw)
    if hi > lo:
        fig.colorbar(sc, ax=ax, label="alpha")


@figure("fig6c", "Fraction strongly represented phi_1 vs width (Fig. 6c, 10c)")
def fig6c(ctx: Context):
    runs, note = _strong_grid(ctx, lambda r: math.isfinite(r.phi_1))
    if len({r.m for r in runs}) < 2:
        raise MissingData("needs strong-superposition runs (gamma < 0) at >= 2 widths")
    g0 = min(r.gamma for r in runs)
    runs = [r for r in runs if r.gamma == g0]
    n = runs[0].n  # one grid: one n
    fig, ax = subplots(figsize=(5.4, 4.5))
    _scatter_runs(fig, ax, runs, [r.phi_1 for r in runs], s=14)
    ms = np.geomspace(min(r.m for r in runs), max(r.m for r in runs), 50)
    ax.plot(ms, np.minimum(1, ms / n), "k:", lw=1, label="m/n")
    ax.plot(ms, np.minimum(1, ms ** 2 / 2 / n), "k--", lw=1, label="min(1, m^2/2n)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    width_ticks(ax, [r.m for r in runs])
    ax.set_xlabel("model width m")
    ax.set_ylabel("phi_1 (norm > 1)")
    ax.legend(fontsize=8)
    ax.set_title(f"gamma = {g0:.2f}, n = {n}", fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, runs, note)
    return fig


@figure("fig6d", "Mean squared overlap of strongly represented rows vs width (Fig. 6d, 10d)")
def fig6d(ctx: Context):
    runs, note = _strong_grid(
        ctx, lambda r: math.isfinite(float(r.geometry.get("mean_sq_strong") or math.nan)))
    if len({r.m for r in runs}) < 2:
        raise MissingData("needs strong-superposition runs with geometry.mean_sq_strong at >= 2 "
                          "widths")
    fig, ax = subplots(figsize=(5.4, 4.5))
    _scatter_runs(fig, ax, runs, [r.geometry["mean_sq_strong"] for r in runs], s=12)
    k2 = [(r.m, r.geometry.get("welch_kappa2_strong")) for r in runs]
    k2 = [(m, v) for m, v in k2 if v is not None and math.isfinite(v)]
    if k2:
        ax.scatter(*zip(*k2), marker="_", color="k", s=60, label="Welch kappa^2 (same count)")
    ms = np.geomspace(min(r.m for r in runs), max(r.m for r in runs), 50)
    ax.plot(ms, 1 / ms, "k--", lw=1, label="1/m")
    ax.set_xscale("log")
    ax.set_yscale("log")
    width_ticks(ax, [r.m for r in runs])
    ax.set_xlabel("model width m")
    ax.set_ylabel("mean cos^2 among rows with norm > 1")
    ax.legend(fontsize=7)
    ax.set_title(f"gamma < 0, n = {runs[0].n}", fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, runs, note)
    return fig


def _weight_runs(ctx: Context, what: str) -> tuple[list[Run], str]:
    if not ctx.use_weights:
        raise MissingData(f"{what} reads saved weights (disabled)")
    runs, note = _strong_grid(ctx, lambda r: r.weights is not None and r.weights.is_file())
    if len({r.m for r in runs}) < 2:
        raise MissingData(f"{what} needs saved weights of strong-superposition runs at >= 2 "
                          "widths")
    return runs, note


def _weight_split_vs_m(ctx: Context, what: str, split: str, key: str, ylabel: str,
                       reference) -> Figure:
    """Scatter of one statistic of the strong/weak row split of saved weights against m,
    coloured by alpha, with a reference curve ``reference(widths) -> (x, y, label)``."""
    pts = []
    runs, note = _weight_runs(ctx, what)
    for r in runs:
        st = cached_stats(r.weights, ctx.cache, "overlaps")
        v = math.nan if st is None else st[split][key]  # unreadable file: left out
        if math.isfinite(v):
            pts.append((r, v))
    if not pts:
        raise MissingData(f"no run has >= 2 {split}ly represented rows")
    fig, ax = subplots(figsize=(5.4, 4.5))
    _scatter_runs(fig, ax, [r for r, _ in pts], [v for _, v in pts], s=12)
    x, y, label = reference(sorted({r.m for r, _ in pts}))
    ax.plot(x, y, "k--", lw=1, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    width_ticks(ax, [r.m for r, _ in pts])
    ax.set_xlabel("model width m")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, [r for r, _ in pts], note)
    return fig


@figure("fig15", "Variance of |overlap| among strongly represented rows (Fig. 15)")
def fig15(ctx: Context):
    return _weight_split_vs_m(
        ctx, "Fig. 15", "strong", "var_abs", "var |cos| among rows with norm > 1",
        lambda w: (w, [random_var_abs(x) for x in w], "random unit vectors (m^2/2 of them)"))


@figure("fig16", "Mean squared overlap of weakly represented rows (Fig. 16)")
def fig16(ctx: Context):
    def one_over_m(w):
        ms = np.geomspace(min(w), max(w), 50)
        return ms, 1 / ms, "1/m"
    return _weight_split_vs_m(ctx, "Fig. 16", "weak", "mean_sq",
                              "mean cos^2 among rows with 0 < norm <= 1", one_over_m)


@figure("fig10", "Large toy model vs theory: phi_half, unlearned loss, phi_1, overlaps (Fig. 10)")
def fig10(ctx: Context):
    runs, note = run_grid([r for r in ctx.results.runs if r.config.get("preset") == "large"],
                          axes=("gamma", "alpha", "dist"))
    if len({r.m for r in runs}) < 2:
        raise MissingData("needs large-preset runs (the 'fig1' experiment) at >= 2 widths")
    n = runs[0].n
    fig, axes = subplots(1, 4, figsize=(17, 4.2))
    markers = {True: "s", False: "o"}
    dists = sorted({dist_label(r.config) for r in runs})
    colors = dict(zip(dists, colormaps["tab10"](np.arange(len(dists)))))
    ms = np.geomspace(min(r.m for r in runs), max(r.m for r in runs), 50)
    for r in runs:
        col, mk = colors[dist_label(r.config)], markers[r.gamma < 0]
        axes[0].scatter(r.m, r.phi_half, color=col, marker=mk, s=14)
        if r.gamma < 0:
            axes[2].scatter(r.m, r.phi_1, color=col, marker=mk, s=14)
            v = r.geometry.get("mean_sq_strong")
            if v is not None and math.isfinite(v):
                axes[3].scatter(r.m, v, color=col, marker=mk, s=14)
    for u in unlearned_table(runs):
        axes[1].scatter(u.predicted, u.loss, color=colors[u.label], s=14)
    axes[0].plot(ms, ms / n, "k--", lw=1)
    axes[0].set_ylabel("phi_half (dashed: m/n)")
    axes[1].set_xlabel("<v^2> sum_{i > phi_half n} p_i (weak)")
    axes[1].set_ylabel(ctx.loss_label)
    lims = axes[1].get_xlim()
    axes[1].plot(lims, lims, "k--", lw=1)
    axes[2].plot(ms, ms / n, "k:", lw=1)
    axes[2].plot(ms, np.minimum(1, ms ** 2 / 2 / n), "k--", lw=1)
    axes[2].set_ylabel("phi_1 (strong; m/n, min(1, m^2/2n))")
    axes[3].plot(ms, 1 / ms, "k--", lw=1)
    axes[3].set_ylabel("mean cos^2, norm > 1 (dashed: 1/m)")
    for i, ax in enumerate(axes):
        ax.set_xscale("log")
        ax.set_yscale("log")
        if i != 1:
            ax.set_xlabel("model width m")
            width_ticks(ax, [r.m for r in runs])
    for d, col in colors.items():
        axes[0].scatter([], [], color=col, label=d)
    axes[0].scatter([], [], color="k", marker="s", label="strong (gamma<0)")
    axes[0].scatter([], [], color="k", marker="o", label="weak")
    axes[0].legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    footer(fig, ctx, runs, f"n = {n}" + (f"; {note}" if note else ""))
    return fig
