"""Writing results: everything is rendered in memory first, then each file is written to a
temporary file beside its target and moved into place with ``os.replace`` (atomic on POSIX),
so an error never leaves a half-written file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from superkern._atomic import check_targets, write_atomic  # check_targets: re-exported

PathLike = Union[str, os.PathLike]


def plot_names(frequency: bool) -> tuple[str, ...]:
    """The files ``probe --plots DIR`` writes (norm_vs_frequency.png with token counts)."""
    return ("norms.png", "overlaps.png") + (("norm_vs_frequency.png",) if frequency else ())


def write_all(files: dict[str, Union[bytes, str]]) -> list[str]:
    return [write_atomic(path, data) for path, data in files.items()]


def write_outputs(report, *, json_path: Optional[PathLike] = None,
                  markdown_path: Optional[PathLike] = None,
                  plots_dir: Optional[PathLike] = None) -> list[str]:
    """Render the report's JSON, Markdown and PNG plots, then write them atomically."""
    check_targets(json_path, markdown_path, plots_dir=plots_dir,
                  plot_names=plot_names(report.frequency is not None))
    files: dict[str, Union[bytes, str]] = {}
    if json_path is not None:
        files[str(json_path)] = report.to_json() + "\n"
    if markdown_path is not None:
        files[str(markdown_path)] = report.to_markdown()
    if plots_dir is not None:
        from superkern.probe.plots import norm_histogram_png, overlap_histogram_png

        files[str(Path(plots_dir) / "norms.png")] = norm_histogram_png(report)
        files[str(Path(plots_dir) / "overlaps.png")] = overlap_histogram_png(report)
        if report.frequency is not None:
            from superkern.probe.plots import norm_vs_frequency_png

            files[str(Path(plots_dir) / "norm_vs_frequency.png")] = norm_vs_frequency_png(
                report)
    return write_all(files)
