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


def test_conftest_records_each_case_as_it_finishes(tmp_path):
    """bench/conftest.py appends every timed case (a failed accuracy check marked) to the
    JSONL file, which summarize reads; nothing waits for the end of the session."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    shutil.copy(Path(__file__).parents[1] / "bench" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(
        "def test_ok(benchmark):\n"
        "    benchmark.pedantic(lambda: sum(range(100)), rounds=2, iterations=1)\n"
        "    benchmark.extra_info['backend'] = 'x'\n"
        "def test_bad(benchmark):\n"
        "    benchmark.pedantic(lambda: 1, rounds=2, iterations=1)\n"
        "    assert False, 'rel_err 0.5 >\\n 0.1'\n"
        "def test_plain():\n"
        "    pass\n"
        "def test_skips(benchmark):\n"
        "    import pytest\n"
        "    pytest.skip('cuda unavailable: no GPU')\n"
        "def test_zz_killed(benchmark):\n"
        "    import os, signal\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    out = tmp_path / "cases.jsonl"
    env = {**__import__("os").environ, "SUPERKERN_BENCH_JSONL": str(out)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "test_cases.py"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == -9, (run.returncode, run.stdout[-2000:])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["started"] for r in lines if "started" in r] == [
        "test_cases.py::test_ok", "test_cases.py::test_bad", "test_cases.py::test_skips",
        "test_cases.py::test_zz_killed"]
    assert [(r["ended"], r["outcome"]) for r in lines if "ended" in r] == [
        ("test_cases.py::test_skips", "skipped")]
    rows = [r for r in lines if "started" not in r and "ended" not in r]
    assert [r["name"] for r in rows] == ["test_ok", "test_bad"]
    assert rows[0]["stats"]["rounds"] == 2 and rows[0]["extra_info"] == {"backend": "x"}
    assert rows[1]["extra_info"]["failed"] == "rel_err 0.5 > 0.1 assert False"
    text = summarize([out])
    assert "## cases.jsonl: 2 cases" in text
    assert "| test_bad | - | x |" not in text and "| test_bad | - |" in text  # no timing
    assert "not recorded (timed out, killed or crashed): test_cases.py::test_zz_killed" in text
    assert ("Ended without timing: test_cases.py::test_skips (skipped: cuda unavailable: no "
            "GPU)") in text


def test_failed_rows_blank_their_rates_and_toy_rows_meet_their_peers(tmp_path):
    """A case that failed its accuracy check shows no timing, rate or ratio (they describe a
    wrong result); toy rows of the peers' size get the speed-up per model-step over the eager
    reference step and the eager 240-model step of the same file; other sizes do not."""
    rows = [_bench("ref", "toy ref", 0.00127, peer="eager reference", n=1000, B=2048,
                   seconds_per_model_step=0.00127),
            _bench("batched", "toy batched", 0.030, peer="eager batched", n=1000, B=2048,
                   seconds_per_model_step=0.030 / 240),
            _bench("triton small", "toy triton", 1.0, n=1000, B=2048, us_per_model_step=2.5,
                   tflops=12.0, precision="fp32"),
            _bench("triton large", "toy triton", 1.0, n=10240, B=2048, us_per_model_step=90.0),
            _bench("bad", "toy triton", 1.0, n=1000, B=2048, us_per_model_step=1.0,
                   tflops=99.0, precision="bf16", failed="rel_err_dW 0.3 > 0.05")]
    path = tmp_path / "toy.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = summarize([path])
    header = next(ln for ln in text.splitlines() if ln.startswith("| case") and "tflops" in ln)
    cols = [c.strip() for c in header.strip("|").split("|")]
    table = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")]
             for ln in text.splitlines() if ln.startswith("| triton") or ln.startswith("| bad")}
    small = dict(zip(cols, table["triton small"]))
    assert small["speedup_vs_eager_ref"] == "508" and small["speedup_vs_eager_batched"] == "50"
    large = dict(zip(cols, table["triton large"]))
    assert large["speedup_vs_eager_ref"] == "" and large["speedup_vs_eager_batched"] == ""
    bad = dict(zip(cols, table["bad"]))
    assert bad["tflops"] == "" and bad["speedup_vs_eager_ref"] == ""
    assert bad["precision"] == "bf16" and bad["failed"].startswith("rel_err_dW")
    assert bad["median of the timed call (ms)"] == "-"
