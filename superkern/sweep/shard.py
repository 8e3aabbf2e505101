"""Sweeps past one GPU: a grid split into N shards, each run by its own process.

``superkern sweep CONFIG --shard K/N`` runs shard K of N; the N processes may sit on one machine
(``--devices cuda:0,cuda:1,...`` starts them, one per device) or on several machines that share
the output folder. There is no coordinator and nothing to lock between shards:

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

import re
from pathlib import Path
from typing import Any, Sequence

from superkern.sweep import engine

RESULTS_NAME = "results.jsonl"
_SHARD_GLOB = "results.shard-*-of-*.jsonl"
_SHARD_RE = re.compile(r"results\.shard-(\d+)-of-(\d+)\.jsonl")


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
    order = sorted(range(len(configs)),
                   key=lambda i: (-model_cost(configs[i]), engine.run_id(configs[i])))
    loads = [0.0] * count
    owner = [0] * len(configs)
    for i in order:
        k = min(range(count), key=lambda j: (loads[j], j))
        owner[i] = k
        loads[k] += model_cost(configs[i])
    return [[c for i, c in enumerate(configs) if owner[i] == k] for k in range(count)]


def shard_configs(configs: Sequence[Any], shard: tuple[int, int]) -> list[Any]:
    """The configs shard ``(K, N)`` owns, in grid order (``configs`` without repeats)."""
    k, n = shard
    if not 1 <= k <= n:
        raise ValueError(f"shard {k}/{n}: need 1 <= K <= N")
    return partition(configs, n)[k - 1]


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
                             "--devices cpu,cpu for CPU shards)")
        return [f"cuda:{i}" for i in range(count)]
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    if not devices:
        raise ValueError(f"--devices: no device in {spec!r}")
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
    import os

    env = dict(os.environ)
    if device == "cpu":
        return env, "cpu"
    index = int(device.partition(":")[2] or 0)
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    env["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else str(index)
    return env, "cuda"


def run_local_shards(sweep_argv: Sequence[str], devices: Sequence[str], out_dir: str | Path, *,
                     total: int, progress: bool = True, poll: float = 2.0) -> int:
    """Run shard K of N = len(devices) as ``superkern sweep SWEEP_ARGV --shard K/N`` on
    device K, all at once; wait for all of them.

    Each shard logs to ``OUT/logs/shard-K-of-N.log`` (appended across reruns). A progress bar
    counts models done in the folder. Ctrl-C or SIGTERM stops every shard (each loses at most
    its launch in flight; a rerun resumes). Returns 0 if every shard succeeded, else the first
    non-zero exit code, after printing each shard's last log lines.
    """
    import signal
    import subprocess
    import sys
    import time

    from superkern.sweep.runner import done_ids

    out = Path(out_dir)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    n = len(devices)
    procs: list[tuple[int, str, Path, subprocess.Popen]] = []
    bar = None
    old_term = signal.getsignal(signal.SIGTERM)

    def _term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _term)
        for k, dev in enumerate(devices, 1):
            env, child_dev = _child_env(dev)
            log = logs / f"shard-{k}-of-{n}.log"
            argv = [sys.executable, "-m", "superkern", "sweep", *sweep_argv, "--out", str(out),
                    "--shard", f"{k}/{n}", "--device", child_dev, "--no-progress"]
            with open(log, "ab") as fh:
                fh.write(f"\n# shard {k}/{n} on {dev}: {' '.join(argv[1:])}\n".encode())
                fh.flush()
                procs.append((k, dev, log, subprocess.Popen(argv, stdout=fh,
                                                            stderr=subprocess.STDOUT, env=env)))
        print(f"{n} shard(s) started on {', '.join(devices)} (pids "
              f"{', '.join(str(p.pid) for *_, p in procs)}); logs in {logs}", flush=True)
        if progress:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="model", desc="sweep", file=sys.stderr,
                           dynamic_ncols=True, initial=min(len(done_ids(out)), total))
            except ImportError:
                bar = None
        while any(p.poll() is None for *_, p in procs):
            time.sleep(poll)
            if bar is not None:
                bar.update(min(len(done_ids(out)), total) - bar.n)
        if bar is not None:
            bar.update(min(len(done_ids(out)), total) - bar.n)
    except KeyboardInterrupt:
        for *_, p in procs:
            if p.poll() is None:
                p.terminate()
        for *_, p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        print(f"interrupted: stopped {n} shard(s); rerun the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if bar is not None:
            bar.close()
    code = 0
    for k, dev, log, p in procs:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        ok = p.returncode == 0
        code = code or p.returncode
        print(f"shard {k}/{n} on {dev}: " + ("ok" if ok else f"FAILED (exit {p.returncode})"))
        for ln in lines[-1:] if ok else lines[-8:]:
            print(f"  {ln}")
    return code
