"""Exponents of two runs of one grid compared cell by cell (``superkern fit A --against B``):
e.g. fp32 against tf32x3, where the faster precision counts only if its alpha_m match."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from superkern.analysis.scaling import CellFit, fit_cells
from superkern.analysis.tables import Results, cell_key
from superkern.toy.config import RECORD_FIELDS

# Fields that say how a model was computed, not which model it is: a comparison of two runs of
# the same grid (fp32 against tf32x3, torch against triton) matches cells on everything else.
COMPUTE_FIELDS = ("precision", "backend")
# Config fields that do not define the trained model (besides COMPUTE_FIELDS).
_NOT_MODEL = ("seed",) + RECORD_FIELDS + COMPUTE_FIELDS


@dataclass(frozen=True)
class ExponentComparison:
    """alpha_m of one cell in two runs, e.g. fp32 against tf32x3.

    diff = b - a; z = diff / sqrt(se_a^2 + se_b^2), the two fits taken as independent. Runs
    that share seeds share their data, so this overstates the noise of the difference and the
    z test is lenient; ``tol`` bounds the difference itself. agree: |z| <= z_max and
    |diff| <= tol.
    """

    label: str
    cell: dict[str, Any]
    compute_a: str
    compute_b: str
    m_used: tuple[float, ...]
    alpha_a: float
    se_a: float
    alpha_b: float
    se_b: float
    diff: float
    z: float
    agree: bool


# Matched on, then checked: cells that differ only in these pair up, and the model-config check
# names the difference ("the models differ in lr") instead of leaving both unmatched.
_CHECKED_NOT_MATCHED = ("lr", "lr_b", "warmup")


def _match_key(cell: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in cell.items()
                        if k not in COMPUTE_FIELDS + _CHECKED_NOT_MATCHED))


def _compute(cell: dict[str, Any]) -> str:
    return "/".join(str(cell.get(k)) for k in COMPUTE_FIELDS)


def _model_configs(results: Results) -> dict[tuple, set]:
    """Per cell (match key), the set of model configs of its runs: every field but seed,
    log_every, test_batches, precision and backend, so lr, warm-up, steps and the rest must
    agree."""
    out: dict[tuple, set] = {}
    for r in results.runs:
        key = _match_key(dict(cell_key(r.config)))
        out.setdefault(key, set()).add(tuple(sorted(
            (k, repr(v)) for k, v in r.config.items() if k not in _NOT_MODEL)))
    return out


def _ran_as(results: Results) -> dict[tuple, str]:
    """Per cell (match key), how its rows were actually computed: "precision/backend" from
    each row's own record (a config's backend "auto" resolves to a real one per row)."""
    seen: dict[tuple, set] = {}
    for r in results.runs:
        key = _match_key(dict(cell_key(r.config)))
        seen.setdefault(key, set()).add("/".join(
            str(r.row.get(k) or r.config.get(k)) for k in COMPUTE_FIELDS))
    return {k: ",".join(sorted(v)) for k, v in seen.items()}


def _field_values(configs: set) -> dict[str, set]:
    """field -> the set of its values over a set of config tuples."""
    out: dict[str, set] = {}
    for cfg in configs:
        for k, v in cfg:
            out.setdefault(k, set()).add(v)
    return out


def _nearest(key: tuple, others: list[tuple]) -> str:
    """How ``key`` differs from the closest of ``others`` (match keys): " (nearest cell there
    differs in steps 100 vs 300)", values as their repr (strings quoted), or "" when there
    are none. Cells that differ in a field the labels leave out (steps, batch, ...) read the
    same; this names the field."""
    mine = dict(key)
    best: Optional[list[str]] = None
    for other in others:
        theirs = dict(other)
        diff = [f"{k} {mine.get(k, '-')} vs {theirs.get(k, '-')}"
                for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if best is None or len(diff) < len(best):
            best = diff
    return f" (nearest cell there differs in {', '.join(best)})" if best else ""


def _unique(fits: list[CellFit], which: str) -> dict[tuple, CellFit]:
    out: dict[tuple, CellFit] = {}
    for c in fits:
        key = _match_key(c.cell)
        if key in out:
            raise ValueError(
                f"{which} holds the cell '{c.label}' twice, computed as {_compute(out[key].cell)} "
                f"and {_compute(c.cell)}: compare runs that each use one precision and backend")
        out[key] = c
    return out


def compare_exponents(a: list[CellFit], b: list[CellFit], *, z_max: float = 2.0,
                      tol: float = 0.05, configs_a: Optional[dict[tuple, set]] = None,
                      configs_b: Optional[dict[tuple, set]] = None,
                      ran_a: Optional[dict[tuple, str]] = None,
                      ran_b: Optional[dict[tuple, str]] = None,
                      ) -> tuple[list[ExponentComparison], list[str]]:
    """Match the cells of two fits on every field but :data:`COMPUTE_FIELDS` and compare
    their alpha_m.

    A pair is compared only when both are fitted over the same widths with the same range
    rule, and (given ``configs_a``/``configs_b`` from the runs) their models have the same
    configs apart from seed, log_every, test_batches, precision and backend. ``ran_a`` and
    ``ran_b`` (per match key, how the rows were computed) replace the configs'
    precision/backend in the output.

    Returns:
        ``(comparisons, not_compared)``: one :class:`ExponentComparison` per comparable cell,
        and for every other cell of either side its label and the reason.

    Raises:
        ValueError: a side holds one cell under two precisions or backends; non-positive or
            non-finite ``z_max``/``tol``.
    """
    for name, v in (("z_max", z_max), ("tol", tol)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v}")
    amap, bmap = _unique(a, "the first run"), _unique(b, "the second run")
    out, skipped = [], []
    for key, ca in amap.items():
        cb = bmap.get(key)
        if cb is None:
            skipped.append(f"{ca.label}: only in the first run"
                           + _nearest(key, [k for k in bmap if k not in amap]))
            continue
        if ca.fit is None or cb.fit is None:
            where = ("both runs" if ca.fit is None and cb.fit is None
                     else "the first run" if ca.fit is None else "the second run")
            skipped.append(f"{ca.label}: not fitted in {where}")
            continue
        fa, fb = ca.fit, cb.fit
        if fa.m_used != fb.m_used or fa.fit_range != fb.fit_range:
            skipped.append(f"{ca.label}: fitted over different widths (m {list(fa.m_used)} "
                           f"[{fa.fit_range}] against {list(fb.m_used)} [{fb.fit_range}])")
            continue
        if configs_a is not None and configs_b is not None and \
                configs_a.get(key) != configs_b.get(key):
            va = _field_values(configs_a.get(key, set()))
            vb = _field_values(configs_b.get(key, set()))
            diff_fields = sorted(k for k in set(va) | set(vb) if va.get(k) != vb.get(k))
            skipped.append(f"{ca.label}: the models differ in {', '.join(diff_fields)}")
            continue
        diff = fb.alpha_m - fa.alpha_m
        se = math.hypot(fa.stderr, fb.stderr)
        if se > 0:
            z = diff / se
        else:  # noiseless fits: only an exact match agrees
            z = 0.0 if abs(diff) <= 1e-12 else math.copysign(math.inf, diff)
        out.append(ExponentComparison(
            label=ca.label, cell=ca.cell,
            compute_a=(ran_a or {}).get(key) or _compute(ca.cell),
            compute_b=(ran_b or {}).get(key) or _compute(cb.cell),
            m_used=fa.m_used, alpha_a=fa.alpha_m, se_a=fa.stderr, alpha_b=fb.alpha_m,
            se_b=fb.stderr, diff=diff, z=z, agree=abs(z) <= z_max and abs(diff) <= tol))
    skipped += [f"{c.label}: only in the second run"
                + _nearest(k, [ka for ka in amap if ka not in bmap])
                for k, c in bmap.items() if k not in amap]
    return out, skipped


def compare_runs(a: Results, b: Results, fit_range: str = "paper", *, z_max: float = 2.0,
                 tol: float = 0.05) -> tuple[list[ExponentComparison], list[str]]:
    """:func:`compare_exponents` of two results, fitting each (no bootstrap: only the
    standard errors enter) and checking that matched cells trained the same models."""
    return compare_exponents(fit_cells(a, fit_range, n_boot=0), fit_cells(b, fit_range, n_boot=0),
                             z_max=z_max, tol=tol, configs_a=_model_configs(a),
                             configs_b=_model_configs(b), ran_a=_ran_as(a), ran_b=_ran_as(b))


def format_comparison(rows: list[ExponentComparison], skipped: list[str], *, a: str, b: str,
                      z_max: float, tol: float) -> str:
    """Plain-text table and verdict of :func:`compare_exponents`."""
    lines = [f"A: runs {a}", f"B: runs {b}",
             f"alpha_m of A against B, cell by cell: agree when |z| <= {z_max:g} and "
             f"|B - A| <= {tol:g}",
             f"{'cell':<40} {'A':>14} {'B':>14} {'B - A':>8} {'z':>6}  verdict"]
    for r in rows:
        lines.append(f"{r.label:<40} {r.alpha_a:>7.3f}+-{r.se_a:<5.3f} {r.alpha_b:>7.3f}+-"
                     f"{r.se_b:<5.3f} {r.diff:>+8.3f} {r.z:>6.2f}  "
                     f"{'agree' if r.agree else 'DIFFER'}  ({r.compute_a} vs "
                     f"{r.compute_b})")
    for u in skipped:
        lines.append(f"not compared: {u}")
    bad = [r for r in rows if not r.agree]
    tail = f"; {len(skipped)} cell(s) not compared" if skipped else ""
    if not rows:
        lines.append(f"no cell could be compared{tail}")
    elif bad:
        lines.append(f"exponents DIFFER in {len(bad)} of {len(rows)} cells{tail}")
    else:
        lines.append(f"exponents agree in all {len(rows)} compared cells (max |z| "
                     f"{max(abs(r.z) for r in rows):.2f}, max |B - A| "
                     f"{max(abs(r.diff) for r in rows):.3f}){tail}")
    return "\n".join(lines)
