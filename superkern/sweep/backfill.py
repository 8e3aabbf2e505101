"""Test losses added on resume to models a sweep already trained without them.

The test loss is not part of a model's run id (``ToyConfig.test_batches`` is a record field),
so a rerun of a grid that now asks for ``test_batches = T`` skips the models already trained
with ``T = 0``. This module gives them their test loss anyway, from the weights the sweep
saved: each such model gets one more row, a copy of its first row with the test loss, its
std, ``config.test_batches = T`` and a ``test_from_weights`` record (engine, device, time,
versions). Readers keep the first row of a run id for the final loss and take the first row
that has a test loss for ``loss="test"``, so the extra row changes nothing else.

A model counts as evaluated once any of its rows has ``config.test_batches >= 1`` (a diverged
model's test loss is NaN and is not tried again). Models whose weights were not saved, or
whose file is missing or unreadable, keep no test loss; the sweep warns with their count.
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
from superkern.sweep.shard import results_files
from superkern.sweep.store import ResultsStore, read_jsonl, utc_now


def _test_batches(row: dict[str, Any]) -> int:
    cfg = row.get("config")
    v = cfg.get("test_batches") if isinstance(cfg, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def untested(configs: Sequence[Any], out: Path) -> list[tuple[Any, dict[str, Any]]]:
    """``(config, first stored row)`` of every model of ``configs`` that asks for test batches,
    is stored in a results file of ``out`` and has no row evaluated on test batches."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in results_files(out):
        for row in read_jsonl(path, warn=False):
            rows.setdefault(str(row.get("run_id", "")), []).append(row)
    todo = []
    for c in configs:
        stored = rows.get(engine.run_id(c))
        if c.test_batches > 0 and stored and max(_test_batches(r) for r in stored) < 1:
            todo.append((c, stored[0]))
    return todo


def _load(row: dict[str, Any], out: Path) -> Optional[tuple[Any, Any]]:
    """(W, b) from the row's weights file, or None when there is none or it cannot be read."""
    rel = row.get("weights")
    if not isinstance(rel, str) or not rel:
        return None
    try:
        W, b, _ = engine.load_weights(out / rel)
    except (OSError, ValueError):
        return None
    return W, b


def _json_float(v: float) -> Optional[float]:
    return float(v) if math.isfinite(v) else None  # NaN is stored as null


def add_test_losses(configs: Sequence[Any], out: Path, store: ResultsStore, *,
                    device: Optional[str], max_instances: int, progress: bool,
                    vers: dict[str, Any], evaluate: Optional[Callable[..., list]] = None
                    ) -> int:
    """Evaluate the :func:`untested` models of ``configs`` from their saved weights and append
    one row each to ``store``; returns how many got a row. ``vers``: the versions recorded
    with the evaluation; ``evaluate`` defaults to ``superkern.toy.evaluate_test_losses``
    (injected by tests)."""
    todo = untested(configs, out)
    if not todo:
        return 0
    loaded = [(c, row, _load(row, out)) for c, row in todo]
    missing = [c for c, _, wb in loaded if wb is None]
    if missing:
        warnings.warn(f"{out}: {len(missing)} finished model(s) ask for test batches but have "
                      "no readable saved weights, so they keep no test loss (train them into "
                      "a new folder to get one)", stacklevel=3)
    loaded = [t for t in loaded if t[2] is not None]
    if progress and loaded:
        print(f"sweep: adding the test loss of {len(loaded)} finished model(s) from their "
              "saved weights", file=sys.stderr, flush=True)
    evaluate = evaluate or engine.test_loss_fn()
    added = 0
    for s in range(0, len(loaded), max_instances):
        chunk = loaded[s:s + max_instances]
        t0 = time.perf_counter()
        values = evaluate([c for c, _, _ in chunk], [wb for _, _, wb in chunk],
                          device=device, max_instances=max_instances)
        seconds = time.perf_counter() - t0
        info = {"device": device, "seconds": round(seconds, 3), "models": len(chunk),
                "created": utc_now(), "versions": vers}
        for (c, row, _), (mean, std) in zip(chunk, values):
            new = copy.deepcopy(row)
            new["config"]["test_batches"] = c.test_batches
            new["test_loss"], new["test_loss_std"] = _json_float(mean), _json_float(std)
            new["test_from_weights"] = info
            store.append(new)
            added += 1
    return added
