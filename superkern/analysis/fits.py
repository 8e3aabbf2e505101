"""Scaling-law fits (pure functions on arrays; SPEC section 3).

- :func:`fit_power_law`: model exponent alpha_m from log L = log C - alpha_m log m
  (``scipy.stats.linregress``), with its standard error and R^2, over a named fit range.
- :func:`bootstrap_power_law`: percentile interval of alpha_m over seeds.
- :func:`fit_width_law`: the LLM width law ``L = C / m^alpha + L_g`` with one shared C and
  alpha and one L_g per group, by ``scipy.optimize.least_squares``.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import optimize, stats

# Fit-range names. "paper" is resolved per cell by :func:`paper_fit_range`.
FIT_RANGES = ("all", "paper", "m>=K (e.g. m>=32)", "m<=K", "K<=m<=L (e.g. 16<=m<=128)",
              "lastK (e.g. last5)", "firstK", "fromK")


@dataclass(frozen=True)
class PowerLawFit:
    """alpha_m of L = C m^-alpha_m fitted on a log-log line.

    Attributes:
        alpha_m: minus the slope of ln L on ln m.
        stderr: linregress standard error of the slope.
        log_c: intercept (natural log of C).
        r2: coefficient of determination of the line.
        n_points: points in the fit; ``m_used`` lists their widths.
        fit_range: the range rule applied.
        ci_low, ci_high: 95% interval for alpha_m. ``ci_method == "t"``: the slope's
            Student-t interval, +- t(0.975, points - 2) stderr. ``"t+bootstrap"`` (every
            fitted width has >= 2 seeds): the wider of that and a percentile bootstrap over
            seeds, which alone under-covers with few seeds and misses lack of fit.
    """

    alpha_m: float
    stderr: float
    log_c: float
    r2: float
    n_points: int
    m_used: tuple[float, ...]
    fit_range: str
    ci_low: float = math.nan
    ci_high: float = math.nan
    ci_method: str = "t"
    n_seeds: int = 1  # the fewest seeds at a fitted width

    def predict(self, m: np.ndarray | float) -> np.ndarray:
        """Fitted loss at widths ``m``."""
        return np.exp(self.log_c) * np.asarray(m, dtype=np.float64) ** -self.alpha_m


def check_range_name(fit_range: str) -> None:
    """ValueError for an unknown fit-range name ("paper", a rule per cell, is valid), before any
    fit: callers that fit many cells would otherwise report it once per cell as skipped."""
    if fit_range != "paper":
        select_range([1.0], fit_range)


def select_range(m: Sequence[float], fit_range: str) -> np.ndarray:
    """Boolean mask over ``m`` (any order) for a fit-range name.

    Names: ``all``; ``m>=K`` / ``m<=K`` / ``K<=m<=L`` (widths in a closed interval);
    ``lastK`` / ``firstK`` (the K largest /
    smallest distinct widths); ``fromK`` (from the K-th smallest distinct width on, 1-based:
    the paper's "starting from the third point" is ``from3``).
    """
    if not isinstance(fit_range, str):
        raise ValueError(f"fit_range must be a range name such as 'all' or 'm>=32', got "
                         f"{fit_range!r}")
    m = np.asarray(m, dtype=np.float64)
    widths = np.unique(m)  # counting is over distinct widths, so seeds do not shift it
    name = fit_range.replace(" ", "").lower()
    if name == "all":
        return np.ones(m.size, dtype=bool)
    if (g := re.fullmatch(r"m>=(\d+(?:\.\d*)?|\.\d+)", name)):
        return m >= float(g.group(1))
    if (g := re.fullmatch(r"m<=(\d+(?:\.\d*)?|\.\d+)", name)):
        return m <= float(g.group(1))
    if (g := re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)<=m<=(\d+(?:\.\d*)?|\.\d+)", name)):
        lo, hi = float(g.group(1)), float(g.group(2))
        if lo > hi:
            raise ValueError(f"empty fit range {fit_range!r}: {lo:g} > {hi:g}")
        return (m >= lo) & (m <= hi)
    if (g := re.fullmatch(r"last([0-9]+)", name)):
        keep = widths[-int(g.group(1)):] if int(g.group(1)) > 0 else widths[:0]
    elif (g := re.fullmatch(r"first([0-9]+)", name)):
        keep = widths[:int(g.group(1))]
    elif (g := re.fullmatch(r"from([0-9]+)", name)):
        keep = widths[max(int(g.group(1)) - 1, 0):]
    else:
        known = tuple(r for r in FIT_RANGES if r != "paper")  # "paper" is a rule per cell
        hint = ("; 'paper' picks a range per cell: fit_report, fit_cells and the "
                "command line take it") if name == "paper" else (
                "; or 'paper' (the paper's range per cell) where a whole report is fitted")
        raise ValueError(f"unknown fit range {fit_range!r}; use one of {known}{hint}")
    return np.isin(m, keep)


def paper_fit_range(config: Mapping[str, object]) -> str:
    """The paper's fit range for a cell (Appendix D.1, D.4).

    Large preset (Fig. 1): strong superposition (gamma < 0): exponential all m, power and
    linear ``m>=32`` (SPEC; the paper's "starting from the third point" of 8..1024); weak
    (gamma >= 0): power law the last five points, others all. Every other cell (the
    small-model Figs. 4b-7): all points.
    """
    if config.get("preset") != "large":
        return "all"
    dist = config.get("dist")
    gamma = float(config.get("gamma", 0.0))  # type: ignore[arg-type]
    if gamma < 0:
        return "all" if dist == "exponential" else "m>=32"
    return "last5" if dist == "power" else "all"


def _check(m: np.ndarray, loss: np.ndarray) -> None:
    if m.shape != loss.shape or m.ndim != 1:
        raise ValueError(f"m and loss must be 1-D of equal length, got {m.shape} and {loss.shape}")
    if not (np.all(np.isfinite(loss)) and np.all(np.isfinite(m))):
        raise ValueError(f"non-finite values in m={m.tolist()} or loss={loss.tolist()}")
    if np.any(m <= 0) or np.any(loss <= 0):
        raise ValueError(f"m and loss must be > 0 for a log-log fit (m={m.tolist()}, "
                         f"loss={loss.tolist()})")


def fit_power_law(m: Sequence[float], loss: Sequence[float],
                  fit_range: str = "all") -> PowerLawFit:
    """Least-squares line of ln(loss) on ln(m) over ``fit_range``; alpha_m = -slope.

    Args:
        m: widths (one per point; repeat a width for several seeds).
        loss: losses, > 0.
        fit_range: see :func:`select_range`.

    Raises:
        ValueError: fewer than 3 points with at least 2 distinct widths in range, or bad values.
    """
    m_arr = np.asarray(m, dtype=np.float64)
    l_arr = np.asarray(loss, dtype=np.float64)
    _check(m_arr, l_arr)
    mask = select_range(m_arr, fit_range)
    x, y = np.log(m_arr[mask]), np.log(l_arr[mask])
    if x.size < 3 or np.unique(x).size < 2:
        raise ValueError(f"fit range {fit_range!r} leaves {x.size} point(s) with "
                         f"{np.unique(x).size} distinct width(s) of m={m_arr.tolist()}; need >= 3")
    m_used = tuple(float(v) for v in np.sort(m_arr[mask]))
    if np.ptp(y) == 0:  # equal losses: exactly flat (se 0), R^2 undefined, not a NaN se
        return PowerLawFit(alpha_m=0.0, stderr=0.0, log_c=float(y[0]), r2=math.nan,
                           n_points=int(x.size), m_used=m_used, fit_range=fit_range,
                           ci_low=0.0, ci_high=0.0)
    res = stats.linregress(x, y)
    se = float(res.stderr)
    half = float(stats.t.ppf(0.975, x.size - 2)) * se
    return PowerLawFit(alpha_m=-float(res.slope), stderr=se, log_c=float(res.intercept),
                       r2=float(res.rvalue ** 2), n_points=int(x.size), m_used=m_used,
                       fit_range=fit_range,
                       ci_low=-float(res.slope) - half, ci_high=-float(res.slope) + half)


def fit_power_law_seeds(m_values: Sequence[float], losses: Sequence[Sequence[float]],
                        fit_range: str = "all", n_boot: int = 1000,
                        seed: int = 0) -> PowerLawFit:
    """alpha_m of per-width seed groups: the line through the per-width geometric means, and,
    when every fitted width has >= 2 seeds, a 95% interval that spans both the line's t
    interval and a percentile bootstrap resampling seeds within each width (a bootstrap over
    2-3 seeds alone covers 67-80%, and widths with one seed would make it far too narrow).

    Args:
        m_values: distinct widths.
        losses: for each width, the final losses of its seeds.
        fit_range: see :func:`select_range`.
        n_boot: bootstrap resamples.
        seed: bootstrap RNG seed (results are deterministic).
    """
    m_arr = np.asarray(m_values, dtype=np.float64)
    groups = [np.asarray(g, dtype=np.float64) for g in losses]
    if len(groups) != m_arr.size or any(g.size == 0 for g in groups):
        raise ValueError(f"need one non-empty loss group per width: {len(groups)} groups for "
                         f"{m_arr.size} widths")
    for w, g in zip(m_arr, groups):
        if not np.all(np.isfinite(g) & (g > 0)):
            raise ValueError(f"losses must be finite and > 0; width m = {w:g} has "
                             f"{g.tolist()}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    centre = np.array([math.exp(np.log(g).mean()) if np.all(g > 0) else math.nan
                       for g in groups])
    fit = fit_power_law(m_arr, centre, fit_range)
    mask = select_range(m_arr, fit_range)
    sub = [np.log(g) for g, keep in zip(groups, mask) if keep]
    n_seeds = min(g.size for g in sub)
    if n_seeds < 2 or n_boot < 1:
        return dataclasses.replace(fit, n_seeds=n_seeds)
    rng = np.random.default_rng(seed)
    x = np.log(m_arr[mask])
    boots = np.empty(n_boot)
    for b in range(n_boot):
        y = np.array([g[rng.integers(0, g.size, g.size)].mean() for g in sub])
        boots[b] = -np.polyfit(x, y, 1)[0]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return dataclasses.replace(fit, ci_low=min(float(lo), fit.ci_low),
                               ci_high=max(float(hi), fit.ci_high), ci_method="t+bootstrap",
                               n_seeds=int(n_seeds))


@dataclass(frozen=True)
class WidthLawFit:
    """``L = C / m^alpha_m + L_g``, shared C and alpha_m, one L_g per group.

    Attributes:
        alpha_m, alpha_m_se: exponent and its standard error.
        c, c_se: coefficient and its standard error.
        offsets: group -> (L_g, standard error).
        rmse: root mean square residual; ``n_points``, ``n_params`` as fitted.
    """

    alpha_m: float
    alpha_m_se: float
    c: float
    c_se: float
    offsets: dict[tuple[str, ...], tuple[float, float]] = field(default_factory=dict)
    rmse: float = math.nan
    n_points: int = 0
    n_params: int = 0
    success: bool = True
    message: str = ""

    @property
    def alpha_m_ci(self) -> tuple[float, float]:
        """95% interval of alpha_m: +- the t quantile with ``n_points - n_params`` degrees of
        freedom times the standard error (1.96 only with many points)."""
        half = float(stats.t.ppf(0.975, max(self.n_points - self.n_params, 1))) * self.alpha_m_se
        return (self.alpha_m - half, self.alpha_m + half)

    def predict(self, m: np.ndarray | float, group: tuple[str, ...]) -> np.ndarray:
        """Fitted loss of ``group`` at widths ``m``."""
        return self.c / np.asarray(m, dtype=np.float64) ** self.alpha_m + self.offsets[group][0]


def fit_width_law(groups: Sequence[tuple[str, ...]], m: Sequence[float],
                  loss: Sequence[float]) -> WidthLawFit:
    """Least-squares fit of the shared-exponent width law (the paper's Eq. 8, Fig. 8b).

    Standard errors come from the Jacobian at the optimum, ``s^2 (J^T J)^-1`` with
    ``s^2 = RSS / (N - P)``. C is optimised as ln C so it stays positive.

    Args:
        groups: one group label per point, e.g. ``(family, dataset)``.
        m: widths; loss: losses.

    Raises:
        ValueError: mismatched lengths, non-positive widths, fewer points than parameters+1,
            every group at one width, or a fit that does not converge or does not determine
            its parameters (rank loss, no finite optimum, alpha_m below its standard error).
    """
    m_arr = np.asarray(m, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64)
    labels = [tuple(str(v) for v in g) if isinstance(g, (tuple, list)) else (str(g),)
              for g in groups]
    if not (len(labels) == m_arr.size == y.size):
        raise ValueError(f"groups, m, loss lengths differ: {len(labels)}, {m_arr.size}, {y.size}")
    bad = np.flatnonzero(~(m_arr > 0) | ~np.isfinite(m_arr) | ~(y > 0) | ~np.isfinite(y))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"widths and losses must be finite and > 0: point {k + 1} "
                         f"({', '.join(labels[k])}) has m = {m_arr[k]:g}, loss = {y[k]:g}"
                         f" ({bad.size} such point(s))")
    widths = np.unique(m_arr)
    if widths.size < 3:
        raise ValueError(f"the width law needs >= 3 distinct widths, got {widths.size} "
                         f"({', '.join(f'{v:g}' for v in widths)})")
    names = sorted(set(labels))
    gidx = np.array([names.index(g) for g in labels])
    n_par = 2 + len(names)
    if y.size <= n_par:
        raise ValueError(f"{y.size} points cannot fit {n_par} parameters")
    # C and alpha_m are measured only by how the loss changes with m inside a group: with one
    # width per group the offsets absorb everything, and the fit returns its start value.
    spread = [np.unique(m_arr[gidx == k]).size for k in range(len(names))]
    if max(spread) < 2:
        raise ValueError(f"every group has a single width, so the offsets L_g absorb the loss "
                         f"and C and alpha_m cannot be measured ({len(names)} groups); give at "
                         "least one group several widths")
    logm = np.log(m_arr)

    def resid(p: np.ndarray) -> np.ndarray:
        return np.exp(p[0] - p[1] * logm) + p[2:][gidx] - y

    def jac(p: np.ndarray) -> np.ndarray:
        t = np.exp(p[0] - p[1] * logm)
        j = np.zeros((y.size, n_par))
        j[:, 0] = t
        j[:, 1] = -t * logm
        j[np.arange(y.size), 2 + gidx] = 1.0
        return j

    # Start: alpha = 1, then C and the offsets from a linear least squares in 1/m.
    a0 = np.zeros((y.size, 1 + len(names)))
    a0[:, 0] = 1.0 / m_arr
    a0[np.arange(y.size), 1 + gidx] = 1.0
    lin = np.linalg.lstsq(a0, y, rcond=None)[0]
    p0 = np.concatenate([[math.log(max(lin[0], 1e-12 * float(np.max(m_arr)))), 1.0], lin[1:]])
    with np.errstate(over="ignore", invalid="ignore"):  # a bad start may overflow exp
        sol = optimize.least_squares(resid, p0, jac=jac, method="lm", xtol=1e-14, ftol=1e-14,
                                     max_nfev=200 * (n_par + 1))
    r = sol.fun
    dof = y.size - n_par
    s2 = float(r @ r) / dof
    # Covariance from the SVD of the Jacobian with unit-length columns: nothing is cut off
    # (a pseudo-inverse would hide an undetermined direction behind a small error), and the
    # rank test sees the design, not the units.
    norms = np.maximum(np.linalg.norm(sol.jac, axis=0), np.finfo(float).tiny)
    _, sv, vt = np.linalg.svd(sol.jac / norms, full_matrices=False)
    rank = int(np.sum(sv > 1e-10 * sv[0]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        se = np.sqrt(s2 * np.sum((vt / sv[:, None]) ** 2, axis=0)) / norms
    c = math.exp(sol.x[0]) if sol.x[0] < 709 else math.inf
    with np.errstate(over="ignore", invalid="ignore"):  # how much C/m^alpha varies over m
        span = float(np.ptp(c * np.exp(-sol.x[1] * logm))) if math.isfinite(c) else math.inf
    problem = ("" if np.all(np.isfinite(sol.x)) and math.isfinite(c) and c > 0
               else "it has no finite optimum") or \
        ("" if sol.success else f"it did not converge ({sol.message})") or \
        ("" if rank == n_par else f"its {n_par} parameters are not all determined by the data "
         f"(Jacobian rank {rank})") or \
        ("" if np.all(np.isfinite(se[:2])) else "its standard errors are not finite") or \
        ("" if se[1] < 10 * abs(sol.x[1]) else "the data do not determine alpha_m (its "
         "standard error is more than 10 times itself)") or \
        ("" if span > 1e-6 * float(np.abs(y).max()) else f"the power term changes the loss by "
         f"{span:.3g} across the widths (losses up to {float(np.abs(y).max()):.3g}): flat "
         "losses, any alpha_m fits")
    if not problem and se[1] >= abs(sol.x[1]):
        warnings.warn(f"the width law's alpha_m = {sol.x[1]:.4g} +- {se[1]:.3g} is not "
                      "determined by these data (its standard error is larger than itself)",
                      stacklevel=2)
    if problem:
        raise ValueError(f"the width-law fit failed: {problem}; at its end alpha_m = "
                         f"{sol.x[1]:.4g} +- {se[1]:.3g}, C = {c:.4g}. The losses do not fall "
                         "as a power of m plus an offset per group; check the CSV")
    return WidthLawFit(alpha_m=float(sol.x[1]), alpha_m_se=float(se[1]), c=c,
                       c_se=float(c * se[0]),
                       offsets={g: (float(sol.x[2 + k]), float(se[2 + k]))
                                for k, g in enumerate(names)},
                       rmse=float(math.sqrt(float(r @ r) / y.size)), n_points=int(y.size),
                       n_params=n_par, success=bool(sol.success), message=str(sol.message))
