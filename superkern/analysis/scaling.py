"""Per-cell analyses of a results file: alpha_m fits, the unlearned-feature loss prediction,
phi tables. Each returns plain dataclasses; :func:`fit_report` bundles them for ``superkern
fit`` (text or JSON)."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from superkern.analysis.fits import (PowerLawFit, fit_power_law, fit_power_law_seeds,
                                     paper_fit_range)
from superkern.analysis.tables import Results, Run, by_width, cells, dist_label
from superkern.sweep import engine
from superkern.toy.config import RECORD_FIELDS

# The paper's Fig. 1d (strong superposition, large toy model) exponents, Appendix D.1.
PAPER_FIG1_STRONG = {"exponential": (1.01, 0.05), "power": (1.0, 0.1), "linear": (0.89, 0.05)}


@dataclass(frozen=True)
class CellFit:
    """alpha_m of one cell (every config field but m and seed fixed)."""

    cell: dict[str, Any]
    label: str
    m: tuple[float, ...]
    loss_mean: tuple[float, ...]
    loss_std: tuple[float, ...]
    n_runs: int
    fit: Optional[PowerLawFit] = None
    error: str = ""
    # weak cells (gamma > 0): the same fit of the ideal weak-regime loss, the unlearned-feature
    # loss with exactly the m most frequent features learned (phi_half n = m) at each width
    ideal: Optional[PowerLawFit] = None

    @property
    def gamma(self) -> float:
        return float(self.cell.get("gamma", 0.0))

    @property
    def alpha(self) -> float:
        a = self.cell.get("alpha")
        return math.nan if a is None else float(a)

    @property
    def E(self) -> float:
        cfg = dict(self.cell)
        if cfg.get("density_s") is None:
            return float(cfg.get("E") or 1.0)
        return engine.activation_density(cfg)


def fit_cells(results: Results | list[Run], fit_range: str = "paper", n_boot: int = 1000,
              min_widths: int = 3) -> list[CellFit]:
    """alpha_m of every cell with at least ``min_widths`` widths.

    Args:
        results: a :class:`Results` or a list of runs.
        fit_range: a name accepted by :func:`superkern.analysis.fits.select_range`, or
            ``"paper"`` (per cell, :func:`superkern.analysis.fits.paper_fit_range`).
        n_boot: bootstrap resamples over seeds (used when a width has >= 2 seeds).
    """
    runs = results.runs if isinstance(results, Results) else results
    out = []
    grouped = cells(runs)
    labels = _labels(list(grouped))
    for key, members in sorted(grouped.items(), key=lambda kv: _order(dict(kv[0]))):
        cell = dict(key)
        widths, groups = by_width(members)
        mean = tuple(float(np.exp(np.log(g).mean())) if np.all(g > 0) else math.nan
                     for g in groups)
        # error bar: spread over seeds, or (one seed) the run's std over its last 100 steps
        std = tuple(float(g.std(ddof=1)) if g.size > 1 else
                    next(r.final_loss_std for r in members if r.m == w)
                    for w, g in zip(widths, groups))
        base = dict(cell=cell, label=labels[key], m=tuple(widths.tolist()), loss_mean=mean,
                    loss_std=std, n_runs=len(members))
        if widths.size < min_widths:
            out.append(CellFit(**base, error=f"only {widths.size} width(s)"))
            continue
        rng = paper_fit_range(members[0].config) if fit_range == "paper" else fit_range
        try:
            fit = fit_power_law_seeds(widths, groups, rng, n_boot=n_boot)
        except ValueError as exc:
            if fit_range != "paper" or rng == "all":
                out.append(CellFit(**base, error=str(exc)))
                continue
            # a grid with fewer widths than the paper's (e.g. --quick): the paper's range leaves
            # too few points, so fit them all and say so in the range name
            fit = fit_power_law_seeds(widths, groups, "all", n_boot=n_boot)
            fit = dataclasses.replace(fit, fit_range=f"all (paper's {rng} left < 3 widths)")
            rng = "all"
        ideal = None
        if float(cell.get("gamma", 0.0)) > 0:
            ideal = ideal_weak_fit(members[0].config, widths, rng)
        out.append(CellFit(**base, fit=fit, ideal=ideal))
    return out


def ideal_weak_fit(config: dict[str, Any], widths: np.ndarray,
                   fit_range: str) -> Optional[PowerLawFit]:
    """alpha_m and R^2 of the ideal weak-regime loss ``<v^2> sum_{i > m} p_i`` over ``widths``.

    What the unlearned-feature picture alone predicts for a cell's grid: a power law in p gives
    a straight line here (R^2 near 1) and an exponential or linear p a curved one, but only
    when the widths reach the scale on which p falls (exponential: m near 400), so a grid that
    cannot show the paper's weak-regime contrast is told apart from a model that does not.
    None when the prediction is zero somewhere (every feature learned) or p cannot be built.
    """
    try:
        n = int(config["n"])
        loss = [engine.unlearned_loss(config, float(w) / n) for w in widths]
        if min(loss) <= 0:
            return None
        return fit_power_law(widths, loss, fit_range)
    except (KeyError, ValueError):
        return None


def _order(cell: dict[str, Any]) -> tuple:
    s = cell.get("density_s")
    return (str(cell.get("preset")), int(cell.get("n") or 0), str(cell.get("dist")),
            float(cell.get("gamma") or 0.0), float(cell.get("alpha") or 0.0),
            -1.0 if s is None else float(s), float(cell.get("E") or 1.0))


def _label(cell: dict[str, Any]) -> str:
    parts = [dist_label(cell), f"gamma={float(cell.get('gamma', 0.0)):+.3g}"]
    if cell.get("density_s") is not None:
        parts.append(f"E={engine.activation_density(cell):.3g}")
    elif float(cell.get("E") or 1.0) != 1.0:
        parts.append(f"E={float(cell['E']):g}")
    return ", ".join(parts)


def _labels(keys: list[tuple]) -> dict[tuple, str]:
    """A label per cell key: :func:`_label`, plus the fields that tell apart cells that would
    otherwise share one (results of several grids in one folder: n, steps, lr, ...)."""
    base = {k: _label(dict(k)) for k in keys}
    out = dict(base)
    for text in set(base.values()):
        same = [dict(k) for k in keys if base[k] == text]
        if len(same) < 2:
            continue
        differ = sorted({f for c in same for f in c
                         if len({repr(d.get(f)) for d in same}) > 1} - {"alpha", "E"})
        for k in keys:
            if base[k] == text:
                cell = dict(k)
                out[k] = text + "".join(f", {f}={cell.get(f)}" for f in differ)
    return out


@dataclass(frozen=True)
class UnlearnedRow:
    """Weak-regime loss against the loss of the features left out (SPEC 3, paper Eq. 4)."""

    run_id: str
    label: str
    gamma: float
    m: int
    phi_half: float
    loss: float
    predicted: float            # <v^2> sum_{i > phi_half n} p_i
    predicted_integral: float   # the paper's integral form (power law only; else NaN)
    seed: int = 0

    @property
    def ratio(self) -> float:
        return self.loss / self.predicted if self.predicted > 0 else math.inf


def unlearned_table(results: Results | list[Run], weak_only: bool = True) -> list[UnlearnedRow]:
    """Measured loss vs the unlearned-feature prediction, per run (gamma > 0 when
    ``weak_only``)."""
    runs = results.runs if isinstance(results, Results) else results
    several_n = len({r.n for r in runs}) > 1  # grids of several n in one folder: say which
    out = []
    for r in sorted(runs, key=lambda r: (r.gamma, r.dist, r.alpha, r.n, r.m, r.seed)):
        if weak_only and r.gamma <= 0:
            continue
        if not math.isfinite(r.phi_half):
            continue
        label = f"{dist_label(r.config)}, n={r.n}" if several_n else dist_label(r.config)
        out.append(UnlearnedRow(run_id=r.run_id, label=label, gamma=r.gamma,
                                m=r.m, phi_half=r.phi_half, loss=r.final_loss,
                                predicted=engine.unlearned_loss(r.config, r.phi_half),
                                predicted_integral=engine.unlearned_loss_integral(
                                    r.config, r.phi_half), seed=r.seed))
    return out


@dataclass(frozen=True)
class PhiRow:
    """phi_half and phi_1 of one (cell, m), averaged over seeds."""

    label: str
    gamma: float
    alpha: float
    E: float
    n: int
    m: int
    phi_half: float
    phi_1: float
    phi_half_std: float
    phi_1_std: float
    n_seeds: int


def phi_table(results: Results | list[Run]) -> list[PhiRow]:
    """phi_half and phi_1 per (cell, m)."""
    runs = results.runs if isinstance(results, Results) else results
    out = []
    grouped = cells(runs)
    labels = _labels(list(grouped))
    for key, members in sorted(grouped.items(), key=lambda kv: _order(dict(kv[0]))):
        for w in sorted({r.m for r in members}):
            grp = [r for r in members if r.m == w]
            ph = np.array([r.phi_half for r in grp])
            p1 = np.array([r.phi_1 for r in grp])
            out.append(PhiRow(label=labels[key], gamma=grp[0].gamma, alpha=grp[0].alpha,
                              E=grp[0].E, n=grp[0].n, m=w, phi_half=float(ph.mean()),
                              phi_1=float(p1.mean()),
                              phi_half_std=float(ph.std(ddof=1)) if ph.size > 1 else math.nan,
                              phi_1_std=float(p1.std(ddof=1)) if p1.size > 1 else math.nan,
                              n_seeds=len(grp)))
    return out


@dataclass(frozen=True)
class DensityRow:
    """How loss grows with activation density E at fixed gamma and m: the slope of ln L on
    ln E (1 = proportional, the paper's Fig. 7a)."""

    gamma: float
    m: int
    n_E: int
    E_min: float
    E_max: float
    exponent: float
    stderr: float
    r2: float


def density_table(results: Results | list[Run]) -> list[DensityRow]:
    """ln L vs ln E per (gamma, m, other fields) with >= 3 distinct E (density sweeps)."""
    from scipy import stats

    runs = results.runs if isinstance(results, Results) else results
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        key = tuple(sorted((k, str(v)) for k, v in r.config.items()
                           if k not in ("E", "density_s", "seed") + RECORD_FIELDS))
        groups.setdefault(key, []).append(r)
    out = []
    for members in groups.values():
        e = np.array([r.E for r in members])
        if np.unique(np.round(e, 9)).size < 3:
            continue
        loss = np.array([r.final_loss for r in members])
        res = stats.linregress(np.log(e), np.log(loss))
        out.append(DensityRow(gamma=members[0].gamma, m=members[0].m, n_E=int(e.size),
                              E_min=float(e.min()), E_max=float(e.max()),
                              exponent=float(res.slope), stderr=float(res.stderr),
                              r2=float(res.rvalue ** 2)))
    return sorted(out, key=lambda d: (d.gamma, d.m))


@dataclass
class FitReport:
    """Everything ``superkern fit RESULTS`` prints."""

    source: str
    caption: str
    fit_range: str
    cells: list[CellFit] = field(default_factory=list)
    unlearned: list[UnlearnedRow] = field(default_factory=list)
    phi: list[PhiRow] = field(default_factory=list)
    density: list[DensityRow] = field(default_factory=list)
    # run ids whose final loss is over 10% above the loss of predicting zero: not trained
    untrained: list[str] = field(default_factory=list)
    n_runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


# A trained model does at least as well as y = 0 (W = 0, b <= 0); one that learned almost
# nothing sits just below, and the batch noise of its final loss is well under this margin.
UNTRAINED_MARGIN = 1.1


def untrained_note(k: int, total: int, whose: str = "") -> str:
    """The warning for k untrained runs of ``total`` (``whose``: " of the first results")."""
    return (f"{k} of {total} runs{whose} end over 10% above the loss of predicting zero "
            "(<v^2> E = 4E/3): not trained (too few steps?); the exponents of their cells do "
            "not measure the scaling law")


def untrained_runs(results: Results) -> list[str]:
    """Run ids whose finite final loss is over 10% above what the output y = 0 gets,
    <v^2> E = 4E/3: too few steps, or a learning rate too small or too large. Their cells'
    exponents describe the start of training, not the paper's laws."""
    from superkern.toy.geometry import V2_MEAN

    return [r.run_id for r in results.runs if math.isfinite(r.final_loss)
            and r.final_loss > UNTRAINED_MARGIN * V2_MEAN * r.E]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def fit_report(results: Results | str | os.PathLike, fit_range: str = "paper",
               n_boot: int = 1000) -> FitReport:
    """The bundle behind ``superkern fit RESULTS``: ``results`` is loaded :class:`Results`
    or a results file or folder. A range name other than "paper" (a rule per cell) is
    checked before any fit, as ``make_figures`` does."""
    from superkern.analysis.fits import check_range_name
    from superkern.analysis.tables import load_results

    check_range_name(fit_range)
    if not isinstance(results, Results):
        results = load_results(results)
    return FitReport(source=str(results.path), caption=results.caption(), fit_range=fit_range,
                     cells=fit_cells(results, fit_range, n_boot=n_boot),
                     unlearned=unlearned_table(results), phi=phi_table(results),
                     density=density_table(results), untrained=untrained_runs(results),
                     n_runs=len(results.runs))


def format_report(rep: FitReport, max_rows: int = 400) -> str:
    """Plain-text tables of a :class:`FitReport`."""
    lines = [f"superkern fit: {rep.caption}; fit range: {rep.fit_range}", "",
             "Model exponent alpha_m = -slope of ln L on ln m (linregress; +- standard error)"]
    w = max([40] + [len(c.label) for c in rep.cells[:max_rows]])  # the cell column
    hdr = (f"{'cell':<{w}} {'m fitted':>13} {'pts':>3} {'alpha_m':>8} {'+-se':>6} {'R^2':>6} "
           f"{'95% CI':>17}")
    lines.append(hdr)
    boot = False
    for c in rep.cells[:max_rows]:
        mrange = f"{c.m[0]:g}..{c.m[-1]:g}" if c.m else "-"
        if c.fit is None:
            lines.append(f"{c.label:<{w}} {mrange:>13}   -  skipped: {c.error}")
            continue
        f = c.fit
        mrange = f"{f.m_used[0]:g}..{f.m_used[-1]:g}"  # the widths fitted
        ci = f"[{f.ci_low:.3f}, {f.ci_high:.3f}]" + ("b" if "bootstrap" in f.ci_method else "")
        boot = boot or "bootstrap" in f.ci_method
        paper = ""
        if c.cell.get("preset") == "large" and c.gamma < 0 and c.cell.get("dist") in \
                PAPER_FIG1_STRONG and (c.cell["dist"] != "power" or c.alpha == 1.2):
            pv, pe = PAPER_FIG1_STRONG[str(c.cell["dist"])]
            paper = f"  (paper {pv} +- {pe})"
        lines.append(f"{c.label:<{w}} {mrange:>13} {f.n_points:>3} {f.alpha_m:>8.3f} "
                     f"{f.stderr:>6.3f} {f.r2:>6.3f} {ci:>17}  [{f.fit_range}]{paper}")
    if len(rep.cells) > max_rows:
        lines.append(f"... {len(rep.cells) - max_rows} more cells (use --json)")
    if boot:
        lines.append("b: a bootstrap interval over the seeds (cells with several seeds); "
                     "otherwise a t interval of the slope; [range]: the widths fitted")
    if rep.untrained:
        lines.append("warning: " + untrained_note(len(rep.untrained), rep.n_runs))
    weak = [c for c in rep.cells[:max_rows] if c.fit is not None and c.ideal is not None]
    if weak:
        lines += ["", "Weak regime (gamma > 0): measured fit beside the same fit of the ideal "
                  "weak loss <v^2> sum_{i > m} p_i", "(what the unlearned-feature picture alone "
                  "gives on these widths: R^2 near 1 for a power law, lower for curved p)",
                  f"{'cell':<{w}} {'alpha_m':>8} {'R^2':>6} {'ideal alpha_m':>13} "
                  f"{'ideal R^2':>9}"]
        for c in weak:
            lines.append(f"{c.label:<{w}} {c.fit.alpha_m:>8.3f} {c.fit.r2:>6.3f} "
                         f"{c.ideal.alpha_m:>13.3f} {c.ideal.r2:>9.3f}")
    if rep.unlearned:
        wu = max([28] + [len(u.label) for u in rep.unlearned[:max_rows]])
        lines += ["", "Weak regime (gamma > 0): loss vs <v^2> sum_{i > phi_half n} p_i",
                  f"{'cell':<{wu}} {'gamma':>6} {'m':>5} {'seed':>5} {'phi_half':>8} "
                  f"{'loss':>10} {'predicted':>10} {'ratio':>6}"]
        for u in rep.unlearned[:max_rows]:
            lines.append(f"{u.label:<{wu}} {u.gamma:>6.3f} {u.m:>5} {u.seed:>5} "
                         f"{u.phi_half:>8.4f} {u.loss:>10.4g} {u.predicted:>10.4g} "
                         f"{u.ratio:>6.2f}")
        ratios = np.array([u.ratio for u in rep.unlearned if math.isfinite(u.ratio)])
        if ratios.size:
            lines.append(f"median loss/prediction {np.median(ratios):.3f} over {ratios.size} "
                         "runs (the paper: slightly above 1)")
    if rep.density:
        lines += ["", "Loss vs activation density at fixed gamma and m: slope of ln L on ln E "
                  "(1 = loss proportional to E)",
                  f"{'gamma':>7} {'m':>5} {'E range':>13} {'slope':>7} {'+-se':>6} {'R^2':>6}"]
        for d in rep.density[:max_rows]:
            lines.append(f"{d.gamma:>7.3f} {d.m:>5} {d.E_min:>6.2f}..{d.E_max:<5.2f} "
                         f"{d.exponent:>7.3f} {d.stderr:>6.3f} {d.r2:>6.3f}")
    if rep.phi:
        labels = [p.label if ", n=" in p.label else f"{p.label}, n={p.n}"
                  for p in rep.phi[:max_rows]]
        wp = max([40] + [len(s) for s in labels])
        lines += ["", "Fractions of rows with norm > 1/2 (phi_half) and > 1 (phi_1), mean over "
                  "seeds", f"{'cell':<{wp}} {'m':>5} {'phi_half':>9} {'phi_1':>9} {'m/n':>8} "
                  f"{'m^2/2n':>8} {'seeds':>5}"]
        for label, p in zip(labels, rep.phi[:max_rows]):
            lines.append(f"{label:<{wp}} {p.m:>5} {p.phi_half:>9.4f} "
                         f"{p.phi_1:>9.4f} {p.m / p.n:>8.4f} {min(1.0, p.m ** 2 / 2 / p.n):>8.4f}"
                         f" {p.n_seeds:>5}")
    return "\n".join(lines)
