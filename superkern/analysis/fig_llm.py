"""Figures of the LLM-side fits: token rank-frequency with its Zipf line (paper Fig. 22), the
shared-exponent width law (paper Figs. 8b and 21) and model size against width (Fig. 23).

Plotting only: the numbers come from :func:`superkern.analysis.zipf.zipf_fit` and
:func:`superkern.analysis.fits.fit_width_law`. Each builder returns a matplotlib ``Figure``
(object API, no pyplot state) so tests can read back what was drawn; :func:`png` turns it into
bytes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from superkern.probe.plots import new_figure, png_bytes

__all__ = ["zipf_figure", "width_law_figure", "size_width_figure", "png"]

png = png_bytes


def _log_thin(n: int, k: int) -> np.ndarray:
    """At most about ``k`` 0-based indices of 0..n-1, evenly spaced in log(rank)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.rint(np.geomspace(1, n, k)).astype(np.int64)) - 1


def zipf_figure(counts: Sequence[float] | np.ndarray, fit, label: str = "",
                max_points: int = 4000):
    """Count against rank, log-log, with the points the pinned recipe fitted and its line.

    Args:
        counts: the counts that were fitted (any order; zeros are dropped as in the fit).
        fit: the :class:`~superkern.analysis.zipf.ZipfFit` of those counts.
        label: what was counted (a file name, and the tokenizer), for the title.
        max_points: the rank-frequency curve is thinned to about this many points, evenly
            spaced in log(rank) (a 250k-type vocabulary would otherwise be 250k markers).
    """
    c = np.asarray(counts, dtype=np.float64).ravel()
    c = np.sort(c[c > 0])[::-1]
    if c.size != fit.n_types:
        raise ValueError(f"{c.size} positive counts, but the fit saw {fit.n_types}")
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    keep = _log_thin(c.size, max_points)
    ax.plot(keep + 1, c[keep], "-", lw=1.4, color="tab:blue", zorder=3,
            label=f"all {c.size} types")
    sample = np.unique(np.clip(np.rint(10.0 ** np.linspace(0.0, np.log10(c.size), fit.points)),
                               1, c.size).astype(np.int64))
    ax.plot(sample, c[sample - 1], "o", ms=4, mfc="none", mew=0.6, color="tab:orange",
            label=f"fitted points ({fit.points}, log-spaced ranks)")
    r = np.array([1.0, float(c.size)])
    ax.plot(r, 10.0 ** fit.intercept * r ** -fit.alpha, "k--", lw=1.2,
            label=f"alpha = {fit.alpha:.3f}, R^2 = {fit.r2:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("frequency rank")
    ax.set_ylabel("count")
    head = f"{label}: " if label else ""
    ax.set_title(f"{head}Zipf fit, {fit.n_tokens} tokens", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def width_law_figure(groups: Sequence[tuple[str, ...]], m: Sequence[float],
                     loss: Sequence[float], fit):
    """Two panels: loss against 1/m per (family, dataset) group with the fitted
    ``C/m^alpha_m + L_g`` (the paper's Fig. 21); and ``L - L_g`` against m, log-log, where
    every group falls on the one line ``C/m^alpha_m`` (its Fig. 8b). Points at or below their
    group's ``L_g`` cannot go on a log axis and are counted in the second panel's title.
    """
    labels = [tuple(g) if isinstance(g, (tuple, list)) else (str(g),) for g in groups]
    m_arr = np.asarray(m, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64)
    if not (len(labels) == m_arr.size == y.size):
        raise ValueError(f"groups, m, loss lengths differ: {len(labels)}, {m_arr.size}, {y.size}")
    missing = sorted(set(labels) - set(fit.offsets))
    if missing:
        raise ValueError(f"groups {missing} are not in the fit (it has {sorted(fit.offsets)})")
    fig = new_figure(11.0, 4.4)
    ax_l, ax_r = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    grid = np.geomspace(m_arr.min() / 1.3, m_arr.max() * 1.3, 100)
    names = sorted(set(labels))
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    dropped = 0
    for k, g in enumerate(names):
        sel = np.array([lab == g for lab in labels])
        colour = cmap(k % cmap.N)
        name = "/".join(g)
        lg = fit.offsets[g][0]
        order = np.argsort(m_arr[sel])
        ax_l.plot(1.0 / m_arr[sel][order], y[sel][order], "o", color=colour, ms=4, label=name)
        ax_l.plot(1.0 / grid, fit.c * grid ** -fit.alpha_m + lg, "-", color=colour, lw=1)
        excess = y[sel][order] - lg
        pos = excess > 0
        dropped += int(np.count_nonzero(~pos))
        ax_r.plot(m_arr[sel][order][pos], excess[pos], "o", color=colour, ms=4)
    ax_r.plot(grid, fit.c * grid ** -fit.alpha_m, "k--", lw=1.2,
              label=f"C/m^{fit.alpha_m:.3f} (+- {fit.alpha_m_se:.3f})")
    ax_l.set_xlabel("1 / model width m")
    ax_l.set_xlim(left=0)
    ax_r.set_xscale("log")
    ax_r.set_xlabel("model width m")
    ax_r.set_yscale("log")
    ax_l.set_ylabel("loss L")
    ax_r.set_ylabel("L - L_g")
    ax_l.set_title(f"L = C/m^alpha_m + L_g: {fit.n_points} points, {fit.n_params} parameters",
                   fontsize=10)
    note = f"; {dropped} point(s) at or below L_g not shown" if dropped else ""
    ax_r.set_title(f"alpha_m = {fit.alpha_m:.3f} +- {fit.alpha_m_se:.3f} (paper, LLMs: "
                   f"0.91 +- 0.04){note}", fontsize=9)
    ax_l.legend(fontsize=7, ncol=2 if len(names) > 8 else 1)
    ax_r.legend(fontsize=8)
    return fig


def size_width_figure(families: Sequence[str], m: Sequence[float], params: Sequence[float],
                      fit, ylabel: str = "parameters N"):
    """Parameter count against width, log-log, per family, with the shared-exponent lines
    ``a_g m^k`` (the paper's Fig. 23); ``ylabel`` names the count drawn."""
    m_arr = np.asarray(m, dtype=np.float64)
    n_arr = np.asarray(params, dtype=np.float64)
    fams = [str(f) for f in families]
    fig = new_figure(6.4, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    for k, f in enumerate(sorted(set(fams))):
        sel = np.array([x == f for x in fams])
        colour = f"C{k % 10}"
        ax.plot(m_arr[sel], n_arr[sel], "o", color=colour, ms=5, label=f)
        grid = np.geomspace(m_arr[sel].min() / 1.2, m_arr[sel].max() * 1.2, 20)
        ax.plot(grid, fit.coefficients[f] * grid ** fit.k, "-", color=colour, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model width m")
    ax.set_ylabel(ylabel)
    ax.set_title(f"N = a_family m^k: k = {fit.k:.3f} +- {fit.k_se:.3f} ({fit.n_points} models, "
                 f"{fit.families} families; paper 2.51)", fontsize=9)
    ax.legend(fontsize=8)
    return fig
