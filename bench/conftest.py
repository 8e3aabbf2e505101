"""Benchmark records that survive a timeout or a crash.

pytest-benchmark writes its JSON only when a session ends, so a session killed at its time
limit (or stopped by a CUDA fault) would lose every case it had measured. With
``SUPERKERN_BENCH_JSONL=path``, each case is appended to that file as one JSON line (the
entry pytest-benchmark would write: name, group, params, stats, extra_info) as soon as it
finishes, and synced; ``bench/summarize.py`` reads such files. A case that fails after it was
timed (an accuracy check) is recorded with ``extra_info["failed"]``. A case interrupted before
it has data (pytest-timeout) is marked as an error, so the session can still end cleanly.
Each case also writes a ``{"started": nodeid}`` line before it runs, and one that ends without
timing (skipped, or failed before its timed call) an ``{"ended": nodeid, "outcome": ...}``
line, so the summary can list those apart from the cases that left nothing (killed, timed out,
crashed).
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
    path = os.environ.get(ENV_JSONL)
    bm = getattr(item, "funcargs", {}).get("benchmark")
    if path and bm is not None:  # a case killed before its record is listed as unfinished
        record(path, {"started": item.nodeid})
    outcome = yield
    if bm is None:
        return
    if not bm.stats:
        if outcome.excinfo is not None:
            bm.has_error = True  # interrupted inside pedantic: no data for the session's JSON
        if path:  # skipped, or failed before timing: ended, not killed
            exc = outcome.excinfo[1] if outcome.excinfo is not None else None
            kind = ("skipped" if isinstance(exc, pytest.skip.Exception) else
                    "no timing" if exc is None else "failed before timing")
            record(path, {"ended": item.nodeid, "outcome": kind,
                          "reason": " ".join(str(exc or "").split())[:300]})
        return
    if path:  # a case that failed after timing (an accuracy check) is kept, marked
        entry = _entry(item, bm)
        if outcome.excinfo is not None:
            entry["extra_info"]["failed"] = " ".join(str(outcome.excinfo[1]).split())[:300]
        record(path, entry)
