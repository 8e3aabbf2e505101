"""Loss-scaling figures: paper Figs. 1, 4a, 4b, 5a, 5b, 6e, 7, 14, 17, 18."""
from __future__ import annotations

import math
from typing import Optional, Sequence

from matplotlib import colormaps
import numpy as np

from superkern.analysis.figures import (Context, MissingData, figure, footer, subplots,
                                        width_ticks)
from superkern.analysis.scaling import CellFit, unlearned_table
from superkern.analysis.tables import one_grid, run_grid
from superkern.analysis.weights import cached_stats


def plain_cells(ctx: Context, fitted: bool = True) -> list[CellFit]:
    """Cells at the default activation density (no density sweep, E = 1)."""
    return [c for c in ctx.fits() if (c.fit is not None or not fitted)
            and c.cell.get("density_s") is None and float(c.cell.get("E") or 1.0) == 1.0]


def power_cells(ctx: Context) -> list[CellFit]:
    return [c for c in plain_cells(ctx) if c.cell.get("dist") == "power"]


def grid_cells(cells: Sequence[CellFit], axes=("gamma", "alpha")) -> tuple[list[CellFit], str]:
    """The cells of the largest grid over ``axes`` (see ``main_grid``) and a footer note."""
    return one_grid(cells, lambda c: c.cell, axes, what="cells")


def fit_note(cells: Sequence[CellFit]) -> str:
    """Widths and the fit ranges actually used (a paper range falls back to all widths on
    short grids), for a footer."""
    widths = sorted({w for c in cells for w in c.m})
    ranges = sorted({c.fit.fit_range for c in cells if c.fit})
    return (f"widths {widths[0]:g}..{widths[-1]:g}" if widths else "") + \
        (f"; fit range {', '.join(ranges)}" if ranges else "")


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def runs_of(ctx: Context, cells: Sequence[CellFit]):
    keys = {tuple(sorted((k, v) for k, v in c.cell.items())) for c in cells}
    from superkern.analysis.tables import cell_key

    return [r for r in ctx.results.runs if cell_key(r.config) in keys]


def grid_of(cells: Sequence[CellFit], value) -> tuple[list[float], list[float], np.ndarray]:
    """(gammas, alphas, Z[alpha, gamma]) of a value over power-law cells; NaN where absent."""
    gammas = sorted({c.gamma for c in cells})
    alphas = sorted({c.alpha for c in cells})
    z = np.full((len(alphas), len(gammas)), np.nan)
    at: dict[tuple[int, int], CellFit] = {}
    for c in cells:
        ij = (alphas.index(c.alpha), gammas.index(c.gamma))
        if ij in at:
            raise MissingData(f"cells '{at[ij].label}' and '{c.label}' both sit at gamma="
                              f"{c.gamma:.3g}, alpha={c.alpha:g}: the results mix grids; pass "
                              "one grid's results")
        at[ij] = c
        z[ij] = value(c)
    return gammas, alphas, z


def heatmap(ax, gammas, alphas, z, label: str, cmap: str = "viridis", vmin=None, vmax=None):
    im = ax.imshow(z, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                   extent=(-0.5, len(gammas) - 0.5, -0.5, len(alphas) - 0.5))
    step_g = max(1, len(gammas) // 6)
    step_a = max(1, len(alphas) // 9)
    ax.set_xticks(range(0, len(gammas), step_g),
                  [f"{g:.2f}" for g in gammas][::step_g])
    ax.set_yticks(range(0, len(alphas), step_a), [f"{a:g}" for a in alphas][::step_a])
    ax.set_xlabel("weight decay gamma")
    ax.set_ylabel("data exponent alpha")
    ax.figure.colorbar(im, ax=ax, label=label)
    return im


def _need_grid(cells: Sequence[CellFit], what: str) -> None:
    if len({c.gamma for c in cells}) < 2 or len({c.alpha for c in cells}) < 2:
        raise MissingData(f"{what} needs power-law cells over >= 2 weight decays and >= 2 data "
                          "exponents (the 'small' experiment)")


def _pick(values: Sequence[float], k: int) -> list[float]:
    """At most k values, evenly spread."""
    values = sorted(values)
    if len(values) <= k:
        return values
    idx = np.unique(np.linspace(0, len(values) - 1, k).round().astype(int))
    return [values[i] for i in idx]


def regime_panels(cells: Sequence[CellFit]) -> list[tuple[str, float]]:
    """Weak panel at the positive gamma nearest 0.1, strong panel at the most negative."""
    gammas = sorted({c.gamma for c in cells})
    panels = []
    weak = [g for g in gammas if g > 0]
    if weak:
        panels.append(("weak superposition", min(weak, key=lambda g: abs(g - 0.1))))
    strong = [g for g in gammas if g < 0]
    if strong:
        panels.append(("strong superposition", strong[0]))
    if not panels and gammas:
        panels.append(("gamma = 0", gammas[0]))
    return panels


def _panel_cells(cells: Sequence[CellFit], gamma: float, k: int = 8) -> list[CellFit]:
    sel = [c for c in cells if c.gamma == gamma]
    powers = [c for c in sel if c.cell.get("dist") == "power"]
    keep_alpha = set(_pick([c.alpha for c in powers], k))
    return [c for c in sel if c.cell.get("dist") != "power" or c.alpha in keep_alpha]


def _without_gamma(label: str) -> str:
    """A cell's label (with n, steps, ... where cells of several grids need them) less its
    gamma, which the panel's title gives."""
    return ", ".join(p for p in label.split(", ") if not p.startswith("gamma="))


@figure("fig1", "Loss vs model width at weak and strong superposition (Fig. 1b, 1d)")
def fig1(ctx: Context):
    cells = plain_cells(ctx)
    if not cells:
        raise MissingData("no cell with >= 3 widths")
    panels = regime_panels(cells)
    fig, axes = subplots(1, len(panels), figsize=(5.4 * len(panels), 4.4), squeeze=False)
    used = []
    for ax, (name, g) in zip(axes[0], panels):
        sel = _panel_cells(cells, g)
        colors = colormaps["viridis"](np.linspace(0, 0.9, max(len(sel), 1)))
        for col, c in zip(colors, sel):
            f = c.fit
            m = np.array(c.m)
            ax.errorbar(m, c.loss_mean, yerr=np.nan_to_num(c.loss_std), fmt="o", ms=4,
                        color=col, capsize=2,
                        label=f"{_without_gamma(c.label)}: alpha_m={f.alpha_m:.2f}"
                              f"+-{f.stderr:.2g}")
            mu = np.array(f.m_used)
            ax.plot(mu, f.predict(mu), "-", color=col, lw=1.2, alpha=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        width_ticks(ax, [w for c in sel for w in c.m])
        ax.set_xlabel("model width m")
        ax.set_ylabel(ctx.loss_label)
        ax.set_title(f"{name} (gamma={g:g})")
        ax.legend(fontsize=7)
        used += sel
    fig.suptitle("Loss vs width; lines: least-squares fits over the fit range")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, runs_of(ctx, used), fit_note(used))
    return fig


@figure("fig4a", "R^2 of the log-log fits by distribution and regime (Fig. 4a)")
def fig4a(ctx: Context):
    cells = [c for c in plain_cells(ctx) if c.cell.get("dist") != "power" or c.alpha == 1.2
             or len({x.alpha for x in plain_cells(ctx)}) == 1]
    panels = regime_panels(cells)
    labels, vals, colors = [], [], []
    for name, g in panels:
        for c in _panel_cells(cells, g, k=4):
            labels.append(f"{_without_gamma(c.label)}\n{name.split()[0]}")
            vals.append(c.fit.r2)
            colors.append("tab:red" if g < 0 else "tab:blue")
    if not vals:
        raise MissingData("needs fitted cells of several frequency distributions (exponential, "
                          "power 1.2, linear: the 'fig1' experiment)")
    fig, ax = subplots(figsize=(max(5, 1.1 * len(vals)), 4))
    ax.bar(range(len(vals)), vals, color=colors)
    ax.set_xticks(range(len(vals)), labels, fontsize=7)
    ax.set_ylim(min(0.8, min(vals) - 0.02), 1.0)
    ax.set_ylabel("R^2 of ln L vs ln m")
    ax.set_title("How power-law-like is the loss? (red: strong, blue: weak)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    footer(fig, ctx, runs_of(ctx, cells))
    return fig


def _fit_heatmap(ctx: Context, what: str, value, label: str, title: str, **style):
    """A heatmap over (gamma, alpha) of one number of each power-law cell's alpha_m fit."""
    cells, note = grid_cells(power_cells(ctx))
    _need_grid(cells, what)
    g, a, z = grid_of(cells, value)
    fig, ax = subplots(figsize=(6, 4.8))
    heatmap(ax, g, a, z, label, **style)
    ax.set_title(title)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, runs_of(ctx, cells), _join(fit_note(cells), note))
    return fig


@figure("fig4b", "Model exponent alpha_m over weight decay x data exponent (Fig. 4b)")
def fig4b(ctx: Context):
    return _fit_heatmap(ctx, "Fig. 4b", lambda c: c.fit.alpha_m, "alpha_m",
                        "alpha_m = -slope of ln L on ln m", cmap="magma")


@figure("fig14", "R^2 of the alpha_m fits over weight decay x data exponent (Fig. 14)")
def fig14(ctx: Context):
    return _fit_heatmap(ctx, "Fig. 14", lambda c: c.fit.r2, "R^2", "R^2 of ln L vs ln m",
                        cmap="cividis", vmax=1.0)


@figure("fig5a", "Loss vs loss of unlearned features, every weight decay (Fig. 5a, 10b)")
def fig5a(ctx: Context):
    """The paper's Fig. 5a: every run of one grid (all gamma), linear axes, coloured by gamma.
    Weak runs lie near loss = prediction; strong ones (every feature represented) sit at a
    prediction near 0 with a loss of their own."""
    runs = [r for r in ctx.results.runs if r.config.get("density_s") is None
            and float(r.config.get("E") or 1.0) == 1.0 and math.isfinite(r.phi_half)]
    runs, note = run_grid(runs, axes=("gamma", "alpha", "dist"))
    rows = unlearned_table(runs, weak_only=False)
    if not any(u.gamma > 0 for u in rows):
        raise MissingData("no weak-superposition runs (gamma > 0) with phi_half")
    fig, ax = subplots(figsize=(5.4, 4.6))
    gammas = np.array([u.gamma for u in rows])
    lim = max(gammas.max(), -gammas.min(), 1e-12)
    sc = ax.scatter([u.predicted for u in rows], [u.loss for u in rows], s=12, c=gammas,
                    cmap="coolwarm", vmin=-lim, vmax=lim)
    hi = max(max(u.predicted for u in rows), max(u.loss for u in rows))
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="loss = prediction")
    ax.set_xlabel("<v^2> sum_{i > phi_half n} p_i")
    ax.set_ylabel(ctx.loss_label)
    ax.legend(fontsize=8)
    ax.figure.colorbar(sc, ax=ax, label="gamma")
    ax.set_title("Loss from activated but unlearned features (red: weak, blue: strong)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    by_id = {r.run_id: r for r in runs}
    footer(fig, ctx, [by_id[u.run_id] for u in rows], note)
    return fig


def ideal_weak_cells(ctx: Context, k: int = 9) -> tuple[list[CellFit], str]:
    """Weak cells closest to no superposition: the k with the smallest maximum ambiguity
    ||W W^T - I_m||_2 over widths (Appendix D.5) when weights exist, else gamma nearest 0.5."""
    cells = [c for c in grid_cells(power_cells(ctx))[0] if c.gamma > 0]
    if not cells:
        return [], ""
    if ctx.use_weights:
        scores = []
        for c in cells:
            vals = [cached_stats(r.weights, ctx.cache, "ambiguity") for r in runs_of(ctx, [c])]
            if vals and all(v is not None for v in vals):
                scores.append((max(vals), c))
        if len(scores) == len(cells):
            scores.sort(key=lambda t: t[0])
            return [c for _, c in scores[:k]], "smallest max ambiguity"
    g = min({c.gamma for c in cells}, key=lambda x: abs(x - 0.5))
    return [c for c in cells if c.gamma == g], f"gamma={g:.2f} (no weights for ambiguity)"


@figure("fig5b", "alpha_m vs alpha near no superposition (Fig. 5b)")
def fig5b(ctx: Context):
    sel, how = ideal_weak_cells(ctx)
    if len({c.alpha for c in sel}) < 2:
        raise MissingData("needs weak-superposition power-law cells over >= 2 data exponents")
    fig, ax = subplots(figsize=(5.2, 4.4))
    a = np.array([c.alpha for c in sel])
    ax.errorbar(a, [c.fit.alpha_m for c in sel], yerr=[c.fit.stderr for c in sel], fmt="o",
                capsize=2, label="measured")
    xs = np.linspace(min(a.min(), 1.0), a.max(), 50)
    ax.plot(xs, xs - 1, "k--", lw=1, label="alpha - 1")
    ax.set_xlabel("data exponent alpha")
    ax.set_ylabel("model exponent alpha_m")
    ax.legend(fontsize=8)
    ax.set_title(f"Weak superposition, cells closest to ideal ({how})", fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, runs_of(ctx, sel), fit_note(sel))
    return fig


def _alpha_rule_axes(ax, alphas: np.ndarray, values: Sequence[float] = ()) -> None:
    xs = np.linspace(min(alphas.min(), 0.0), alphas.max(), 100)
    ax.axhline(1.0, color="k", lw=0.8, label="alpha_m = 1")
    ax.plot(xs, 2 * (xs - 1), "k--", lw=0.8, label="2(alpha - 1)")
    ax.plot(xs, xs - 1, "k:", lw=0.8, label="alpha - 1")
    ax.plot(xs, np.maximum(1, 2 * (xs - 1)), color="tab:red", lw=2, alpha=0.35,
            label="max(1, 2(alpha - 1))")
    ax.set_xlabel("data exponent alpha")
    ax.set_ylabel("model exponent alpha_m")
    vals = np.asarray(list(values) or [1.0], dtype=float)
    ax.set_ylim(min(-0.1, vals.min() - 0.1), max(2.2, vals.max() + 0.2))


@figure("fig6e", "Strong superposition: alpha_m vs alpha and max(1, 2(alpha-1)) (Fig. 6e)")
def fig6e(ctx: Context):
    grid, note = grid_cells(power_cells(ctx))
    cells = [c for c in grid if c.gamma < 0]
    if len({c.alpha for c in cells}) < 2:
        raise MissingData("needs strong-superposition (gamma < 0) power-law cells over >= 2 "
                          "data exponents")
    neg = sorted({c.gamma for c in cells})
    chosen = neg[1:4] if len(neg) >= 4 else neg  # the paper: 2nd to 4th smallest gammas
    fig, ax = subplots(figsize=(5.6, 4.6))
    colors = colormaps["plasma"](np.linspace(0, 0.8, len(chosen)))
    used = []
    for col, g in zip(colors, chosen):
        sel = sorted((c for c in cells if c.gamma == g), key=lambda c: c.alpha)
        ax.errorbar([c.alpha for c in sel], [c.fit.alpha_m for c in sel],
                    yerr=[c.fit.stderr for c in sel], fmt="o", ms=4, capsize=2, color=col,
                    label=f"gamma={g:.2f}")
        used += sel
    weak, _ = ideal_weak_cells(ctx)
    if weak:
        ax.errorbar([c.alpha for c in weak], [c.fit.alpha_m for c in weak],
                    yerr=[c.fit.stderr for c in weak], fmt="s", ms=3, color="0.6",
                    label="weak, near ideal")
    _alpha_rule_axes(ax, np.array([c.alpha for c in cells]),
                     [c.fit.alpha_m for c in used + weak])
    ax.legend(fontsize=7)
    ax.set_title("alpha_m ~ max(1, 2(alpha - 1)) at strong superposition", fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, runs_of(ctx, used + weak), _join(fit_note(used + weak), note))
    return fig


@figure("fig17", "alpha_m vs alpha with every width above sqrt(2n) (Fig. 17)")
def fig17(ctx: Context):
    cells, note = grid_cells([c for c in power_cells(ctx) if c.gamma < 0
                              and all(m * m / 2 > int(c.cell.get("n") or 0) for m in c.m)])
    if len({c.alpha for c in cells}) < 2:
        raise MissingData("needs strong-superposition cells whose widths all have m^2/2 > n "
                          "(the 'fig17' experiment) over >= 2 data exponents")
    fig, ax = subplots(figsize=(5.6, 4.6))
    gammas = sorted({c.gamma for c in cells})
    for col, g in zip(colormaps["plasma"](np.linspace(0, 0.8, len(gammas))), gammas):
        sel = sorted((c for c in cells if c.gamma == g), key=lambda c: c.alpha)
        ax.errorbar([c.alpha for c in sel], [c.fit.alpha_m for c in sel],
                    yerr=[c.fit.stderr for c in sel], fmt="o", ms=4, capsize=2, color=col,
                    label=f"gamma={g:.2f}")
    _alpha_rule_axes(ax, np.array([c.alpha for c in cells]), [c.fit.alpha_m for c in cells])
    ax.legend(fontsize=7)
    ax.set_title(f"widths {min(c.m[0] for c in cells):g}..{max(c.m[-1] for c in cells):g}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, runs_of(ctx, cells), _join(fit_note(cells), note))
    return fig


def density_cells(ctx: Context) -> list[CellFit]:
    """The cells of the activation-density sweep (``density_s`` set), one grid over gamma
    and density."""
    cells = [c for c in ctx.fits() if c.cell.get("dist") == "power"
             and c.cell.get("density_s") is not None]
    cells, _ = grid_cells(cells, axes=("gamma", "density_s"))
    if len({round(c.E, 9) for c in cells}) < 2:
        raise MissingData("needs runs at >= 2 activation densities E (the 'density' "
                          "experiment)")
    return cells


@figure("fig7", "Activation density: loss vs E at fixed superposition, loss vs m per E (Fig. 7)")
def fig7(ctx: Context, gamma: Optional[float] = None):
    cells = density_cells(ctx)
    runs = [r for r in runs_of(ctx, cells)]
    widths = sorted({r.m for r in runs})
    m0 = min(widths, key=lambda w: abs(w - 63))
    fig, (ax1, ax2) = subplots(1, 2, figsize=(10.5, 4.4))
    gammas = sorted({c.gamma for c in cells})
    colors = colormaps["coolwarm"](np.linspace(0, 1, len(gammas)))
    for col, g in zip(colors, gammas):
        pts = sorted((r.E, r.final_loss) for r in runs if r.gamma == g and r.m == m0)
        if not pts:
            continue
        e, loss = np.array(pts).T
        k = float(e @ loss / (e @ e))  # least squares through the origin: loss = k E
        ax1.plot(e, loss, "o", color=col, ms=4, label=f"gamma={g:.2f}")
        ax1.plot(e, k * e, "-", color=col, lw=0.8)
    ax1.set_xlabel("activation density E")
    ax1.set_ylabel(ctx.loss_label)
    ax1.set_title(f"m = {m0}; lines: loss = k E", fontsize=9)
    ax1.legend(fontsize=6, ncol=2)
    # 7b: loss vs width at several densities, one gamma, each with its fitted alpha_m.
    g0 = gammas[0] if gamma is None else gamma
    sel = sorted((c for c in cells if c.gamma == g0 and c.fit), key=lambda c: c.E)
    for col, c in zip(colormaps["viridis"](np.linspace(0, 0.9, max(len(sel), 1))), sel):
        ax2.errorbar(c.m, c.loss_mean, yerr=np.nan_to_num(c.loss_std), fmt="o", ms=3,
                     capsize=2, color=col,
                     label=f"E={c.E:.3g}: alpha_m={c.fit.alpha_m:.2f}+-{c.fit.stderr:.2g}")
        mu = np.array(c.fit.m_used)
        ax2.plot(mu, c.fit.predict(mu), "-", color=col, lw=1)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    width_ticks(ax2, [w for c in sel for w in c.m])
    ax2.set_xlabel("model width m")
    ax2.set_ylabel(ctx.loss_label)
    ax2.set_title(f"gamma = {g0:.2f}", fontsize=9)
    ax2.legend(fontsize=6)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, runs, fit_note(sel))
    return fig


@figure("fig18", "alpha_m vs activation density at every weight decay (Fig. 18)")
def fig18(ctx: Context):
    cells = [c for c in density_cells(ctx) if c.fit]
    fig, ax = subplots(figsize=(5.8, 4.6))
    gammas = sorted({c.gamma for c in cells})
    for col, g in zip(colormaps["coolwarm"](np.linspace(0, 1, len(gammas))), gammas):
        sel = sorted((c for c in cells if c.gamma == g), key=lambda c: c.E)
        ax.errorbar([c.E for c in sel], [c.fit.alpha_m for c in sel],
                    yerr=[c.fit.stderr for c in sel], fmt="o-", ms=3, lw=0.8, capsize=2,
                    color=col, label=f"gamma={g:.2f}")
    ax.set_xlabel("activation density E")
    ax.set_ylabel("model exponent alpha_m")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    footer(fig, ctx, runs_of(ctx, cells))
    return fig
