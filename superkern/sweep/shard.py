"""Sweeps past one GPU: a grid split into N shards, each run by its own process.

``superkern sweep CONFIG --shard K/N`` runs shard K of N; the N processes may sit on one machine
(``--devices cuda:0,cuda:1,...`` starts them, one per device) or on several machines that share
the output folder. There is no coordinator, and shards of one split never wait for each
other (their locks only refuse a second copy of a shard, another split running at the same
time, or an unsharded run beside them):

* **The split depends only on the grid.** Every shard assigns the whole grid's models
  greedily, largest estimated work first, to the least loaded shard (the LPT rule: the
  busiest shard ends within one model of the mean), then groups its own models into launches
  as an unsharded sweep would. Which models are already done does not enter, so shards
  started at different times, or restarted after a kill, agree on who owns what.
* **Each shard appends to its own file**, ``results.shard-K-of-N.jsonl``, so no two processes
  ever append to one file (appends to a shared file are not atomic on every network file
  system). Readers (``superkern fit``, ``superkern figures``, resume) take a folder's
  ``results.jsonl`` and every ``results.shard-*.jsonl`` together, first row per run id wins.
* **Resume is per model.** A shard skips every model found in any results file of the folder,
  so a rerun with another N, or without sharding, trains only what is missing.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import json
import os
import re
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

from superkern.sweep import engine
from superkern.sweep.store import atomic_write_text, read_jsonl

try:  # POSIX; elsewhere a shard is not protected against a second copy of itself
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

RESULTS_NAME = "results.jsonl"
_SHARD_GLOB = "results.shard-*-of-*.jsonl"
_SHARD_RE = re.compile(r"results\.shard-(\d+)-of-(\d+)\.jsonl")


MAX_SHARDS = 100_000


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with 1 <= K <= N.

    Raises:
        ValueError: not of the form K/N, or K outside 1..N (the message has the numbers).
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"--shard must be K/N (e.g. 2/4, shards counted from 1), got {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"--shard {k}/{n}: need 1 <= K <= N, got K={k}, N={n}")
    if n > MAX_SHARDS:
        raise ValueError(f"--shard {k}/{n}: at most {MAX_SHARDS} shards (N={n}); shards past "
                         "the number of models would be empty")
    return k, n


def shard_results_name(shard: tuple[int, int]) -> str:
    """File a shard appends to: ``results.shard-K-of-N.jsonl``."""
    return f"results.shard-{shard[0]}-of-{shard[1]}.jsonl"


def results_files(folder: str | Path) -> list[Path]:
    """A folder's results files: ``results.jsonl`` first (if present), then the shard files
    ordered by (N, K)."""
    folder = Path(folder)
    out = [folder / RESULTS_NAME] if (folder / RESULTS_NAME).is_file() else []
    shards = []
    for p in folder.glob(_SHARD_GLOB):
        m = _SHARD_RE.fullmatch(p.name)
        if m and p.is_file():
            shards.append(((int(m.group(2)), int(m.group(1))), p))
    return out + [p for _, p in sorted(shards)]


def stored_rows(out_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Every complete row of the folder's results files (``results.jsonl`` and the shards'),
    grouped by run id in file order. Quiet about a partial last line: another shard may be
    writing it right now (a sweep repairs its own file before reading)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in results_files(out_dir):
        for row in read_jsonl(path, warn=False):
            if "run_id" in row:
                rows.setdefault(str(row["run_id"]), []).append(row)
    return rows


def model_cost(config: Any) -> float:
    """Estimated work of one model: steps x batch x n x its padded width (the dense products
    dominate, and the kernels pad every model to its width bucket)."""
    from superkern.toy import width_bucket

    return float(config.steps) * float(config.batch) * float(config.n) * float(
        width_bucket(config.m))


def partition(configs: Sequence[Any], count: int) -> list[list[Any]]:
    """Split configs into ``count`` lists of near-equal estimated work (LPT: largest model
    first, each to the least loaded shard, ties to the lower shard; the busiest shard ends
    within one model of the mean). Each list keeps grid order. Deterministic: it depends only
    on the configs, not on their order or on what is already done."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    ids = [engine.run_id(c) for c in configs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"partition needs configs without repeats: {len(ids)} configs, "
                         f"{len(set(ids))} distinct run ids")
    order = sorted(range(len(configs)),
                   key=lambda i: (-model_cost(configs[i]), engine.run_id(configs[i])))
    # A heap of (load, shard) over the first min(count, models) shards: the rest would stay
    # empty anyway (each model takes the lowest empty shard first), so a huge N costs nothing.
    heap = [(0.0, j) for j in range(min(count, len(configs)))]
    owner = [0] * len(configs)
    for i in order:
        load, k = heapq.heappop(heap)
        owner[i] = k
        heapq.heappush(heap, (load + model_cost(configs[i]), k))
    parts: list[list[Any]] = [[] for _ in range(count)]
    for i, c in enumerate(configs):  # grid order within each shard
        parts[owner[i]].append(c)
    return parts


def shard_configs(configs: Sequence[Any], shard: tuple[int, int]) -> list[Any]:
    """The configs shard ``(K, N)`` owns, in grid order (``configs`` without repeats)."""
    k, n = shard
    if not 1 <= k <= n:
        raise ValueError(f"shard {k}/{n}: need 1 <= K <= N")
    return partition(configs, n)[k - 1]


def grid_hash(configs: Sequence[Any]) -> str:
    """16 hex digits naming a grid: the sha256 of its sorted run ids."""
    ids = sorted({engine.run_id(c) for c in configs})
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


@contextlib.contextmanager
def hold_folder(out: Path, sharded: bool) -> Iterator[None]:
    """Hold sweep folder ``out`` for a run: an unsharded run alone (an exclusive lock on
    ``out/.sweep.lock``), shards side by side (a shared one). A second unsharded run, or an
    unsharded run beside shards, would train the same models again; it fails at once.

    Raises:
        ValueError: the folder is held in a way this run cannot share.
    """
    fd = os.open(out / ".sweep.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = 0 if fcntl is None else fcntl.LOCK_SH if sharded else fcntl.LOCK_EX
        if not _try_lock(fd, mode, out):
            raise ValueError(f"{_folder_holder(fd, sharded)} already running on {out}; stop "
                             "it first, or wait for it (an unsharded run never shares its "
                             "folder)")
        if fcntl is not None and not sharded:  # the holder, for the message of a second run
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _folder_holder(fd: int, sharded: bool) -> str:
    """Who holds ``.sweep.lock`` (``fd``, which this run failed to lock): an unsharded run
    (exclusive; it wrote its pid and host into the file) or --shard processes (shared)."""
    if not sharded:
        try:  # a shared lock goes through only beside shards
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pass
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return "another sweep (--shard processes) is"
    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
    return f"{'an' if sharded else 'another'} unsharded sweep ({holder}) is"


def _try_lock(fd: int, mode: int, out: Path) -> bool:
    """``flock(fd, mode)`` without waiting: False when another process holds it. A file
    system without locks (ENOLCK, ENOTSUP, ...) warns and counts as taken: the run goes on
    unprotected, as on a platform without fcntl."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        warnings.warn(f"{out}: cannot lock the sweep folder ({exc}); running without "
                      "protection against a second run on it", stacklevel=3)
    return True


@contextlib.contextmanager
def claim_shard(out: Path, shard: tuple[int, int], configs: Sequence[Any]) -> Iterator[None]:
    """Hold shard ``(K, N)`` of the grid ``configs`` in folder ``out`` for a run.

    Takes an exclusive lock on ``out/.shard-K-of-N.lock`` (so a second process on the same
    shard, e.g. one left running by a killed parent, fails instead of training the same
    models), checks that every other shard of N recorded in ``out/sweep.shard-*-of-N.json``
    split the same grid, and records this shard's grid there.

    Raises:
        ValueError: the shard is already running, or a sibling shard ran another grid.
    """
    k, n = shard
    h = grid_hash(configs)
    lock_path = out / f".shard-{k}-of-{n}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # a few tries: a shard of another split may hold the lock for a moment, looking
        taken = False
        for attempt in range(5):
            taken = _try_lock(fd, fcntl.LOCK_EX if fcntl else 0, out)
            if taken:
                break
            time.sleep(0.01 * (attempt + 1))
        if not taken:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise ValueError(f"shard {k}/{n} is already running on {out} (held by "
                             f"{holder}); stop it first, or wait for it")
        if fcntl is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        busy = _running_other_splits(out, n)
        if busy:
            raise ValueError(
                f"shard {k}/{n}: shards of another split are running on {out} "
                f"({', '.join(busy)}); two splits at once would train some models twice. "
                "Stop them or wait for them (a later run of any split skips what they "
                "finished)")
        for p in sorted(out.glob(f"sweep.shard-*-of-{n}.json")):
            if p.name == f"sweep.shard-{k}-of-{n}.json":
                continue
            try:
                other = json.loads(p.read_text())
            except (OSError, ValueError):
                continue  # unreadable record: written atomically, so only a foreign file
            if other.get("grid_hash") not in (None, h):
                raise ValueError(
                    f"shard {k}/{n}: {p.name} records another grid ({other['grid_hash']}, "
                    f"{other.get('models')} models) than this one ({h}, {len(configs)} "
                    "models). Run every shard with the same CONFIG, --quick, --variant, --set "
                    f"and superkern version, or remove {out}/sweep.shard-*-of-{n}.json to start "
                    "a new split (finished models are kept and skipped).")
        atomic_write_text(out / f"sweep.shard-{k}-of-{n}.json", json.dumps(
            {"shard": [k, n], "grid_hash": h, "models": len(configs),
             "host": socket.gethostname(), "pid": os.getpid()}, indent=2))
        yield
    finally:
        os.close(fd)  # releases the lock


_LOCK_RE = re.compile(r"\.shard-(\d+)-of-(\d+)\.lock")


def _running_other_splits(out: Path, n: int) -> list[str]:
    """``K/M`` of every shard with M != n whose lock some process holds now. Each shard takes
    its own lock before looking, so of two splits started together at least one sees the
    other (both may refuse; neither trains beside the other)."""
    if fcntl is None:
        return []
    busy = []
    for path in sorted(out.glob(".shard-*-of-*.lock")):
        m = _LOCK_RE.fullmatch(path.name)
        if not m or int(m.group(2)) == n:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # taken only if no shard holds it
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                busy.append(f"{m.group(1)}/{m.group(2)}")
        finally:
            os.close(fd)
    return busy
