"""bench/summarize.py: Markdown tables of pytest-benchmark JSON files (no GPU needed)."""
from __future__ import annotations

import json

import pytest

from bench.summarize import main, summarize


def _bench(name, group, median, **extra):
    return {"group": group, "name": name, "fullname": f"bench/x.py::{name}", "params": {},
            "stats": {"min": median * 0.9, "max": median * 1.1, "median": median, "rounds": 3},
            "extra_info": extra}


def test_tables_per_group_with_the_ratio_columns(tmp_path, capsys):
    data = {"machine_info": {"cpu": {"brand_raw": "Test CPU"}}, "datetime": "2026-11-23T00:00",
            "benchmarks": [
                _bench("test_a[triton]", "overlap 49152x576 bf16", 0.0025, backend="triton",
                       tflops=557.123, fraction_of_peak=0.7012, speedup_vs_naive=21.5,
                       device="NVIDIA H100", unused_field=1),
                _bench("test_a[naive]", "overlap 49152x576 bf16", 0.055, backend="naive",
                       tflops=25.3, device="NVIDIA H100"),
                _bench("test_b", None, 1.5, models=1020)]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    text = summarize([path])
    assert "## bench.json: 3 cases, 2026-11-23T00:00" in text
    assert "CPU Test CPU; device NVIDIA H100" in text
    assert "### overlap 49152x576 bf16" in text and "### (no group)" in text
    assert ("| case | median of the timed call (ms) | backend | tflops | fraction_of_peak | "
            "speedup_vs_naive |"
            in text)
    assert "| test_a[triton] | 2.5 | triton | 557 | 0.701 | 21.5 |" in text
    assert "| test_a[naive] | 55 | naive | 25.3 |  |  |" in text  # absent values stay empty
    assert "unused_field" not in text
    assert "| test_b | 1500 | 1020 |" in text
    assert main([str(path)]) == 0 and "### overlap" in capsys.readouterr().out


def test_bad_files_are_clear_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    assert main([str(other)]) == 2
    assert "not a pytest-benchmark JSON file" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main([str(broken)]) == 2
    capsys.readouterr()


def test_jsonl_records_pair_naive_rows_and_survive_a_cut_line(tmp_path):
    """Cases recorded one per line (bench/conftest.py), each backend in its own process: the
    speed-up over the group's naive row is filled in; a last line cut by a kill is dropped."""
    g = "overlap 49152x576 bf16"
    lines = [json.dumps(_bench("t[naive]", g, 0.050, backend="naive")),
             json.dumps(_bench("t[triton]", g, 0.0025, backend="triton")),
             json.dumps(_bench("t[cuda]", g, 0.005, backend="cuda", speedup_vs_naive=9.0))]
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(lines) + "\n" + lines[0][:20])
    text = summarize([path])
    assert "| t[triton] | 2.5 | triton | 20 |" in text  # 0.050 / 0.0025
    assert "| t[cuda] | 5 | cuda | 9 |" in text         # a recorded value is kept
    assert "| t[naive] | 50 | naive |  |" in text
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{\n" + lines[0] + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not a JSON line"):
        summarize([bad])
