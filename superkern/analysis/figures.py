"""``superkern figures``: PNGs mirroring the paper's toy-model figures, from a results file.

Plotting only: every number comes from the stored rows (and, for Figs. 5b, 6a, 6b, 9, 11,
12, 15 and 16, the saved weights); nothing is trained. A figure whose data are absent is
skipped with the reason.
Every figure carries a footer naming the results file, the number of runs and the date.
"""
from __future__ import annotations

import io
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

# matplotlib's object API only: no pyplot, so the caller's backend (a notebook's inline one)
# and open figures are left alone, and nothing registers figures globally.
from matplotlib.figure import Figure

from superkern.analysis.tables import Results, load_results
from superkern.sweep.store import atomic_write_bytes


class MissingData(Exception):
    """The results lack what a figure needs (the message says what)."""


@dataclass
class Context:
    """Shared state of one ``make_figures`` call (fit and weight-statistics caches)."""

    results: Results
    fit_range: str = "paper"
    n_boot: int = 200
    use_weights: bool = True
    cache: dict = field(default_factory=dict)

    def fits(self):
        if "fits" not in self.cache:
            from superkern.analysis.scaling import fit_cells

            self.cache["fits"] = fit_cells(self.results, self.fit_range, n_boot=self.n_boot)
        return self.cache["fits"]

    @property
    def loss_label(self) -> str:
        """Axis label of the loss the results carry ("final loss" or "test loss")."""
        return f"{self.results.loss} loss"


FigureFn = Callable[[Context], Figure]
REGISTRY: dict[str, tuple[str, FigureFn]] = {}


def figure(name: str, title: str) -> Callable[[FigureFn], FigureFn]:
    """Register a figure function under ``name`` (the PNG is ``<name>.png``)."""
    def deco(fn: FigureFn) -> FigureFn:
        REGISTRY[name] = (title, fn)
        return fn
    return deco


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.4, 4.8),
             **kwargs):
    """``(figure, axes)`` like ``pyplot.subplots``, without pyplot (an Agg canvas)."""
    from superkern.probe.plots import new_figure

    fig = new_figure(*figsize, dpi=None)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def width_ticks(ax, widths: Sequence[float]) -> None:
    """Label a log x axis of model widths at the widths themselves (4, 8, 16, ...): over less
    than a decade matplotlib labels every minor tick (3x10^1, 4x10^1, ...), and they collide."""
    from matplotlib.ticker import NullFormatter

    ticks = sorted({float(w) for w in widths})
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{w:g}" for w in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())


def footer(fig: Figure, ctx: Context, runs: Optional[Sequence] = None,
           note: str = "") -> None:
    """Provenance line at the bottom of a figure."""
    text = ctx.results.caption(runs) + (f"; {note}" if note else "")
    fig.text(0.005, 0.004, text, fontsize=6.5, color="0.35", ha="left", va="bottom")


def save_png(fig: Figure, path: Path, dpi: int = 130) -> Path:
    """Render to memory, then write atomically (no partial PNG is ever visible)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return path


@dataclass
class FiguresReport:
    """What :func:`make_figures` wrote and skipped."""

    written: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"wrote {name}: {path}" for name, path in self.written.items()]
        by_reason: dict[str, list[str]] = {}  # one line per reason: a fig1 sweep skips 14
        for name, why in self.skipped.items():
            by_reason.setdefault(why, []).append(name)
        lines += [f"skipped {', '.join(names)}: {why}" for why, names in by_reason.items()]
        return "\n".join(lines)


def _load_registry() -> None:
    # Importing the figure modules registers their functions.
    from superkern.analysis import fig_geometry, fig_norms, fig_scaling  # noqa: F401


def available_figures() -> dict[str, str]:
    """Figure names -> titles."""
    _load_registry()
    return {k: v[0] for k, v in REGISTRY.items()}


def default_figures_dir(results: str | Path, loss: str = "final") -> Path:
    """``figures`` beside a results file, or in a results folder; ``figures-test`` for the
    test-loss figures, which have the same names."""
    path = Path(results)
    return (path if path.is_dir() else path.parent) / (
        "figures" if loss == "final" else f"figures-{loss}")


def make_figures(results: str | Path | Results, out_dir: Optional[str | Path] = None,
                 only: Optional[Sequence[str]] = None, fit_range: str = "paper",
                 n_boot: int = 200, use_weights: bool = True, dpi: int = 130,
                 loss: str = "final") -> FiguresReport:
    """Write every figure the results support as ``<out_dir>/<name>.png``.

    Args:
        results: a results file (or its folder) or loaded :class:`Results`.
        out_dir: output folder, created when a figure is written (default: a ``figures``
            folder beside the results file, as the command line's; ``figures-test`` for
            ``loss="test"``).
        only: figure names to make (default all; see :func:`available_figures`).
        fit_range: alpha_m fit range (``paper``, ``all``, ``m>=32``, ``last5``, ...).
        n_boot: bootstrap resamples for alpha_m intervals (with several seeds).
        use_weights: allow figures that read saved weights (5b, 6a, 6b, 9, 11, 12, 15, 16).
        dpi: PNG resolution.
        loss: "final" (training loss of the last 100 steps) or "test" (fresh test batches;
            read from a path only: loaded :class:`Results` keep their own).
    """
    _load_registry()
    from superkern.analysis.fits import check_range_name

    check_range_name(fit_range)  # a bad range name fails here, not as skipped figures
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 0:
        raise ValueError(f"bootstrap resamples must be an integer >= 0, got {n_boot!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Integral) or not 10 <= dpi <= 1200:
        raise ValueError(f"dpi must be an integer in [10, 1200], got {dpi!r}")
    if isinstance(results, Results) and results.loss != loss:
        raise ValueError(f"the results were read with loss={results.loss!r}, not {loss!r}; "
                         f"read them with load_results(path, {loss!r})")
    res = results if isinstance(results, Results) else load_results(results, loss)
    names = list(REGISTRY) if not only else list(only)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; available: {list(REGISTRY)}")
    if not res.runs:
        raise ValueError(f"{res.path}: no usable runs")
    ctx = Context(res, fit_range=fit_range, n_boot=n_boot, use_weights=use_weights)
    out = Path(out_dir) if out_dir is not None else default_figures_dir(res.path, res.loss)
    report = FiguresReport()
    for name in names:
        title, fn = REGISTRY[name]
        try:
            fig = fn(ctx)
        except MissingData as exc:
            report.skipped[name] = str(exc)
            continue
        out.mkdir(parents=True, exist_ok=True)  # only once a figure is drawn
        report.written[name] = os.fspath(save_png(fig, out / f"{name}.png", dpi=dpi))
    return report
