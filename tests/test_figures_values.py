"""What the phi_half and exponent figures draw, read back from their artists and compared with
values computed here from the stored rows and fits: Figs. 3, 13 (phi_half by gamma, alpha, m),
14 (R^2 heatmap), 6e (alpha_m vs alpha at strong superposition) and 18 (alpha_m vs E).
A figure that renders the wrong quantity, or the right one on the wrong pixel, fails here."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from superkern.analysis.fig_geometry import fig3, fig13, grid_runs
from superkern.analysis.fig_scaling import (density_cells, fig6e, fig14, fig18, grid_cells,
                                            power_cells)
from superkern.analysis.figures import Context
from superkern.analysis.tables import load_results


@pytest.fixture(scope="module")
def ctx(results_file):
    return Context(load_results(results_file), n_boot=0, use_weights=False)


def _heatmaps(fig):
    """(axis title, image array) of each heatmap panel (colorbar axes left out)."""
    return [(ax.get_title(), np.asarray(ax.images[0].get_array(), dtype=float))
            for ax in fig.axes if ax.images]


def _phi_grid(runs, m):
    """Mean phi_half over seeds, Z[alpha index, gamma index], from the rows themselves."""
    gammas, alphas = sorted({r.gamma for r in runs}), sorted({r.alpha for r in runs})
    acc = defaultdict(list)
    for r in runs:
        if r.m == m:
            acc[(alphas.index(r.alpha), gammas.index(r.gamma))].append(r.phi_half)
    z = np.full((len(alphas), len(gammas)), np.nan)
    for ij, vals in acc.items():
        z[ij] = np.mean(vals)
    return z


def test_fig3_lines_and_heatmap_are_phi_half(ctx):
    runs, _ = grid_runs(ctx, "Fig. 3")
    a0 = min({r.alpha for r in runs}, key=lambda a: abs(a - 1.0))
    widths = sorted({r.m for r in runs})
    fig = fig3(ctx)
    left = fig.axes[0]
    drawn = {ln.get_label(): ln.get_data() for ln in left.get_lines()
             if ln.get_label().startswith("m=")}
    assert sorted(drawn) == sorted(f"m={w}" for w in widths)
    for w in widths:
        want = sorted((r.gamma, r.phi_half) for r in runs if r.m == w and r.alpha == a0)
        x, y = drawn[f"m={w}"]
        assert np.allclose(x, [g for g, _ in want]) and np.allclose(y, [p for _, p in want])
    # the dotted references at m/n, one per width
    refs = sorted(ln.get_ydata()[0] for ln in left.get_lines() if ln.get_linestyle() == ":")
    assert np.allclose(refs, [w / runs[0].n for w in widths])
    m0 = min(widths, key=lambda w: abs(w - 39))
    (title, z), = _heatmaps(fig)
    assert title == f"m = {m0}"
    assert np.allclose(z, _phi_grid(runs, m0), equal_nan=True)


def test_fig13_one_phi_half_heatmap_per_width(ctx):
    runs, _ = grid_runs(ctx, "Fig. 13")
    fig = fig13(ctx)
    maps = _heatmaps(fig)
    assert [t for t, _ in maps] == [f"m = {w}" for w in sorted({r.m for r in runs})]
    for title, z in maps:
        assert np.allclose(z, _phi_grid(runs, int(title.split("=")[1])), equal_nan=True), title


def test_fig14_pixels_are_each_cells_r2(ctx):
    cells, _ = grid_cells(power_cells(ctx))
    gammas, alphas = sorted({c.gamma for c in cells}), sorted({c.alpha for c in cells})
    want = np.full((len(alphas), len(gammas)), np.nan)
    for c in cells:
        want[alphas.index(c.alpha), gammas.index(c.gamma)] = c.fit.r2
    assert np.isfinite(want).sum() >= 4 and np.nanstd(want) > 0  # a map that could be wrong
    fig = fig14(ctx)
    (_, z), = _heatmaps(fig)
    assert np.allclose(z, want, equal_nan=True)


def _series(ax) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """label -> (x, y, half error bar) of each errorbar series."""
    out = {}
    for cont in ax.containers:
        x, y = cont.lines[0].get_data()
        seg = cont.lines[2][0].get_segments() if cont.lines[2] else []
        err = np.array([(s[1][1] - s[0][1]) / 2 for s in seg])
        out[cont.get_label()] = (np.asarray(x), np.asarray(y), err)
    return out


def test_fig6e_points_are_strong_cells_alpha_m(ctx):
    grid, _ = grid_cells(power_cells(ctx))
    strong = [c for c in grid if c.gamma < 0]
    neg = sorted({c.gamma for c in strong})
    chosen = neg[1:4] if len(neg) >= 4 else neg
    fig = fig6e(ctx)
    series = _series(fig.axes[0])
    for g in chosen:
        sel = sorted((c for c in strong if c.gamma == g), key=lambda c: c.alpha)
        x, y, err = series[f"gamma={g:.2f}"]
        assert np.allclose(x, [c.alpha for c in sel])
        assert np.allclose(y, [c.fit.alpha_m for c in sel])
        assert np.allclose(err, [c.fit.stderr for c in sel])
    assert {k for k in series if k.startswith("gamma=")} == {f"gamma={g:.2f}" for g in chosen}


def test_fig18_alpha_m_against_density_per_gamma(ctx):
    cells = [c for c in density_cells(ctx) if c.fit]
    gammas = sorted({c.gamma for c in cells})
    fig = fig18(ctx)
    series = _series(fig.axes[0])
    assert sorted(series) == sorted(f"gamma={g:.2f}" for g in gammas)
    for g in gammas:
        sel = sorted((c for c in cells if c.gamma == g), key=lambda c: c.E)
        x, y, _ = series[f"gamma={g:.2f}"]
        assert np.allclose(x, [c.E for c in sel]) and len(x) >= 2
        assert np.allclose(y, [c.fit.alpha_m for c in sel])


@pytest.mark.parametrize("name", ["fig1", "fig6c", "fig6d", "fig10", "fig7"])
def test_width_axes_are_labelled_at_the_widths(ctx, name):
    """Log axes of model width label the widths themselves: matplotlib's minor labels
    (3x10^1, 4x10^1, ...) collided over less than a decade."""
    from superkern.analysis import fig_geometry, fig_scaling

    make = getattr(fig_scaling, name, None) or getattr(fig_geometry, name)
    fig = make(ctx)
    width_axes = [ax for ax in fig.axes if ax.get_xlabel() == "model width m"]
    assert width_axes, name
    widths = {float(r.m) for r in ctx.results.runs}
    for ax in width_axes:
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) >= 2 and {float(s) for s in labels} <= widths, labels  # not 3x10^1
        assert not any(t.get_text() for t in ax.xaxis.get_minorticklabels()), name
