"""Markdown tables of pytest-benchmark JSON files, with the ratios bench/ records per case.

    python bench/summarize.py out/test_bench_overlap.json out/test_bench_toy_triton.json
    python bench/summarize.py out/bench-overlap.jsonl   # one case per line (bench/conftest.py)

One table per benchmark group: the case, its median time, and the numbers in ``extra_info``
that say how good it is (TFLOP/s, fraction of the peak measured in the same run, speed-up over
naive PyTorch, ...), ready to paste into bench/RESULTS.md. ``pytest-benchmark compare`` shows
the timings but not these columns.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# extra_info fields worth a column, in this order (others are left out of the table)
COLUMNS = ("backend", "precision", "path", "tflops", "tflops_padded", "tflops_executed",
           "fraction_of_peak", "peak_tflops", "speedup_vs_naive", "gflops", "frac_of_matmul",
           "speedup_vs_torch_ref", "speedup_vs_compiled", "ms_per_step", "torch_ms_per_step",
           "speedup_vs_torch", "speedup_vs_eager_ref", "speedup_vs_eager_batched",
           "seconds_per_step", "us_per_model_step", "seconds_per_model_step", "rel_err_dW",
           "models", "threads", "failed")
# What a failed case (timed, then failed its accuracy check) may still show: its timings and
# rates describe a wrong result, so those cells are left blank.
FAILED_KEEP = {"backend", "precision", "path", "models", "threads", "rel_err_dW", "failed"}
# Toy rows set against the eager peers of bench/test_bench_toy.py (``peer`` in extra_info),
# per model-step, where they train the same problem size (the paper's small grid).
PEERS = {"eager reference": "speedup_vs_eager_ref", "eager batched": "speedup_vs_eager_batched"}


def _cell(v) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.4g}"
    return " ".join(str(v).split()).replace("|", "/")  # one table cell


def _load(path: Path) -> dict:
    """A pytest-benchmark JSON document, or one built from a JSONL file of its entries."""
    if path.suffix == ".jsonl":
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        benches = []
        for k, ln in enumerate(lines, 1):
            try:
                benches.append(json.loads(ln))
            except json.JSONDecodeError:
                if k < len(lines):
                    raise ValueError(f"{path}:{k}: not a JSON line") from None
                # a last line cut by a kill: the cases before it stand
        started = [b["started"] for b in benches if "started" in b]
        ended = [b for b in benches if "ended" in b]
        done = {b.get("fullname") for b in benches if "started" not in b and "ended" not in b}
        done |= {b["ended"] for b in ended}
        return {"benchmarks": [b for b in benches if "started" not in b and "ended" not in b],
                "datetime": "per case",
                "untimed": [f"{b['ended']} ({b.get('outcome', '?')}: {b.get('reason', '')})"
                            for b in ended],
                "unfinished": [name for name in dict.fromkeys(started) if name not in done]}
    return json.loads(path.read_text())


def _fill_speedups(benches: list[dict]) -> None:
    """speedup_vs_naive from the group's naive row where a case did not record it (cases
    measured in separate processes, one backend each)."""
    naive = {b.get("group"): b["stats"]["median"] for b in benches
             if b.get("extra_info", {}).get("backend") == "naive" and b.get("stats")
             and "failed" not in b.get("extra_info", {})}
    for b in benches:
        extra, t = b.setdefault("extra_info", {}), b.get("stats", {}).get("median")
        base = naive.get(b.get("group"))
        if "speedup_vs_naive" not in extra and base and t and extra.get("backend") != "naive":
            extra["speedup_vs_naive"] = base / t


def _model_step_seconds(extra: dict) -> float | None:
    if "seconds_per_model_step" in extra:
        return extra["seconds_per_model_step"]
    if "us_per_model_step" in extra:
        return extra["us_per_model_step"] / 1e6
    return None


def _fill_peer_speedups(benches: list[dict]) -> None:
    """speedup_vs_eager_ref / _batched: the peer's seconds per model-step over the row's, for
    rows of the peers' problem size (n and B equal; the peers are n = 1000, B = 2048)."""
    peers = {}
    for b in benches:
        extra = b.get("extra_info", {})
        t = _model_step_seconds(extra)
        if extra.get("peer") in PEERS and t and "failed" not in extra:
            peers[extra["peer"]] = (t, extra.get("n"), extra.get("B"))
    for b in benches:
        extra = b.get("extra_info", {})
        t = _model_step_seconds(extra)
        if not t or "failed" in extra:
            continue
        for peer, (tp, n, B) in peers.items():
            if extra.get("peer") != peer and (extra.get("n"), extra.get("B")) == (n, B):
                extra.setdefault(PEERS[peer], tp / t)


def summarize(paths: list[Path]) -> str:
    """The Markdown text for the benchmark JSON (or JSONL) files at ``paths``."""
    out = []
    for path in paths:
        data = _load(path)
        benches = data.get("benchmarks")
        if not isinstance(benches, list):
            raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
        _fill_speedups(benches)
        _fill_peer_speedups(benches)
        cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "?")
        devices = sorted({str(b.get("extra_info", {}).get("device")) for b in benches
                          if b.get("extra_info", {}).get("device")})
        out.append(f"## {path.name}: {len(benches)} cases, {data.get('datetime', '?')}")
        out.append(f"CPU {cpu}; device {', '.join(devices) or '-'}")
        if data.get("untimed"):
            out.append("Ended without timing: " + "; ".join(data["untimed"]))
        if data.get("unfinished"):
            out.append("Started but not recorded (timed out, killed or crashed): "
                       + ", ".join(data["unfinished"]))
        groups: dict[str, list[dict]] = {}
        for b in benches:
            groups.setdefault(b.get("group") or "(no group)", []).append(b)
        for group, rows in groups.items():
            cols = [c for c in COLUMNS if any(c in r.get("extra_info", {}) for r in rows)]
            out += ["", f"### {group}", "",
                    "| case | median of the timed call (ms) | " + " | ".join(cols) + " |",
                    "|---|---|" + "---|" * len(cols)]
            for r in rows:
                extra = r.get("extra_info", {})
                median = r.get("stats", {}).get("median")
                ms = "-" if median is None else f"{median * 1e3:.4g}"
                failed = "failed" in extra
                ms = "-" if failed else ms
                out.append(f"| {r.get('name', '?')} | {ms} | "
                           + " | ".join(_cell(extra.get(c, "") if not failed or c in FAILED_KEEP
                                              else "") for c in cols) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path,
                    help="pytest-benchmark --benchmark-json files, or .jsonl case records")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"summarize: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        print(summarize(args.files))
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"summarize: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
