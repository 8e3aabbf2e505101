"""Benchmark records that survive a timeout or a crash.

pytest-benchmark writes its JSON only when a session ends, so a session killed at its time
limit (or stopped by a CUDA fault) would lose every case it had measured. With
``SUPERKERN_BENCH_JSONL=path``, each case is appended to that file as one JSON line (the
entry pytest-benchmark would write: name, group, params, stats, extra_info) as soon as it
finishes, and synced; ``bench/summarize.py`` reads such files. A case that fails after it was
timed (an accuracy check) is recorded with ``extra_info["failed"]``. A case interrupted before
it has data (pytest-timeout) is marked as an error, so the session can still end cleanly.
"""
from __future__ import annotations

import json
import os

import pytest

ENV_JSONL = "SUPERKERN_BENCH_JSONL"


def record(path: str, entry: dict) -> None:
    """Append one JSON line and sync it (a kill right after loses nothing)."""
    line = json.dumps(entry, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _entry(item, bm) -> dict:
    s = bm.stats.stats
    return {"name": item.name, "fullname": item.nodeid, "group": bm.group,
            "params": {k: str(v) for k, v in (getattr(item, "callspec", None).params.items()
                                              if hasattr(item, "callspec") else [])},
            "stats": {"median": s.median, "min": s.min, "max": s.max, "mean": s.mean,
                      "rounds": s.rounds},
            "extra_info": dict(bm.extra_info)}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    outcome = yield
    bm = getattr(item, "funcargs", {}).get("benchmark")
    if bm is None:
        return
    if not bm.stats:
        if outcome.excinfo is not None:
            bm.has_error = True  # interrupted inside pedantic: no data for the session's JSON
        return
    path = os.environ.get(ENV_JSONL)
    if path:  # a case that failed after timing (an accuracy check) is kept, marked
        entry = _entry(item, bm)
        if outcome.excinfo is not None:
            entry["extra_info"]["failed"] = " ".join(str(outcome.excinfo[1]).split())[:300]
        record(path, entry)
