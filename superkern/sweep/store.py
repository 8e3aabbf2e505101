"""Crash-safe results store: one JSONL row per trained model, appended, never rewritten.

Guarantees (a sweep can be killed with SIGKILL at any instant):

- a row is appended with one ``write`` of the complete line followed by ``fsync``, under an
  exclusive ``flock``, so concurrent writers never interleave and a kill leaves at most one
  partial line at the end of the file;
- readers ignore a trailing partial line (with a warning); a writer truncates it before its first
  append, so the next row never glues onto the garbage;
- whole files (weights, manifests) are written to a temporary file in the same folder and moved
  into place with ``os.replace``, which is atomic on POSIX.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

from superkern._atomic import write_atomic, write_error

try:  # POSIX only; on other systems appends are still single writes, just unlocked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, "os.PathLike[str]"]


class ResultsWarning(UserWarning):
    """A results file had a partial or unreadable line (skipped)."""


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the second (the rows' ``created``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    write_atomic(path, data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _dumps(row: dict[str, Any]) -> str:
    # allow_nan=False: NaN/Inf are not JSON; a row carrying one is a bug upstream, not data.
    return json.dumps(row, separators=(",", ":"), allow_nan=False, sort_keys=False)


def _is_row(tail: bytes) -> bool:
    """Whether bytes after the last newline are one whole row (a JSON object)."""
    try:
        return isinstance(json.loads(tail.decode("utf-8")), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return False


def iter_jsonl(path: PathLike, *, warn: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the complete, parseable rows of a JSONL file.

    A last line without its newline is a write cut short by a kill: it is skipped with a
    :class:`ResultsWarning` (unless it is a whole row, as an edit that dropped the newline
    leaves it). Unparseable complete lines (never written by this module) are skipped
    with a warning too, rather than aborting an analysis of thousands of good rows.
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if tail.strip() and _is_row(tail):
        lines.append(tail)
    elif tail.strip() and warn:
        warnings.warn(f"{path}: ignoring a partial last line ({len(tail)} bytes, no newline; "
                      "a run was probably killed while writing)", ResultsWarning, stacklevel=2)
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if warn:
                warnings.warn(f"{path}:{lineno}: skipping an unreadable line ({exc})",
                              ResultsWarning, stacklevel=2)
            continue
        if isinstance(row, dict):
            yield row


def read_jsonl(path: PathLike, *, warn: bool = True) -> list[dict[str, Any]]:
    """All complete rows of a JSONL file (see :func:`iter_jsonl`)."""
    return list(iter_jsonl(path, warn=warn))


class ResultsStore:
    """Append-only JSONL store of sweep rows, keyed by ``run_id``.

    Args:
        path: the ``.jsonl`` file; created on first append.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    def rows(self, *, warn: bool = True) -> list[dict[str, Any]]:
        """Complete rows, in file order (empty if the file does not exist)."""
        if not self.path.exists():
            return []
        return read_jsonl(self.path, warn=warn)

    def repair(self) -> int:
        """Truncate a partial last line left by a killed writer. Returns the bytes dropped."""
        if not self.path.exists():
            return 0
        with open(self.path, "r+b") as f:
            self._lock(f.fileno())
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            # Scan backwards for the last newline; rows are small, so read in modest chunks.
            pos, chunk = size, 1 << 16
            while pos > 0:
                start = max(0, pos - chunk)
                f.seek(start)
                block = f.read(pos - start)
                idx = block.rfind(b"\n")
                if idx >= 0:
                    keep = start + idx + 1
                    break
                pos = start
            else:
                keep = 0
            if keep == size:
                return 0
            f.seek(keep)
            if _is_row(f.read(size - keep)):  # a whole row without its newline (an edit)
                f.seek(size)
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
                warnings.warn(f"{self.path}: added the missing newline after its last row",
                              ResultsWarning, stacklevel=2)
                return 0
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        warnings.warn(f"{self.path}: removed a partial last line ({size - keep} bytes) left by "
                      "an interrupted run", ResultsWarning, stacklevel=2)
        return size - keep

    def append(self, row: dict[str, Any]) -> None:
        """Append one row as a single full line, then fsync."""
        data = (_dumps(row) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(exc, f"cannot append to {self.path}") from exc
        try:
            self._lock(fd)
            view = memoryview(data)
            while view:  # os.write may write less than asked for very long lines
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError as exc:  # a part line left here is dropped by the next run's repair()
            raise write_error(exc, f"cannot append to {self.path}") from exc
        finally:
            os.close(fd)  # closing releases the flock

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append several rows (each its own durable line)."""
        for row in rows:
            self.append(row)

    @staticmethod
    def _lock(fd: int) -> None:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
