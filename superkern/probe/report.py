"""What ``superkern.probe`` returns: the head, its row norms, overlap blocks and a verdict."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from superkern.ops.norms import NormStats
from superkern.ops.overlap_types import OverlapStats
from superkern.probe import baselines
from superkern.probe.frequency import FrequencyStats
from superkern.probe.head import Head


def _num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def clean(obj: Any) -> Any:
    """JSON-ready copy: NaN/Inf -> None, tensors and tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return clean(obj.tolist())
    if isinstance(obj, float):
        return _num(obj)
    return obj


@dataclass
class OverlapBlock:
    """Overlap statistics of one row set.

    ``exact`` holds ``mean_cos`` and ``mean_sq`` over ALL rows of the set from the Gram
    identities (fp64, O(N m^2)). ``stats`` is the tiled pass (mean |c|, variance, max, histogram,
    top-k); when ``sampled`` it ran on a seeded uniform sample of the set's rows.
    """

    key: str
    title: str
    rows: int
    m: int
    exact: dict[str, Any]
    stats: Optional[OverlapStats] = None
    sampled: bool = False
    centred: bool = False
    mean_abs_se: Optional[float] = None  # standard error of a sampled mean |c|

    @property
    def n_used(self) -> int:
        return int(self.exact["n_used"])

    @property
    def mean_sq(self) -> float:
        return float(self.exact["mean_sq"])

    @property
    def welch(self) -> float:
        return baselines.welch_bound(self.n_used, self.m)

    def to_dict(self, token=str) -> dict[str, Any]:
        m = self.m
        ea = baselines.random_mean_abs(m)
        out: dict[str, Any] = {
            "key": self.key, "title": self.title, "rows": self.rows, "rows_used": self.n_used,
            "zero_rows": self.exact["n_zero"], "pairs": self.exact["n_pairs"],
            "centred": self.centred, "mean_cos": _num(self.exact["mean_cos"]),
            "mean_sq": _num(self.mean_sq), "m_mean_sq": _num(m * self.mean_sq),
            "random": {"mean_sq": 1.0 / m, "mean_abs": ea, "var_abs": baselines.random_var_abs(m)},
            # no bound for a set without pairs (fewer than 2 rows)
            "welch_bound": self.welch if self.n_used >= 2 else None,
            "welch_sq": self.welch ** 2 if self.n_used >= 2 else None,
            "etf_possible": baselines.etf_possible(self.n_used, m),
        }
        s = self.stats
        if s is None:
            out["tiled"] = None
            return out
        tiled = {"rows": s.n_used, "pairs": s.n_pairs, "sampled": self.sampled,
                 "mean_cos": _num(s.mean_cos), "mean_abs": _num(s.mean_abs),
                 "mean_sq": _num(s.mean_sq), "var_abs": _num(s.var_abs),
                 "max_abs": _num(s.max_abs), "max_pair": list(s.max_pair) if s.max_pair else None,
                 "backend": s.backend, "precision": s.precision, "seconds": s.seconds}
        if s.max_pair:
            tiled["max_tokens"] = [token(s.max_pair[0]), token(s.max_pair[1])]
        if s.hist is not None:
            tiled["hist"] = s.hist.tolist()
            tiled["hist_range"] = [-1.0, 1.0]
        if s.topk_values is not None and s.topk_values.numel():
            tiled["topk"] = [
                {"i": int(i), "j": int(j), "cos": float(c),
                 "tokens": [token(int(i)), token(int(j))]}
                for (i, j), c in zip(s.topk_pairs.tolist(), s.topk_values.tolist())]
        out["tiled"] = tiled
        # The tiled statistics below come from the sample when "sampled": mean_abs with its
        # standard error, max_abs a lower bound on the set's.
        out["sampled"] = self.sampled
        out["sample_rows"] = s.n_used if self.sampled else None
        out["mean_abs"] = _num(s.mean_abs)
        out["mean_abs_se"] = _num(self.mean_abs_se) if self.sampled else None
        out["mean_abs_over_random"] = _num(s.mean_abs / ea)
        out["max_abs"] = _num(s.max_abs)
        out["max_over_welch"] = _num(s.max_abs / self.welch) if self.welch > 0 else None
        return out


@dataclass
class ProbeReport:
    """Result of :func:`superkern.probe`. ``to_dict()`` is the JSON form as Python values
    (undefined numbers stay NaN there); ``to_json()`` and ``save(json_path=...)`` write it as
    strict JSON (NaN as null); ``format_table()`` (also ``print(report)``), ``to_markdown()``
    and ``save(...)`` render it."""

    head: Head
    rows_analysed: int
    excluded: list[int]
    duplicates: list[list[int]]
    duplicates_excluded: bool
    norms: NormStats
    blocks: dict[str, OverlapBlock]
    verdict: dict[str, Any]
    run: dict[str, Any]
    rows_selected: Optional[int] = None
    sample_rows: dict[str, torch.Tensor] = field(default_factory=dict)
    row_norms: Optional[torch.Tensor] = field(default=None, repr=False)  # (n,), NaN: not analysed
    row_norms_centred: Optional[torch.Tensor] = field(default=None, repr=False)  # of nonzero rows
    frequency: Optional[FrequencyStats] = None  # row norm vs token counts, when given

    @property
    def n(self) -> int:
        return self.head.n

    @property
    def m(self) -> int:
        return self.head.m

    def to_dict(self) -> dict[str, Any]:
        tok = self.head.token
        dup_extra = sum(len(g) - 1 for g in self.duplicates)
        norms = self.norms.to_dict()
        norms["toy_scale"] = self.verdict.get("norm_scale") == "raw"
        return {
            "head": self.head.describe(),
            "rows": {"n": self.n, "m": self.m, "analysed": self.rows_analysed,
                     "selected": self.rows_selected, "excluded": len(self.excluded),
                     "excluded_rows": self.excluded[:1000]},
            "duplicates": {
                "groups": len(self.duplicates),
                "rows_in_groups": sum(len(g) for g in self.duplicates),
                "extra_copies": dup_extra, "excluded": self.duplicates_excluded,
                # the 1000 largest groups, largest first; rows and tokens of the first 20 of each
                "largest": [{"rows": g[:20], "count": len(g), "tokens": [tok(i) for i in g[:20]]}
                            for g in sorted(self.duplicates, key=len, reverse=True)[:1000]]},
            "norms": {k: _num(v) for k, v in norms.items()},
            "overlaps": {k: b.to_dict(tok) for k, b in self.blocks.items()},
            "baseline": {"m": self.m, "random_mean_sq": 1.0 / self.m,
                         "random_mean_abs": baselines.random_mean_abs(self.m),
                         "welch_bound": self.blocks["all"].welch},
            "verdict": self.verdict,
            "run": self.run,
            **({"frequency": self.frequency.to_dict()} if self.frequency is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(clean(self.to_dict()), indent=2, allow_nan=False)

    def format_table(self) -> str:
        from superkern.probe.format import format_table

        return format_table(self)

    def to_markdown(self) -> str:
        from superkern.probe.format import format_markdown

        return format_markdown(self)

    def save(self, *, json_path=None, markdown_path=None, plots_dir=None) -> list[str]:
        """Render everything first, then write each file atomically; returns the paths."""
        from superkern.probe.outputs import write_outputs

        return write_outputs(self, json_path=json_path, markdown_path=markdown_path,
                             plots_dir=plots_dir)

    def __str__(self) -> str:
        return self.format_table()

    def __repr__(self) -> str:  # one line (the dataclass repr held the head: 344 KB for MiniLM)
        main = self.blocks.get("all")
        msq = f", m*mean_sq={self.m * main.mean_sq:.4g}" if main is not None else ""
        return (f"ProbeReport({self.head.name or self.head.source!r}: {self.n} x {self.m}, "
                f"{self.rows_analysed} rows analysed, verdict={self.verdict.get('label')!r}"
                f"{msq}; print() it for the table)")
