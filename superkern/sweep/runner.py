"""Resumable sweep runner: skip finished run ids, train the rest in launches, append one row
per model as soon as its launch finishes.

A run killed at any moment loses at most the models of the launch in flight: weights are
written atomically before their row, and the row is one fsync'ed line (``store.py``).
"""
from __future__ import annotations

import json
import os
import platform
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from superkern._atomic import check_target
from superkern.sweep import engine
from superkern.sweep.backfill import add_test_losses
from superkern.sweep.grid import Launch, check_max_instances, group_configs
from superkern.sweep.progress import LaunchBar
from superkern.sweep.shard import (RESULTS_NAME, claim_shard, grid_hash, hold_folder,
                                   parse_shard, results_files, shard_configs,
                                   shard_results_name, stored_rows)
from superkern.sweep.store import ResultsStore, atomic_write_text, utc_now

WEIGHTS_DIR = "weights"
SCHEMA_VERSION = 1
# Row keys every consumer (fits, figures) may rely on; tests check them.
ROW_KEYS = ("schema", "run_id", "experiment", "config", "seed", "final_loss", "final_loss_std",
            "phi_half", "phi_1", "geometry", "weights", "seconds", "device", "backend",
            "precision", "versions", "launch", "created")


@dataclass
class SweepSummary:
    """What a :func:`run_sweep` call did."""

    results_path: str
    total: int
    skipped: int
    trained: int = 0
    tested: int = 0
    launches: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)
    shard: Optional[tuple[int, int]] = None
    diverged: int = 0  # of the models trained here: loss or W non-finite (fits leave them out)

    def text(self) -> str:
        failed = f", {len(self.failed)} launch(es) failed" if self.failed else ""
        if self.diverged:
            failed += (f", {self.diverged} diverged (non-finite loss; stored, left out of "
                       "fits)")
        part = f" (shard {self.shard[0]}/{self.shard[1]})" if self.shard else ""
        tested = (f" ({self.tested} given a test loss from their saved weights)"
                  if self.tested else "")
        return (f"{self.trained} trained, {self.skipped} already done{tested}, of "
                f"{self.total} models{part}, in {self.launches} launch(es), "
                f"{self.seconds:.1f} s{failed} -> {self.results_path}")


def versions() -> dict[str, Optional[str]]:
    """Versions recorded in every row (Triton read from package metadata, never imported)."""
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for dist in ("superkern", "torch", "triton", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import superkern

        out["superkern"] = superkern.__version__
    except Exception:  # noqa: BLE001  (a broken install must not stop a sweep)
        pass
    return out


def _num(x: Any) -> Any:
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return x.item()
    return x


def make_row(result: Any, *, experiment: str, weights: Optional[str], launch: dict[str, Any],
             device: Optional[str], vers: dict[str, Any]) -> dict[str, Any]:
    """The JSONL row of one trained model (result's own ``to_dict`` plus provenance)."""
    cfg = engine.config_to_dict(result.config)
    row: dict[str, Any] = {"schema": SCHEMA_VERSION, "run_id": engine.run_id(result.config),
                           "experiment": experiment, "config": cfg, "seed": cfg.get("seed")}
    body = dict(result.to_dict()) if hasattr(result, "to_dict") else {}
    body.pop("config", None)
    body.pop("W", None)
    body.pop("b", None)
    for key in ("final_loss", "final_loss_std", "phi_half", "phi_1", "geometry", "seconds",
                "backend", "precision", "device", "curve"):
        if key not in body and hasattr(result, key):
            body[key] = _num(getattr(result, key))
    row.update(body)
    row["device"] = row.get("device") or device
    row.setdefault("backend", cfg.get("backend"))
    row.setdefault("precision", cfg.get("precision"))
    row["weights"] = weights
    row["launch"] = launch
    row["versions"] = {**(body.get("versions") or {}), **vers}
    row["created"] = utc_now()
    return json.loads(json.dumps(row, default=_json_default))


def _json_default(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def unique_configs(configs: Sequence[Any]) -> tuple[list[Any], int]:
    """Configs with repeated run ids dropped (first kept), and how many were dropped."""
    out, seen = [], set()
    for c in configs:
        rid = engine.run_id(c)
        if rid not in seen:
            seen.add(rid)
            out.append(c)
    return out, len(configs) - len(out)


def plan(configs: Sequence[Any], out_dir: Path, *, max_instances: int,
         device: Optional[str],
         stored: Optional[dict[str, list[dict[str, Any]]]] = None,
         ) -> tuple[list[Launch], int]:
    """Launches still to run for ``configs`` (already de-duplicated) and the number of them
    already done in ``out_dir`` (``stored``: its :func:`stored_rows`, if already read)."""
    done = stored_rows(out_dir) if stored is None else stored
    pending = [c for c in configs if engine.run_id(c) not in done]
    return (group_configs(pending, max_instances=max_instances, device=device),
            len(configs) - len(pending))


def to_train(configs: Sequence[Any], out_dir: str | Path,
             shard: Optional[tuple[int, int]]) -> list[Any]:
    """The models of ``configs`` (de-duplicated) that a run into ``out_dir`` would train:
    its shard's, less those already stored there (read only; none when there is no
    folder)."""
    mine = configs if shard is None else shard_configs(configs, shard)
    stored = stored_rows(out_dir) if Path(out_dir).is_dir() else {}
    return [c for c in mine if engine.run_id(c) not in stored]


def check_run_into(configs: Sequence[Any], out_dir: str | Path,
                   shard: Optional[tuple[int, int]], device: Optional[str]) -> None:
    """:func:`check_runnable` for what a run of ``configs`` into ``out_dir`` would train. The
    whole grid is tried first, which reads nothing; only when that is refused are the
    folder's results read, so that models already finished there do not count."""
    try:
        check_runnable(configs, device)
    except ValueError:
        check_runnable(to_train(configs, out_dir, shard), device)


def check_runnable(configs: Sequence[Any], device: Optional[str]) -> None:
    """ValueError, before anything is written, when ``device`` is not on this machine or an
    engine for some config's (backend, precision) cannot run there (``configs``: the ones to
    train; the device is checked even when there are none)."""
    dev = engine.resolve_device(device)
    first = {}
    for c in configs:
        first.setdefault((c.backend, c.precision), c)
    for c in first.values():
        engine.resolve_backend(c, dev)


def run_sweep(configs: Sequence[Any], out_dir: str | Path, *, experiment: str = "",
              train_fn: Optional[Callable[..., Sequence[Any]]] = None,
              device: Optional[str] = None, max_instances: int = 32, progress: bool = True,
              save_weights: bool = True, keep_going: bool = False,
              manifest: Optional[dict[str, Any]] = None,
              group_by: Optional[str] = None,
              shard: Optional[tuple[int, int]] = None) -> SweepSummary:
    """Train every config not yet in ``out_dir``'s results and append its row.

    Args:
        configs: validated configs (``superkern.toy.ToyConfig``), e.g. from
            :func:`superkern.sweep.grid.build_configs`.
        out_dir: folder of ``results.jsonl``, ``weights/`` and ``sweep.json``.
        experiment: name stored in each row.
        train_fn: ``train_fn(configs, device=..., progress=...) -> results`` (default
            ``superkern.toy.train_many``); injected by tests.
        device: passed to the trainer (None: its default).
        max_instances: most models per launch.
        progress: show a tqdm bar on stderr.
        save_weights: write each model's W and b next to the results.
        keep_going: on a failed launch, record the error and continue with the next one.
        group_by: how the trainer splits a launch by width, passed on as
            ``train_fn(..., group_by=...)``: "bucket", "width" or "none" (see
            ``superkern.toy.train_many``). None (default): not passed, so the trainer's own
            default applies ("bucket" for ``train_many``).
        shard: ``(K, N)``: train only shard K of N (1-based; see ``superkern.sweep.shard``)
            and append to ``results.shard-K-of-N.jsonl``. The split depends only on the grid,
            so N processes given 1..N train every model exactly once.
            Models done in any results file of the folder are skipped either way.

    Returns:
        A :class:`SweepSummary`.
    """
    engine.check_group_by(group_by)
    # every argument checked before anything is written to the folder
    check_max_instances(max_instances)
    if isinstance(shard, str):
        shard = parse_shard(shard)
    elif shard is not None:
        if not (isinstance(shard, (tuple, list)) and len(shard) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)):
            raise ValueError(f"shard must be (K, N) or 'K/N', got {shard!r}")
        shard = parse_shard(f"{shard[0]}/{shard[1]}")
    bad = [c for c in configs if not hasattr(c, "run_id")]
    if bad:
        raise ValueError(f"run_sweep takes ToyConfig objects (build_configs makes them from "
                         f"dicts); got {len(bad)} {type(bad[0]).__name__}(s)")
    train_kw = {} if group_by is None else {"group_by": group_by}
    configs, dups = unique_configs(configs)
    if train_fn is None:  # the engine's own checks, before the folder is touched
        check_run_into(configs, out_dir, shard, device)
    if dups:
        warnings.warn(f"{dups} duplicate config(s) in the grid were dropped", stacklevel=2)
    grid_models, grid_id = len(configs), grid_hash(configs)  # the whole grid, not a shard
    out = Path(out_dir)
    # every output place checked before any training: a file in the way fails now
    check_target(out, is_dir=True, option="the sweep folder")
    if save_weights:
        check_target(out / WEIGHTS_DIR, is_dir=True, option="the weights folder")
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(hold_folder(out, sharded=shard is not None))
        if shard is not None:
            # Refuses a second process on this shard and a grid other than its siblings'.
            stack.enter_context(claim_shard(out, shard, configs))
            configs = shard_configs(configs, shard)
        return _run(configs, out, experiment=experiment, train_fn=train_fn, device=device,
                    max_instances=max_instances, progress=progress, save_weights=save_weights,
                    keep_going=keep_going, train_kw=train_kw, shard=shard,
                    manifest=None if manifest is None else {
                        "models": grid_models, "grid_hash": grid_id, **manifest,
                        **({"shards": shard[1]} if shard else {})})


def _run(configs: list[Any], out: Path, *, experiment: str,
         train_fn: Optional[Callable[..., Sequence[Any]]], device: Optional[str],
         max_instances: int, progress: bool, save_weights: bool, keep_going: bool,
         train_kw: dict[str, Any], shard: Optional[tuple[int, int]],
         manifest: Optional[dict[str, Any]]) -> SweepSummary:
    """The body of :func:`run_sweep` once the configs (this shard's) are fixed."""
    results_path = out / (RESULTS_NAME if shard is None else shard_results_name(shard))
    store = ResultsStore(results_path)
    if shard is None:  # the folder is this run's alone: tidy every file a kill left behind
        for path in results_files(out):
            ResultsStore(path).repair()
        _remove_stale_temporaries(out)
    else:
        store.repair()
    stored = stored_rows(out)  # read once: the plan and the test-loss backfill share it
    launches, skipped = plan(configs, out, max_instances=max_instances, device=device,
                             stored=stored)
    summary = SweepSummary(str(results_path), total=len(configs), skipped=skipped, shard=shard)
    if save_weights:
        _warn_lost_weights(configs, out, stored)
    if manifest is not None:
        atomic_write_text(out / "sweep.json", json.dumps(
            _with_history(out / "sweep.json", manifest), indent=2))
    vers = versions()
    t_start = time.perf_counter()
    # before the launches, so that what is stored is complete first; never raises for a model
    summary.tested = add_test_losses(configs, out, store, device=device,
                                     max_instances=max_instances, vers=vers, stored=stored)
    if not launches:
        summary.seconds = time.perf_counter() - t_start
        return summary
    train = train_fn or engine.default_train_fn()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    bar = LaunchBar(sum(lz.steps for lz in launches), sum(len(lz.configs) for lz in launches),
               progress)
    try:
        for index, launch in enumerate(launches):
            bar.start_launch(launch.steps)
            t0 = time.perf_counter()
            try:
                results = engine.results_as_sequence(
                    train(list(launch.configs), device=device, progress=bar.callback,
                          **train_kw),
                    len(launch.configs))
            except Exception as exc:  # noqa: BLE001
                if not keep_going:
                    raise
                msg = f"launch {index} ({len(launch.configs)} models): {type(exc).__name__}: {exc}"
                summary.failed.append(msg)
                warnings.warn(msg, stacklevel=2)
                continue
            seconds = time.perf_counter() - t0
            info = {"index": index, "instances": len(launch.configs), "seconds": round(seconds, 3)}
            if shard is not None:
                info["shard"] = list(shard)
            if visible is not None:
                info["cuda_visible_devices"] = visible
            for cfg, result in zip(launch.configs, results):
                if engine.run_id(result.config) != engine.run_id(cfg):
                    raise RuntimeError("trainer returned results out of order: "
                                       f"{engine.run_id(result.config)} != {engine.run_id(cfg)}")
                weights = None
                if save_weights and hasattr(result, "save"):
                    saved = result.save(out / WEIGHTS_DIR)
                    weights = _relative(saved, out) if saved else None
                row = make_row(result, experiment=experiment, weights=weights, launch=info,
                               device=device, vers=vers)
                store.append(row)
                summary.diverged += bool(row.get("diverged"))
            summary.trained += len(launch.configs)
            summary.launches += 1
            bar.finish_launch(launch.steps, len(launch.configs))
            if shard is not None and not progress:  # a shard's log shows each launch
                print(f"launch {index + 1}/{len(launches)}: {len(launch.configs)} models, "
                      f"{launch.steps} steps, {seconds:.1f} s", flush=True)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t_start
    return summary


STALE_TMP_SECONDS = 3600.0


def _remove_stale_temporaries(out: Path) -> None:
    """Delete the hidden ``.NAME.XXXX.tmp`` files that a kill during an atomic write left in
    the folder or its weights, once an hour old (a write takes milliseconds; the age spares
    one that another command is making right now)."""
    now = time.time()
    for folder in (out, out / WEIGHTS_DIR):
        for tmp in folder.glob(".*.tmp"):
            try:
                if tmp.is_file() and now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                    tmp.unlink()
            except OSError:
                pass


def _warn_lost_weights(configs: Sequence[Any], out: Path,
                       stored: dict[str, list[dict[str, Any]]]) -> None:
    """Warn about finished models of ``configs`` whose rows name a weights file that is gone:
    a resume keeps their rows and does not retrain them."""
    lost = [row["weights"] for c in configs for row in stored.get(engine.run_id(c), [])[:1]
            if isinstance(row.get("weights"), str) and row["weights"]
            and not (out / row["weights"]).is_file()]
    if lost:
        warnings.warn(f"{out}: {len(lost)} finished model(s) have lost their saved weights "
                      f"(first: {lost[0]}); their rows are kept and they are not retrained, "
                      "so analyses that read weights leave them out (a sweep into a new "
                      "folder trains them again)", stacklevel=3)


_GRID_FIELDS = ("experiment", "applied", "base", "axes")


def _with_history(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The new manifest; the folder's previous one, if it differs, is kept under "previous"
    so that sweep.json still says where every stored row came from. A warning only when the
    models differ (another ``grid_hash``): a rerun that changes only what is recorded about
    the same models (``test_batches``, ``log_every``, the experiment's name) is the same
    grid. Manifests written before the hash existed are compared by their fields."""
    new = {**manifest, "updated": utc_now(), "versions": versions()}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return new
    except (OSError, ValueError) as exc:  # damaged: kept aside, its history with it
        # the pid too: shards started together must not rename each other's files
        keep = path.with_name(f"{path.name}.unreadable-{utc_now().replace(':', '')}"
                              f"-{os.getpid()}")
        try:
            os.replace(path, keep)
        except OSError:
            keep = path
        warnings.warn(f"{path}: unreadable ({type(exc).__name__}: {exc}); a new manifest "
                      f"replaces it{'' if keep == path else f', the old one is kept as {keep}'}",
                      stacklevel=3)
        return new
    if not isinstance(old, dict):
        return new
    previous = list(old.pop("previous", []))
    if any(old.get(k) != new.get(k) for k in _GRID_FIELDS):
        hashes = old.get("grid_hash"), new.get("grid_hash")
        if None in hashes or hashes[0] != hashes[1]:
            warnings.warn(f"{path.parent}: already holds results of another grid "
                          f"({old.get('experiment')}, {old.get('applied')}); the new rows "
                          "join them, and analyses label cells by the fields that differ. "
                          "Its manifest is kept under 'previous' in sweep.json", stacklevel=3)
        previous.append(old)
    if previous:
        new["previous"] = previous[-50:]
    return new


def _relative(path: Any, root: Path) -> str:
    p = Path(path)
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(p)
