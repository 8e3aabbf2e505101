"""``compare``: probe many heads and put them in one table (stdout / CSV / JSON) and two
figures: mean c^2 vs m with the 1/m line (paper Fig. 8a style) and row norms per head
(paper Fig. 20 style). With a corpus, a third: the overlaps inside each token-frequency bin,
one line per head."""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from superkern.backend import is_out_of_memory
from superkern.probe.format import _f, _grid
from superkern.probe.gguf_loader import shared_readers, shrink_shared
from superkern.probe.hub import parse_repo_ref
from superkern.probe.packages import ALIASES
from superkern.probe.report import clean

COLUMNS = ("name", "source", "tensor", "n", "m", "n_over_m", "dtype", "tied",
           "norm_mean", "norm_std", "norm_min", "norm_median", "norm_max",
           "phi_half", "phi_1", "phi_half_median", "phi_1_median", "duplicate_extra_copies",
           "mean_abs", "random_mean_abs", "mean_sq", "m_mean_sq", "mean_sq_centred",
           "m_mean_sq_centred", "max_abs", "welch_bound", "sampled_rows", "verdict",
           "norm_scale", "backend", "precision", "seconds", "freq_rows_seen", "freq_spearman",
           "freq_spearman_centred", "freq_m_mean_sq_centred")


def summary_row(report) -> dict[str, Any]:
    """The compare-table row of one ProbeReport."""
    d = report.to_dict()
    nd, ov = d["norms"], d["overlaps"]
    main, cen = ov["all"], ov.get("centred")
    tiled = main.get("tiled") or {}
    return {
        "name": d["head"]["name"], "source": d["head"]["source"], "tensor": d["head"]["tensor"],
        "n": d["rows"]["analysed"], "m": d["rows"]["m"],
        # n/m of the rows in the pairs (zero rows left out), as the verdict and Welch bound
        "n_over_m": main["rows_used"] / d["rows"]["m"], "dtype": d["head"]["dtype"],
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
        "seconds": d["run"]["seconds"], **_frequency_columns(d.get("frequency"), d["rows"]["m"]),
    }


def _frequency_columns(f: Optional[dict[str, Any]], m: int) -> dict[str, Any]:
    """Token-frequency columns of a compare row (None without a corpus): tokens seen,
    Spearman's rho raw and centred, and the centred m<c^2> per frequency bin, most frequent
    first, as one ';'-joined cell (the bins differ from head to head)."""
    if not f:
        return {"freq_rows_seen": None, "freq_spearman": None, "freq_spearman_centred": None,
                "freq_m_mean_sq_centred": None}
    per_bin = [m * b["mean_sq_centred"] if b.get("mean_sq_centred") is not None else None
               for b in f["bins"]]
    return {"freq_rows_seen": f["rows"], "freq_spearman": f["spearman"],
            "freq_spearman_centred": f["spearman_centred"],
            "freq_m_mean_sq_centred": ";".join(_f(v, 3) for v in per_bin)}


@dataclass
class Comparison:
    """Result of :func:`compare`: one row per head plus each head's row norms (for plots)."""

    rows: list[dict[str, Any]]
    norms: list[np.ndarray] = field(repr=False, default_factory=list)
    reports: list[dict[str, Any]] = field(repr=False, default_factory=list)
    # heads left out by compare(keep_going=True): {"index", "head", "source", "error"}
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {"heads": clean(self.rows), "reports": clean(self.reports)}
        if self.failed:
            out["failed"] = self.failed
        return out

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
        if any(r.get("freq_rows_seen") for r in self.rows):
            lines += ["", "Token frequency (each head's own tokenizer on the corpus): Spearman's "
                          "rho of norm and count;",
                      "m<c^2> of the centred rows inside each frequency bin, most frequent "
                      "first (1 for random directions)"]
            lines += _grid(["head", "seen", "rho", "rho centred", "m<c^2> centred by bin"],
                           [[r["name"], str(r["freq_rows_seen"]), _f(r["freq_spearman"], 3),
                             _f(r["freq_spearman_centred"], 3),
                             # each bin in a fixed width, so bins line up across heads
                             " ".join(f"{v:>6}" for v in r["freq_m_mean_sq_centred"].split(";"))]
                            for r in self.rows if r.get("freq_rows_seen")])
        if self.failed:
            lines += ["", f"Left out ({len(self.failed)} head(s) failed):"]
            lines += [f"  {f['head']}: {f['error']}" for f in self.failed]
        return "\n".join(lines)

    @staticmethod
    def plot_names(frequency: bool) -> tuple[str, ...]:
        """The files ``compare --plots DIR`` writes (frequency_overlaps.png with a corpus)."""
        return ("mean_sq_vs_m.png", "row_norms.png") + (
            ("frequency_overlaps.png",) if frequency else ())

    def plots(self) -> dict[str, bytes]:
        """PNG bytes by file name: ``mean_sq_vs_m.png`` and ``row_norms.png``."""
        from superkern.probe.plots import mean_sq_vs_m_png, row_norms_png

        out = {"mean_sq_vs_m.png": mean_sq_vs_m_png(self.rows),
               "row_norms.png": row_norms_png([r["name"] for r in self.rows], self.norms)}
        freq = [(r["name"], rep["rows"]["m"], rep["frequency"])
                for r, rep in zip(self.rows, self.reports) if rep.get("frequency")]
        if freq:
            from superkern.probe.plots import frequency_overlaps_png

            out["frequency_overlaps.png"] = frequency_overlaps_png(freq)
        return out

    def save(self, *, csv_path=None, json_path=None, plots_dir=None) -> list[str]:
        """Render everything, then write each file atomically."""
        from superkern.probe.outputs import check_targets, write_all

        freq = any(rep.get("frequency") for rep in self.reports)
        check_targets(csv_path, json_path, plots_dir=plots_dir,
                      plot_names=self.plot_names(freq))
        files: dict[str, Any] = {}
        if csv_path is not None:
            files[str(csv_path)] = self.to_csv()
        if json_path is not None:
            files[str(json_path)] = self.to_json() + "\n"
        if plots_dir is not None:
            files.update({str(Path(plots_dir) / k): v for k, v in self.plots().items()})
        return write_all(files)


def _count_corpus(sources: Sequence[Any], corpus: Any) -> list[tuple[np.ndarray, str]]:
    """Each head's token counts of the corpus, all before any probe: a head whose tokenizer
    is missing or cannot be rebuilt fails here, not after the others' O(n^2 m) passes. Heads
    that share a tokenizer share one count.

    Inside the caller's :func:`shared_readers` block each GGUF file is parsed once: after a
    head is counted, :func:`shrink_shared` drops its parse (~0.7 GB for a 262k vocabulary)
    and keeps what loading the head needs (tensor table, token strings: a few MB), so at
    most one parsed GGUF file is held, and the probes load their heads without parsing."""
    from superkern.analysis.tokens import corpus_counts, head_tokenizer_spec

    if not Path(corpus).is_file():
        raise FileNotFoundError(f"no such corpus file: {corpus}")
    done: dict[str, tuple[np.ndarray, str]] = {}
    out = []
    for src in sources:
        try:
            spec = head_tokenizer_spec(src)
        except ValueError as exc:
            raise ValueError(f"compare --corpus counts tokens with each head's own tokenizer: "
                             f"{exc}. Keep each head's tokenizer.json beside it (or give a "
                             "model folder, a GGUF file, an alias or a Hub repo id), or "
                             "probe that head alone with --tokenizer") from None
        try:
            key = os.path.realpath(spec) if isinstance(spec, Path) else str(spec)
            if key not in done:
                counts, name = corpus_counts(corpus, spec)
                shrink_shared()
                label = f"{name} tokens of {Path(corpus).name}"
                if int((counts > 0).sum()) < 3:
                    raise ValueError(f"{src}: {label}: only {int((counts > 0).sum())} token "
                                     "id(s) have a nonzero count; a frequency comparison "
                                     "needs 3")
                done[key] = (counts, label)
        except ValueError as exc:
            raise ValueError(f"compare --corpus counts tokens with each head's own tokenizer: "
                             f"{exc}") from None
        out.append(done[key])
    return out


def compare(sources: Sequence[Any], *, names: Optional[Sequence[str]] = None,
            tensor: Optional[str] = None, precision: str = "fp32", backend: str = "auto",
            device: str = "auto", sample: Optional[int] = None, exact: bool = False,
            bins: int = 100, seed: int = 0, progress: Optional[bool] = None,
            corpus: Any = None, keep_going: bool = False) -> Comparison:
    """Probe several heads (no norm splits, no top-k) and collect one row per head.

    Args:
        sources: paths / aliases / Hub repo ids / tensors, as for
            :func:`superkern.load_head`.
        names: display names (default: the head's own name).
        sample: row cap of every tiled pass, the main one included (None = auto: 8192 on a
            CPU, none on CUDA); mean c^2 is exact over all rows regardless.
        exact: no sampling at all (``sample=0``).
        corpus: a text file that every head's own tokenizer counts (see
            :func:`superkern.probe`): adds row norm vs token frequency per head.
        keep_going: a head whose load or probe fails (a bad file, no head tensor, out of
            memory) is left out and recorded in ``Comparison.failed``, and the others are
            still probed; a ValueError only if every head fails. Default: the first failure
            raises. The checks made before any probe (paths exist, corpus counts) raise
            either way.
        Other arguments as for :func:`superkern.probe`.
    """
    if isinstance(sources, (str, os.PathLike, torch.Tensor, np.ndarray)) or not isinstance(
            sources, Sequence):
        raise ValueError(f"compare takes a list of heads, got one {type(sources).__name__}; "
                         "pass [head] (or use superkern.probe for a single head)")
    if not sources:
        raise ValueError("compare needs at least one head")
    if names is not None and len(names) != len(sources):
        raise ValueError(f"{len(names)} names for {len(sources)} heads")
    if names is not None:
        empty = [k + 1 for k, v in enumerate(names) if not str(v).strip()]
        if empty:
            raise ValueError(f"name {empty[0]} of {len(names)} is empty; every head needs a "
                             "name (or leave out --names)")
        twice = sorted({str(v) for v in names if list(map(str, names)).count(str(v)) > 1})
        if twice:  # the table, JSON and plots tell heads apart by name
            raise ValueError(f"names {twice} repeat; give each head its own name")
    for src in sources:  # fail before any (slow) probe on a path that does not exist
        if isinstance(src, (str, os.PathLike)) and not os.path.exists(src) and \
                str(src).strip().lower() not in ALIASES and parse_repo_ref(src) is None:
            raise FileNotFoundError(f"{src}: no such file or directory (nor a package alias: "
                                    f"{', '.join(ALIASES)}; nor a Hub repo id ORG/NAME)")
    if device not in (None, "auto"):  # a bad device fails once, not once per head
        from superkern.backend import resolve_device

        resolve_device(device)
    with shared_readers() if corpus is not None else contextlib.nullcontext():
        counted = (_count_corpus(sources, corpus) if corpus is not None
                   else [(None, "")] * len(sources))
        return _probe_all(sources, counted, names, tensor=tensor, precision=precision,
                          backend=backend, device=device, sample=sample, exact=exact,
                          bins=bins, seed=seed, progress=progress, keep_going=keep_going)


def _label(src: Any, names: Optional[Sequence[str]], k: int) -> str:
    if names is not None:
        return str(names[k])
    return str(src) if isinstance(src, (str, os.PathLike)) else f"head{k}"


def _probe_all(sources, counted, names, *, tensor, precision, backend, device, sample, exact,
               bins, seed, progress, keep_going) -> Comparison:
    from superkern.probe.core import probe

    rows, norms, reports, failed = [], [], [], []
    seen: dict[str, tuple[int, Optional[int]]] = {}  # str(src) -> (its first index, its row)
    for k, src in enumerate(sources):
        counts, label = counted[k]
        first = seen.get(str(src)) if isinstance(src, (str, os.PathLike)) else None
        if first is not None:  # the same text twice: the same head, the same numbers
            _repeat(first, src, k, names, rows, norms, reports, failed)
            continue
        try:
            rep = probe(src, tensor=tensor, precision=precision, backend=backend,
                        device=device, bins=bins, topk=0, sample=0 if exact else sample,
                        sample_main=not exact, splits=False, seed=seed, progress=progress,
                        token_counts=counts)
        except (ValueError, OSError, RuntimeError, MemoryError) as exc:
            if not keep_going or (isinstance(exc, RuntimeError) and not is_out_of_memory(exc)):
                raise  # a RuntimeError other than out-of-memory is a bug: not hidden
            failed.append({"index": k, "head": _label(src, names, k),
                           "source": str(src) if isinstance(src, (str, os.PathLike)) else None,
                           "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                           if str(exc) else type(exc).__name__})
            if isinstance(src, (str, os.PathLike)):
                seen[str(src)] = (k, None)
            continue
        if rep.frequency is not None:
            rep.frequency.source = label
        if names is not None:
            rep.head.name = names[k]
        row = summary_row(rep)
        if not row["name"]:
            row["name"] = f"head{k}"
        if isinstance(src, (str, os.PathLike)):
            seen[str(src)] = (k, len(rows))
        rows.append(row)
        norms.append(rep.norms.norms.numpy())
        reports.append(rep.to_dict())
        del rep  # the matrix can be large; keep only the summary
    if failed and not rows:
        raise ValueError("every head failed: " + "; ".join(f"{f['head']}: {f['error']}"
                                                           for f in failed))
    return Comparison(rows=rows, norms=norms, reports=reports, failed=failed)


def _repeat(first: tuple[int, Optional[int]], src: Any, k: int, names, rows, norms, reports,
            failed) -> None:
    """Head ``k`` names the same source (the same text) as head ``first[0]`` did: a probe is
    deterministic (the same seed samples the same rows), so head ``k`` gets a copy of that
    head's row, or of its failure, under its own display name: a file named twice is read
    and probed once."""
    j, row_index = first
    if row_index is None:
        error = next(f["error"] for f in failed if f["index"] == j)
        failed.append({"index": k, "head": _label(src, names, k), "source": str(src),
                       "error": error})
        return
    row, report = copy.deepcopy(rows[row_index]), copy.deepcopy(reports[row_index])
    if names is not None:
        row["name"] = report["head"]["name"] = names[k]
    elif not report["head"]["name"]:
        row["name"] = f"head{k}"
    rows.append(row)
    norms.append(norms[row_index])
    reports.append(report)
