"""Local shards: ``superkern sweep --devices LIST`` starts shard K of N = len(LIST) as its own
``superkern sweep --shard K/N`` process on device K and waits for all of them (the split, the
locks and the results files are :mod:`superkern.sweep.shard`'s)."""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Sequence

from superkern.sweep.shard import stored_rows


def resolve_devices(spec: str) -> list[str]:
    """``--devices`` value -> one device per shard: ``all`` (every visible CUDA device), or a
    comma list of ``cuda``, ``cuda:K`` and ``cpu`` (repeats allowed: two shards on one GPU).

    Raises:
        ValueError: an empty list, an unknown device, or a CUDA index torch cannot see.
    """
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec.strip() == "all":
        if count == 0:
            raise ValueError("--devices all: torch sees no CUDA device (use e.g. "
                             "--devices cpu,cpu for CPU shards, or --dry-run --shard 1/N to "
                             "preview an N-way split)")
        return [f"cuda:{i}" for i in range(count)]
    devices = [d.strip() for d in spec.split(",")]
    if not any(devices):
        raise ValueError(f"--devices: no device in {spec!r}")
    if not all(devices):
        raise ValueError(f"--devices: an empty entry in {spec!r} (a doubled or trailing comma?)")
    for d in devices:
        m = re.fullmatch(r"cuda(?::(\d+))?", d)
        if d == "cpu":
            continue
        if not m:
            raise ValueError(f"--devices: unknown device {d!r} (use cpu, cuda or cuda:K)")
        index = int(m.group(1) or 0)
        if index >= count:
            raise ValueError(f"--devices: {d} requested but torch sees {count} CUDA device(s)")
    return devices


def _child_env(device: str) -> tuple[dict[str, str], str]:
    """Environment and ``--device`` for the shard on ``device``: a CUDA shard sees only its
    GPU (``CUDA_VISIBLE_DEVICES``), so every kernel launches on the right one."""
    env = dict(os.environ)
    if device == "cpu":
        return env, "cpu"
    index = int(device.partition(":")[2] or 0)
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    env["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else str(index)
    return env, "cuda"


PARENT_ENV = "SUPERKERN_SHARD_PARENT"  # the pid of the --devices process that started a shard


def follow_parent() -> None:
    """In a shard started by ``--devices``: end with the starting process, however it ends.

    The parent stops its shards itself on SIGINT, SIGTERM and SIGHUP; this covers what it
    cannot catch (``kill -9``, an out-of-memory kill). On Linux the kernel sends this process
    SIGTERM when its parent dies (``PR_SET_PDEATHSIG``); a ``--devices`` process already gone
    when this runs ends the shard at once. Elsewhere, and outside ``--devices``, it does
    nothing."""
    want = os.environ.get(PARENT_ENV, "")
    if not want.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(want):  # a wrapper in between, or the parent already gone
        try:
            os.kill(int(want), 0)
        except ProcessLookupError:
            print(f"shard: the --devices process (pid {want}) that started this shard has "
                  "ended; stopping", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
        except PermissionError:  # alive, owned by someone else
            pass


def _exit_code(returncode: int) -> int:
    """A shell-style exit code: a process killed by signal S (returncode -S) gives 128 + S."""
    return 128 - returncode if returncode < 0 else returncode


def run_local_shards(sweep_argv: Sequence[str], devices: Sequence[str], out_dir: str | Path, *,
                     grid_ids: set[str], progress: bool = True, poll: float = 2.0) -> int:
    """Run shard K of N = len(devices) as ``superkern sweep SWEEP_ARGV --shard K/N`` on
    device K, all at once, and wait for all of them.

    Each shard logs to ``OUT/logs/shard-K-of-N.log`` (appended across reruns). A progress bar
    counts the models of ``grid_ids`` done in the folder. SIGINT, SIGTERM or SIGHUP, however
    often they come, and any error in this process stop every shard that is still running
    (SIGTERM, then SIGKILL after 30 s) and wait for it; each shard loses at most its launch in
    flight, and the same command resumes.

    Returns:
        0 if every shard succeeded; 128 + the signal number if stopped by a signal; else the
        first failing shard's exit code, after printing its last log lines.
    """
    import signal
    import subprocess

    out = Path(out_dir)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    n = len(devices)
    procs: list[tuple[int, str, tuple[Path, int], subprocess.Popen]] = []
    stopped: list[int] = []
    bar = None

    def _stop(signum, frame):  # noqa: ARG001  (only records; the loop below acts on it)
        stopped.append(signum)

    def _done() -> int:
        return len(stored_rows(out).keys() & grid_ids)

    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, _stop) for s in caught}
    try:
        for k, dev in enumerate(devices, 1):
            if stopped:
                break
            env, child_dev = _child_env(dev)
            env["PYTHONUNBUFFERED"] = "1"  # the log shows each launch as it ends
            env[PARENT_ENV] = str(os.getpid())
            log = logs / f"shard-{k}-of-{n}.log"
            argv = [sys.executable, "-m", "superkern", "sweep", *sweep_argv, "--out", str(out),
                    "--shard", f"{k}/{n}", "--device", child_dev, "--no-progress"]
            with open(log, "ab") as fh:
                start = fh.tell()  # the report below reads this run's part of the log only
                fh.write(f"\n# shard {k}/{n} on {dev}: {' '.join(argv[1:])}\n".encode())
                fh.flush()
                procs.append((k, dev, (log, start), subprocess.Popen(
                    argv, stdout=fh, stderr=subprocess.STDOUT, env=env)))
        if not stopped:
            print(f"{n} shard(s) started on {', '.join(devices)} (pids "
                  f"{', '.join(str(p.pid) for *_, p in procs)}); logs in {logs}", flush=True)
        if progress and not stopped:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(grid_ids), unit="model", desc="sweep", file=sys.stderr,
                           dynamic_ncols=True, initial=_done())
            except ImportError:
                bar = None
        while not stopped and any(p.poll() is None for *_, p in procs):
            time.sleep(poll)
            if bar is not None:
                bar.update(_done() - bar.n)
        if bar is not None and not stopped:
            bar.update(_done() - bar.n)
    finally:
        live = [p for *_, p in procs if p.poll() is None]
        for p in live:
            p.terminate()
        deadline = time.monotonic() + 30.0
        for p in live:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for s, handler in old.items():
            signal.signal(s, handler)
        if bar is not None:
            bar.close()
    if stopped:
        print(f"stopped by signal {stopped[0]}: {len(live)} running shard(s) of {n} ended; "
              "rerun the same command to resume", file=sys.stderr)
        return 128 + int(stopped[0])
    code = 0
    for k, dev, (log, start), p in procs:
        with open(log, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        ok = p.returncode == 0
        code = code or _exit_code(p.returncode)
        print(f"shard {k}/{n} on {dev}: " + ("ok" if ok else
                                              f"FAILED (exit {_exit_code(p.returncode)})"))
        for ln in lines[-1:] if ok else lines[-8:]:
            print(f"  {ln}")
    print(f"{_done()} of {len(grid_ids)} models of the grid done in {out}")
    return code
