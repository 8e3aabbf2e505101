"""Atomic file writes: a temporary file beside the target, fsync, ``os.replace`` (atomic on
POSIX), then fsync of the folder, so a reader or a killed run never sees a half-written file
and a rename is durable before a results row can point at it."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def write_error(exc: OSError, what: str) -> OSError:
    """``exc`` with the file it was about (``what``, e.g. "cannot write PATH") and, for a full
    disk, a quota or a file-size limit, what to do: the bare '[Errno 28] No space left on
    device' named neither the file nor the disk."""
    hint = ("; free space (or raise the file-size limit) or write elsewhere: a rerun resumes"
            if exc.errno in _FULL else "")
    return OSError(exc.errno, f"{what}: {exc.strerror or exc}{hint}")


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` allows (255 if unknown)."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255
    return limit if limit and limit > 0 else 255


def _temp_prefix(name: str, folder: Path) -> str:
    """The temporary file's prefix: the name cut so that ``.NAME.XXXXXXXX.tmp`` (14 bytes
    more) fits the folder's file name limit whenever NAME does."""
    keep = max(1, _name_max(folder) - 14)
    return "." + os.fsdecode(os.fsencode(name)[:keep]) + "."


def write_atomic(path: PathLike, data: Union[bytes, str]) -> str:
    """Write ``data`` (bytes, or str as UTF-8) to ``path``; creates parent folders. Returns
    the path."""
    p = Path(path)
    if p.is_symlink():  # write through the link, as open() would, not over it
        p = Path(os.path.realpath(p))
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a folder; cannot write a file there")
    p.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=_temp_prefix(p.name, p.parent),
                                   suffix=".tmp")
    except OSError as exc:  # name the file asked for, not the hidden temporary one
        raise OSError(exc.errno, f"cannot write {p} (no file can be created in {p.parent}: "
                      f"{exc.strerror})") from None
    try:
        # mkstemp creates the file 0600; give it the mode an ordinary open() would: the
        # target's own mode when it exists, else 0666 less the umask, so results shared
        # between users or machines stay readable.
        if hasattr(os, "fchmod"):
            try:
                mode = os.stat(p).st_mode & 0o7777
            except OSError:
                mode = 0o666 & ~_umask()
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise write_error(exc, f"cannot write {p}") from exc
        raise
    _sync_dir(p.parent)
    return str(p)


def _sync_dir(folder: Path) -> None:
    """fsync a folder so that a rename in it survives a power loss (POSIX; a no-op where
    folders cannot be opened or synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_target(path: Optional[PathLike], *, is_dir: bool = False,
                 option: str = "") -> None:
    """Fail early (before a long computation) on an output path that cannot be written: a file
    path that is a folder, a folder path that is a file, or a path below a file or a folder
    that cannot be written. ``option`` (e.g. "--out") names it in the error."""
    if path is None:
        return
    p = Path(path)
    name = f"{option} {p}" if option else str(p)
    _check_name_lengths(p, name)  # first: stat() itself fails on a name that is too long
    if is_dir and p.exists() and not p.is_dir():
        raise ValueError(f"{name}: exists and is not a folder")
    if not is_dir and p.is_dir():
        raise ValueError(f"{name}: is a folder; give a file name")
    if is_dir and p.is_dir():
        if not os.access(p, os.W_OK):
            raise ValueError(f"{name}: the folder is not writable")
        return
    parent = p.parent if str(p.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{name}: cannot write there ({parent} is a file, not a folder)")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{name}: cannot write there ({parent} is not a writable folder)")


def _check_name_lengths(p: Path, name: str) -> None:
    """ValueError for a file or folder name still to be created that the file system would
    refuse as too long (found only after the work, when it is written)."""
    parent = p.parent
    while parent != parent.parent:  # the nearest existing ancestor
        try:
            if parent.exists():
                break
        except OSError:  # a name too long here too
            pass
        parent = parent.parent
    limit = _name_max(parent)
    for part in p.parts[len(parent.parts):]:  # parent: p's nearest existing ancestor
        size = len(os.fsencode(part))
        if size > limit:
            raise ValueError(f"{name}: the name {part[:40]}... is {size} bytes, longer than "
                             f"the {limit} this file system allows")


def check_targets(*files: Optional[PathLike], plots_dir: Optional[PathLike] = None,
                  plot_names: Iterable[str] = ()) -> None:
    """:func:`check_target` for each output file and the plot folder, and no two outputs at the
    same path (one would silently overwrite the other), the ``plot_names`` files the plot
    folder will hold included."""
    for f in files:
        check_target(f)
    check_target(plots_dir, is_dir=True)
    outputs = [(f, str(f)) for f in files if f is not None]
    if plots_dir is not None:
        outputs += [(Path(plots_dir) / n, f"the plot {n} in {plots_dir}") for n in plot_names]
    seen: dict[Path, str] = {}
    for f, label in outputs:
        key = Path(f).resolve()
        if key in seen:
            whose = ("it is given for both" if seen[key] == label else
                     f"{seen[key]}, and {label}")
            raise ValueError(f"{f}: two outputs would write this file ({whose}); give each "
                             "its own path")
        seen[key] = label
