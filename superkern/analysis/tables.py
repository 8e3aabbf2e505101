"""Read sweep results into runs and cells (analysis never retrains; it only reads rows).

A *cell* is every config field except the width ``m``, the ``seed`` and the record-only
fields ``log_every`` and ``test_batches`` (learning rates count as "the preset's" where they
follow the preset's width rule): the set of models a scaling exponent alpha_m is fitted over.
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from superkern.sweep import engine
from superkern.sweep.shard import RESULTS_NAME, results_files
from superkern.sweep.store import read_jsonl
from superkern.toy.config import MAX_N, RECORD_FIELDS, preset_defaults

# Which stored loss analysis uses: the mean of the last 100 training steps (SPEC, the default)
# or the final model's loss on fresh test batches (ToyConfig.test_batches).
LOSSES = ("final", "test")
# Fields that vary inside a cell, or do not define it. lr and lr_b enter the key as "preset"
# when they are the preset's values for the run's width (the large preset makes them
# functions of m: 0.02 (8/m)^0.25 and 2/m), and as their values otherwise.
_NOT_CELL = ("m", "seed") + RECORD_FIELDS
_BY_PRESET = ("lr", "lr_b")


@dataclass(frozen=True)
class Run:
    """One stored model (a results row, with the fields analysis uses lifted out).

    ``final_loss`` and ``final_loss_std`` hold the loss the results were read with
    (:attr:`Results.loss`): the final training loss, or the test loss.
    """

    run_id: str
    config: dict[str, Any]
    final_loss: float
    final_loss_std: float
    phi_half: float
    phi_1: float
    geometry: dict[str, Any] = field(default_factory=dict)
    weights: Optional[Path] = None
    row: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def m(self) -> int:
        return int(self.config["m"])

    @property
    def n(self) -> int:
        return int(self.config["n"])

    @property
    def gamma(self) -> float:
        return float(self.config.get("gamma", 0.0))

    @property
    def alpha(self) -> float:
        a = self.config.get("alpha")
        return math.nan if a is None else float(a)

    @property
    def dist(self) -> str:
        d = self.config.get("dist", "power")
        return d if isinstance(d, str) else "explicit"

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def E(self) -> float:
        """Activation density sum_i p_i (the density sweep's s mapped to E)."""
        if self.config.get("density_s") is None and isinstance(self.config.get("dist"), str):
            return float(self.config.get("E") or 1.0)
        return engine.activation_density(self.config)


@dataclass
class Results:
    """Runs read from one results file."""

    path: Path
    runs: list[Run]
    read_at: str
    skipped: int = 0  # rows without a finite loss (diverged) or duplicates
    files: tuple[Path, ...] = ()  # every file read (a folder: results.jsonl and shard files)
    loss: str = "final"  # which loss the runs carry (see LOSSES)

    def __repr__(self) -> str:  # one line: the runs are in .runs
        return f"Results({self.caption()}; {self.skipped} row(s) left out)"

    @property
    def name(self) -> str:
        if len(self.files) > 1:
            return f"results*.jsonl ({len(self.files)} files)"
        return (self.files[0] if self.files else self.path).name

    def caption(self, runs: Optional[Sequence[Run]] = None) -> str:
        """'from <file> (<n> runs, <date>)': every figure says which runs it came from."""
        k = len(self.runs if runs is None else runs)
        created = sorted(r.row.get("created", "") for r in (runs or self.runs)
                         if r.row.get("created"))
        when = created[-1][:10] if created else self.read_at[:10]
        what = ", test loss" if self.loss == "test" else ""
        return f"from {self.path.parent.name}/{self.name} ({k} runs{what}, {when})"

    def where(self, **conds: Any) -> list[Run]:
        """Runs whose config matches every ``field=value`` (callables act as predicates)."""
        out = []
        for r in self.runs:
            ok = True
            for k, v in conds.items():
                val = getattr(r, k) if k in ("E",) else r.config.get(k)
                ok = v(val) if callable(v) else val == v
                if not ok:
                    break
            if ok:
                out.append(r)
        return out


def _usable(row: Mapping[str, Any], cfg: Mapping[str, Any]) -> bool:
    """A row analysis can read: integer m, n >= 1; finite numbers where numbers go; a
    geometry table and a weights path of the right kinds (a hand-edited or foreign row that
    is not is left out, not a crash deep inside a fit)."""
    def whole(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, float)) and float(v).is_integer()

    try:
        if not all(whole(cfg[k]) and 1 <= cfg[k] <= MAX_N for k in ("m", "n")):
            return False
        if "seed" in cfg and not whole(cfg["seed"]):
            return False
        if "gamma" in cfg and cfg["gamma"] is None:  # may be absent (0), never null
            return False
        for key in ("gamma", "alpha", "E", "lr", "lr_b", "density_s"):
            v = cfg.get(key)
            if v is not None and (isinstance(v, bool) or not math.isfinite(float(v))):
                return False
        dist = cfg.get("dist", "power")
        if dist == "power" and cfg.get("alpha") is None:
            return False
        if isinstance(dist, str) and dist not in ("power", "exponential", "linear"):
            return False
        if isinstance(dist, list) and (len(dist) != cfg["n"] or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                for v in dist)):
            return False
        if not (cfg.get("E") is None or float(cfg["E"]) > 0) or not (
                cfg.get("density_s") is None or 0 <= float(cfg["density_s"]) <= 1):
            return False
    except (KeyError, TypeError, ValueError, OverflowError):
        return False
    geometry = row.get("geometry") or {}
    if not (isinstance(cfg.get("dist", "power"), (str, list)) and isinstance(geometry, dict)
            and isinstance(row.get("weights") or "", str)
            and all(v is None or isinstance(v, (bool, int, float)) for v in geometry.values())):
        return False
    try:  # the frequencies the analyses derive (an explicit p that does not sum to E)
        engine.probabilities(cfg)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _finite(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def load_results(path: str | Path, loss: str = "final") -> Results:
    """Read a ``results.jsonl``, or a sweep folder: its ``results.jsonl`` and the files of
    sharded runs (``results.shard-K-of-N.jsonl``) together. Duplicates (same run_id) keep the
    first usable row; rows with no finite final loss (diverged runs) or that are malformed
    are counted in ``skipped`` and left out.

    ``loss="test"`` gives each run its test loss instead of the final training loss; rows
    without one (trained with ``test_batches = 0``) are left out too, with a warning."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    path = Path(path)
    if path.is_dir():
        files = results_files(path)
        if not files:
            raise FileNotFoundError(f"no results file in {path} (neither {RESULTS_NAME} nor "
                                    "results.shard-K-of-N.jsonl)")
        path = files[0] if len(files) == 1 else path / RESULTS_NAME
    else:
        files = [path]
        if not path.is_file():
            extra = (f"; {path.parent} has {len(results_files(path.parent))} results file(s): "
                     "pass the folder to read them all") if results_files(path.parent) else ""
            raise FileNotFoundError(f"no results file at {path}{extra}")
        siblings = results_files(path.parent)
        if path.name.startswith("results") and len(siblings) > 1:
            warnings.warn(f"{path}: reading 1 of the {len(siblings)} results files of "
                          f"{path.parent}; pass the folder to read them all", stacklevel=2)
    rows = [row for f in files for row in read_jsonl(f)]
    runs: list[Run] = []
    seen: set[str] = set()
    untested: dict[str, int] = {}  # run id -> its rows left out for lacking a test loss
    for row in rows:
        rid = str(row.get("run_id", ""))
        cfg = row.get("config")
        if not rid or not isinstance(cfg, dict) or rid in seen or not _usable(row, cfg):
            continue
        value = _finite(row.get("final_loss"))
        if not (math.isfinite(value) and value > 0) or row.get("diverged"):
            continue
        if loss == "test":
            value = _finite(row.get("test_loss"))
            if not (math.isfinite(value) and value > 0):
                untested[rid] = untested.get(rid, 0) + 1
                continue
        # the first usable row of a run id is kept: with loss="test", a retrain with test
        # batches appended after a row without them
        seen.add(rid)
        w = row.get("weights")
        runs.append(Run(run_id=rid, config=cfg, final_loss=value,
                        final_loss_std=_finite(row.get(f"{loss}_loss_std")),
                        phi_half=_finite(row.get("phi_half")), phi_1=_finite(row.get("phi_1")),
                        geometry=dict(row.get("geometry") or {}),
                        weights=(path.parent / w) if w else None, row=row))
    # Not left out but companions of a kept run: the rows a sweep added with a test loss
    # from saved weights (loss="final"), and the rows without one that such a row (or a
    # retrain) completed (loss="test").
    companions = (sum(k for rid, k in untested.items() if rid in seen) if loss == "test"
                  else sum(1 for row in rows if row.get("test_from_weights")
                           and str(row.get("run_id", "")) in seen))
    skipped = len(rows) - len(runs) - companions
    no_test = sum(k for rid, k in untested.items() if rid not in seen)
    if no_test:
        warnings.warn(f"{path}: left out {no_test} row(s) with no test loss (trained with "
                      "test_batches = 0)", stacklevel=2)
    if skipped > no_test:
        warnings.warn(f"{path}: left out {skipped - no_test} row(s) (duplicates, diverged, "
                      "a loss that is not > 0, or malformed)", stacklevel=2)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return Results(path=path, runs=runs, read_at=now, skipped=skipped, files=tuple(files),
                   loss=loss)


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _preset_marked(cfg: dict[str, Any]) -> None:
    """lr / lr_b -> "preset" where they equal the preset's value at the run's width."""
    try:
        d = preset_defaults(cfg.get("preset"), int(cfg["m"]), cfg.get("steps"))
    except (KeyError, TypeError, ValueError):
        return
    want = {"lr": d["lr"], "lr_b": cfg.get("lr") if d["lr_b"] is None else d["lr_b"]}
    for k in _BY_PRESET:
        v = cfg.get(k)
        if isinstance(v, (int, float)) and isinstance(want[k], (int, float)) \
                and math.isclose(v, want[k], rel_tol=1e-9):
            cfg[k] = "preset"


def cell_key(config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Sorted ``(field, value)`` pairs identifying a config's cell."""
    cfg = dict(config)
    if cfg.get("dist", "power") != "power":
        cfg["alpha"] = None  # alpha is meaningless for exponential / linear / explicit p
    _preset_marked(cfg)
    return tuple(sorted((k, _hashable(v)) for k, v in cfg.items() if k not in _NOT_CELL))


def cells(runs: Iterable[Run]) -> dict[tuple, list[Run]]:
    """Runs grouped by :func:`cell_key`, each group sorted by (m, seed).

    A cell holds one run per (m, seed): two runs there differ only in fields that change
    nothing (alpha of a non-power law, ``log_every``), i.e. one model stored twice under run
    ids of older versions. The first is kept, with a warning; they never count as two seeds.
    """
    out: dict[tuple, list[Run]] = {}
    for r in runs:
        out.setdefault(cell_key(r.config), []).append(r)
    for key, v in out.items():
        v.sort(key=lambda r: (r.m, r.seed))
        first: dict[tuple[int, int], Run] = {}
        keep = []
        for r in v:
            other = first.setdefault((r.m, r.seed), r)
            if other is r:
                keep.append(r)
                continue
            differ = sorted(k for k in set(r.config) | set(other.config)
                            if r.config.get(k) != other.config.get(k))
            warnings.warn(f"runs {other.run_id} and {r.run_id} are the same model (m={r.m}, "
                          f"seed={r.seed}; differing only in {differ}); keeping the first",
                          stacklevel=2)
        v[:] = keep
    return out


def main_grid(items: Sequence[Any], cell_of,
              axes: Sequence[str] = ("gamma", "alpha")) -> tuple[list[Any], int]:
    """The items (runs or cell fits) of the largest grid over ``axes`` among them, and how
    many were left out: cells that agree on every field but the axes form one grid, so a
    folder holding two grids (e.g. n = 100 and n = 200) never puts both in one figure."""
    groups: dict[tuple, list[Any]] = {}
    for it in items:
        key = tuple(sorted((k, repr(v)) for k, v in dict(cell_of(it)).items()
                           if k not in axes))
        groups.setdefault(key, []).append(it)
    best = max(groups.values(), key=len) if groups else []
    return best, len(items) - len(best)


def one_grid(items: Sequence[Any], cell_of, axes: Sequence[str] = ("gamma", "alpha"),
             what: str = "runs") -> tuple[list[Any], str]:
    """:func:`main_grid`, with a figure-footer note on what was left out ("" if nothing)."""
    kept, left_out = main_grid(items, cell_of, axes)
    return kept, f"{left_out} {what} of other grids left out" if left_out else ""


def run_grid(runs: Sequence["Run"], axes: Sequence[str] = ("gamma", "alpha")
             ) -> tuple[list["Run"], str]:
    """:func:`one_grid` of runs, grouped by their cell keys."""
    return one_grid(runs, lambda r: cell_key(r.config), axes)


def dist_label(config: Mapping[str, Any]) -> str:
    """'exponential', 'linear', 'power a=1.2', 'explicit'."""
    d = config.get("dist", "power")
    if not isinstance(d, str):
        return "explicit"
    if d == "power":
        return f"power a={float(config.get('alpha', 1.0)):g}"
    return d


def by_width(runs: Sequence[Run], value: str = "final_loss") -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct widths and, per width, the values of ``value`` over seeds."""
    widths = sorted({r.m for r in runs})
    groups = [np.array([getattr(r, value) for r in runs if r.m == w], dtype=np.float64)
              for w in widths]
    return np.array(widths, dtype=np.float64), groups


def read_csv_columns(path: str | Path, labels: Sequence[str], numbers: Sequence[str]
                     ) -> tuple[list[tuple[str, ...]], dict[str, np.ndarray]]:
    """Rows of a CSV whose header names at least the ``labels`` (text) and ``numbers`` (floats)
    columns, in any case and order; blank lines and lines starting with '#' are skipped.

    Returns:
        ``(label tuples, {number column: float64 array})``, one entry per data row.

    Raises:
        FileNotFoundError: no such file. ValueError: a missing column, a non-numeric number
        (with its line), or no data rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM (spreadsheets): skipped
            lines = [(n, line) for n, line in enumerate(f, 1)
                     if line.strip() and not line.lstrip().startswith("#")]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text CSV ({exc.reason} at byte {exc.start})"
                         ) from None
    reader = csv.DictReader([line for _, line in lines])
    cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    need = (*labels, *numbers)
    missing = [c for c in need if c not in cols]
    if missing:
        raise ValueError(f"{path}: CSV needs columns {need}; missing {missing} "
                         f"(header: {reader.fieldnames})")
    keys: list[tuple[str, ...]] = []
    values: dict[str, list[float]] = {c: [] for c in numbers}
    for (lineno, _), row in zip(lines[1:], reader):
        try:
            nums = [float(row[cols[c]]) for c in numbers]
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{lineno}: {', '.join(numbers)} must be numbers: "
                             f"{dict(row)}") from None
        for c, v in zip(numbers, nums):
            values[c].append(v)
        keys.append(tuple((row[cols[c]] or "").strip() for c in labels))
    if not keys:
        raise ValueError(f"{path}: no data rows")
    return keys, {c: np.array(v, dtype=np.float64) for c, v in values.items()}


def load_width_csv(path: str | Path) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Rows of a (family, dataset, m, loss) CSV with a header naming those columns.

    Returns:
        ``(groups, m, loss)`` with groups ``(family, dataset)``.
    """
    groups, v = read_csv_columns(path, ("family", "dataset"), ("m", "loss"))
    return groups, v["m"], v["loss"]
