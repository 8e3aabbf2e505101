"""``compare``: probe many heads and put them in one table (stdout / CSV / JSON) and two
figures: mean c^2 vs m with the 1/m line (paper Fig. 8a style) and row norms per head
(paper Fig. 20 style)."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from superkern.probe.format import _f, _grid
from superkern.probe.packages import ALIASES
from superkern.probe.report import clean

COLUMNS = ("name", "source", "tensor", "n", "m", "n_over_m", "dtype", "tied",
           "norm_mean", "norm_std", "norm_min", "norm_median", "norm_max",
           "phi_half", "phi_1", "phi_half_median", "phi_1_median", "duplicate_extra_copies",
           "mean_abs", "random_mean_abs", "mean_sq", "m_mean_sq", "mean_sq_centred",
           "m_mean_sq_centred", "max_abs", "welch_bound", "sampled_rows", "verdict",
           "norm_scale", "backend", "precision", "seconds")


def summary_row(report) -> dict[str, Any]:
    """The compare-table row of one ProbeReport."""
    d = report.to_dict()
    nd, ov = d["norms"], d["overlaps"]
    main, cen = ov["all"], ov.get("centred")
    tiled = main.get("tiled") or {}
    return {
        "name": d["head"]["name"], "source": d["head"]["source"], "tensor": d["head"]["tensor"],
        "n": d["rows"]["analysed"], "m": d["rows"]["m"],
        "n_over_m": d["rows"]["analysed"] / d["rows"]["m"], "dtype": d["head"]["dtype"],
        "tied": d["head"]["tied"], "norm_mean": nd["mean"], "norm_std": nd["std"],
        "norm_min": nd["min"], "norm_median": nd["median"], "norm_max": nd["max"],
        "phi_half": nd["phi_half"], "phi_1": nd["phi_1"],
        "phi_half_median": nd["phi_half_median"], "phi_1_median": nd["phi_1_median"],
        "duplicate_extra_copies": d["duplicates"]["extra_copies"],
        "mean_abs": main.get("mean_abs"), "random_mean_abs": main["random"]["mean_abs"],
        "mean_sq": main["mean_sq"], "m_mean_sq": main["m_mean_sq"],
        "mean_sq_centred": cen["mean_sq"] if cen else None,
        "m_mean_sq_centred": cen["m_mean_sq"] if cen else None,
        "max_abs": main.get("max_abs"), "welch_bound": main["welch_bound"],
        "sampled_rows": tiled.get("rows") if tiled.get("sampled") else None,
        "verdict": d["verdict"]["label"], "norm_scale": d["verdict"]["norm_scale"],
        "backend": d["run"]["backend"], "precision": d["run"]["precision"],
        "seconds": d["run"]["seconds"],
    }


@dataclass
class Comparison:
    """Result of :func:`compare`: one row per head plus each head's row norms (for plots)."""

    rows: list[dict[str, Any]]
    norms: list[np.ndarray] = field(repr=False, default_factory=list)
    reports: list[dict[str, Any]] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"heads": clean(self.rows), "reports": clean(self.reports)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in clean(self.rows):
            w.writerow({k: "" if r.get(k) is None else r.get(k) for k in COLUMNS})
        return buf.getvalue()

    def format_table(self) -> str:
        head = ["head", "n", "m", "n/m", "tied", "norm mean+-std", "phi_1/2 raw/med",
                "mean|c|", "mean c^2", "m*c^2", "m*c^2 centred", "max|c|", "verdict", "s"]
        body = []
        for r in self.rows:
            tied = "?" if r["tied"] is None else ("yes" if r["tied"] else "no")
            mark = "*" if r["sampled_rows"] else ""
            body.append([r["name"], str(r["n"]), str(r["m"]), f"{r['n_over_m']:.1f}", tied,
                         f"{_f(r['norm_mean'], 3)}+-{_f(r['norm_std'], 2)}",
                         f"{_f(r['phi_half'], 3)}/{_f(r['phi_half_median'], 3)}",
                         _f(r["mean_abs"]) + mark, _f(r["mean_sq"]), _f(r["m_mean_sq"], 3),
                         _f(r["m_mean_sq_centred"], 3), _f(r["max_abs"], 3) + mark,
                         r["verdict"], f"{r['seconds']:.1f}"])
        lines = _grid(head, body)
        if any(r["sampled_rows"] for r in self.rows):
            lines.append("  * mean|c| and max|c| on a seeded row sample; mean c^2 is exact")
        return "\n".join(lines)

    def plots(self) -> dict[str, bytes]:
        """PNG bytes by file name: ``mean_sq_vs_m.png`` and ``row_norms.png``."""
        from superkern.probe.plots import mean_sq_vs_m_png, row_norms_png

        return {"mean_sq_vs_m.png": mean_sq_vs_m_png(self.rows),
                "row_norms.png": row_norms_png([r["name"] for r in self.rows], self.norms)}

    def save(self, *, csv_path=None, json_path=None, plots_dir=None) -> list[str]:
        """Render everything, then write each file atomically."""
        from superkern.probe.outputs import check_targets, write_all

        check_targets(csv_path, json_path, plots_dir=plots_dir)
        files: dict[str, Any] = {}
        if csv_path is not None:
            files[str(csv_path)] = self.to_csv()
        if json_path is not None:
            files[str(json_path)] = self.to_json() + "\n"
        if plots_dir is not None:
            files.update({str(Path(plots_dir) / k): v for k, v in self.plots().items()})
        return write_all(files)


def compare(sources: Sequence[Any], *, names: Optional[Sequence[str]] = None,
            tensor: Optional[str] = None, precision: str = "fp32", backend: str = "auto",
            device: str = "auto", sample: Optional[int] = None, exact: bool = False,
            bins: int = 100, seed: int = 0, progress: Optional[bool] = None) -> Comparison:
    """Probe several heads (no norm splits, no top-k) and collect one row per head.

    Args:
        sources: paths / aliases / tensors, as for :func:`superkern.load_head`.
        names: display names (default: the head's own name).
        sample: row cap of every tiled pass, the main one included (None = auto: 8192 on a
            CPU, none on CUDA); mean c^2 is exact over all rows regardless.
        exact: no sampling at all (``sample=0``).
        Other arguments as for :func:`superkern.probe`.
    """
    from superkern.probe.core import probe

    if not sources:
        raise ValueError("compare needs at least one head")
    if names is not None and len(names) != len(sources):
        raise ValueError(f"{len(names)} names for {len(sources)} heads")
    for src in sources:  # fail before any (slow) probe on a path that does not exist
        if isinstance(src, (str, os.PathLike)) and not os.path.exists(src) and \
                str(src).strip().lower() not in ALIASES:
            raise FileNotFoundError(f"{src}: no such file or directory (and not a known "
                                    f"package alias: {', '.join(ALIASES)})")
    rows, norms, reports = [], [], []
    for k, src in enumerate(sources):
        rep = probe(src, tensor=tensor, precision=precision, backend=backend, device=device,
                    bins=bins, topk=0, sample=0 if exact else sample, sample_main=not exact,
                    splits=False, seed=seed, progress=progress)
        if names is not None:
            rep.head.name = names[k]
        row = summary_row(rep)
        if not row["name"]:
            row["name"] = f"head{k}"
        rows.append(row)
        norms.append(rep.norms.norms.numpy())
        reports.append(rep.to_dict())
        del rep  # the matrix can be large; keep only the summary
    return Comparison(rows=rows, norms=norms, reports=reports)
