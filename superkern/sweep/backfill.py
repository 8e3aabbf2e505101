"""Test losses added on resume to models a sweep already trained without them.

The test loss is not part of a model's run id (``ToyConfig.test_batches`` is a record field),
so a rerun of a grid that now asks for ``test_batches = T`` skips the models already trained
with ``T = 0``. This module gives them their test loss anyway, from the weights the sweep
saved: each such model gets one more row, a copy of its first row with the test loss, its
std, ``config.test_batches = T`` and a ``test_from_weights`` record (the engine and device
that evaluated it, the time taken, when, and the versions). Readers keep the first row of a
run id for the final loss and take the first row that has a test loss for ``loss="test"``,
so the extra row changes nothing else.

A model counts as evaluated once any of its rows has ``config.test_batches >= 1``. Models
that diverged are not evaluated. Nothing here stops a sweep: models whose weights were not
saved, cannot be read or do not fit their config, models whose engine cannot run on this
machine, and evaluations that fail are named in a warning (with their count) and keep no
test loss; a later resume tries them again.
"""
from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from superkern.sweep import engine
from superkern.sweep.shard import stored_rows
from superkern.sweep.store import ResultsStore, utc_now


def _test_batches(row: dict[str, Any]) -> int:
    v = row["config"].get("test_batches")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return 0
    return int(v)


def _finished(row: dict[str, Any]) -> bool:
    """A row of a model that trained to a finite final loss (so its weights are worth a
    test loss)."""
    try:
        loss = float(row.get("final_loss"))
    except (TypeError, ValueError):
        return False
    return math.isfinite(loss) and not row.get("diverged")


def untested(configs: Sequence[Any], out: Path,
             stored: Optional[dict[str, list[dict[str, Any]]]] = None,
             ) -> list[tuple[Any, dict[str, Any]]]:
    """``(config, first stored row)`` of every model of ``configs`` that asks for test batches,
    is stored in a results file of ``out`` with a finite final loss, and has no row evaluated
    on test batches. ``stored``: the folder's :func:`~superkern.sweep.shard.stored_rows`, if
    already read."""
    if stored is None:
        stored = stored_rows(out)
    todo = []
    for c in configs:
        rows = [r for r in stored.get(engine.run_id(c), ()) if isinstance(r.get("config"), dict)]
        if (c.test_batches > 0 and rows and _finished(rows[0])
                and max(_test_batches(r) for r in rows) < 1):
            todo.append((c, rows[0]))
    return todo


def _load(config: Any, row: dict[str, Any], out: Path) -> Optional[tuple[Any, Any]]:
    """(W, b) from the row's weights file; None when there is none, it cannot be read, or it
    does not hold this model (another run id, or shapes other than (n, m) and (n,))."""
    rel = row.get("weights")
    if not isinstance(rel, str) or not rel:
        return None
    try:
        W, b, stored = engine.load_weights(out / rel)
    except (OSError, ValueError):
        return None
    if (engine.run_id(stored) != engine.run_id(config)
            or tuple(W.shape) != (config.n, config.m) or tuple(b.shape) != (config.n,)):
        return None
    return W, b


def _warn(out: Path, count: int, why: str) -> None:
    warnings.warn(f"{out}: {count} finished model(s) ask for test batches but {why}; they "
                  "keep no test loss for now (a later resume tries again)", stacklevel=4)


def add_test_losses(configs: Sequence[Any], out: Path, store: ResultsStore, *,
                    device: Optional[str], max_instances: int, vers: dict[str, Any],
                    evaluate: Optional[Callable[..., list]] = None,
                    stored: Optional[dict[str, list[dict[str, Any]]]] = None) -> int:
    """Evaluate the :func:`untested` models of ``configs`` from their saved weights and append
    one row each to ``store``; returns how many got a row. Never raises for a model or a
    chunk of them: problems become warnings. ``vers``: the versions recorded with the
    evaluation; ``evaluate`` defaults to ``superkern.toy.evaluate_test_losses`` (injected by
    tests); ``stored``: the folder's rows, if already read."""
    todo = untested(configs, out, stored)
    if not todo:
        return 0
    dev = engine.resolve_device(device)
    ready, no_engine = [], {}
    for c, row in todo:
        try:
            ready.append((c, row, engine.resolve_backend(c, dev)))
        except ValueError as exc:
            no_engine[str(exc)] = no_engine.get(str(exc), 0) + 1
    for why, count in no_engine.items():
        _warn(out, count, f"cannot be evaluated here ({why})")
    if ready:
        print(f"sweep: adding the test loss of up to {len(ready)} finished model(s) from "
              "their saved weights", file=sys.stderr, flush=True)
    # launches as train_many would group them: same engine, n, batch, precision, then width
    ready.sort(key=lambda t: (t[2], t[0].n, t[0].batch, t[0].precision, t[0].m))
    evaluate = evaluate or engine.evaluate_fn()
    added, unreadable, failed, failures = 0, 0, 0, []
    for s in range(0, len(ready), max_instances):
        # weights are read chunk by chunk: a large grid's files are never all in memory
        chunk = [(c, row, wb, be) for c, row, be in ready[s:s + max_instances]
                 for wb in [_load(c, row, out)] if wb is not None]
        unreadable += min(max_instances, len(ready) - s) - len(chunk)
        if not chunk:
            continue
        t0 = time.perf_counter()
        try:
            values = evaluate([t[0] for t in chunk], [t[2] for t in chunk], device=dev,
                              max_instances=max_instances)
        except Exception as exc:  # noqa: BLE001 - a failed evaluation never stops a sweep
            failed += len(chunk)
            failures.append(f"{len(chunk)} model(s): {type(exc).__name__}: {exc}")
            continue
        info = {"device": str(dev), "seconds": round(time.perf_counter() - t0, 3),
                "models": len(chunk), "created": utc_now(), "versions": vers}
        for (c, row, _, be), (mean, std) in zip(chunk, values):
            new = copy.deepcopy(row)
            new["config"]["test_batches"] = c.test_batches
            new["test_loss"] = mean if math.isfinite(mean) else None  # NaN is stored as null
            new["test_loss_std"] = std if math.isfinite(std) else None
            new["test_from_weights"] = {**info, "backend": be}
            store.append(new)
            added += 1
    if unreadable:
        _warn(out, unreadable, "have no saved weights that hold them (not saved, missing, "
              "unreadable, or of another shape)")
    if failed:
        _warn(out, failed, "their evaluation failed: " + "; ".join(failures))
    return added
