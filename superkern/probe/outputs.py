"""Writing results: everything is rendered in memory first, then each file is written to a
temporary file beside its target and moved into place with ``os.replace`` (atomic on POSIX),
so an error never leaves a half-written file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from superkern._atomic import write_atomic  # re-exported for callers of this module

PathLike = Union[str, os.PathLike]


def check_target(path: Optional[PathLike], *, is_dir: bool = False) -> None:
    """Fail early (before a long computation) on an output path that cannot be written."""
    if path is None:
        return
    p = Path(path)
    if is_dir:
        if p.exists() and not p.is_dir():
            raise ValueError(f"{p}: exists and is not a directory")
        return
    if p.is_dir():
        raise ValueError(f"{p}: is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    probe_dir = parent
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK):
        raise ValueError(f"{p}: cannot write there ({probe_dir} is not a writable directory)")


def check_targets(*files: Optional[PathLike], plots_dir: Optional[PathLike] = None) -> None:
    """:func:`check_target` for each output file and the plot folder, and no two outputs at the
    same path (one would silently overwrite the other)."""
    for f in files:
        check_target(f)
    check_target(plots_dir, is_dir=True)
    seen: dict[Path, PathLike] = {}
    for f in files:
        if f is None:
            continue
        key = Path(f).resolve()
        if key in seen:
            raise ValueError(f"{f}: given for two outputs (also as {seen[key]}); each output "
                             "needs its own file")
        seen[key] = f


def write_all(files: dict[str, Union[bytes, str]]) -> list[str]:
    return [write_atomic(path, data) for path, data in files.items()]


def write_outputs(report, *, json_path: Optional[PathLike] = None,
                  markdown_path: Optional[PathLike] = None,
                  plots_dir: Optional[PathLike] = None) -> list[str]:
    """Render the report's JSON, Markdown and PNG plots, then write them atomically."""
    check_targets(json_path, markdown_path, plots_dir=plots_dir)
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
