"""Writes under a hostile file system (from a review that ran them on full, size-limited,
read-only and damaged file systems): a failing stdout does not cost the files, write errors
name the file, over-long names fail before the work, and damaged results keep what is whole."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from superkern._atomic import check_target, write_atomic
from superkern.sweep.store import ResultsStore, ResultsWarning, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


def _cli(args, cwd, stdout):
    with open(stdout, "w") as out:
        return subprocess.run([sys.executable, "-m", "superkern", *args], cwd=cwd, stdout=out,
                              stderr=subprocess.PIPE, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})


@full
def test_a_failing_stdout_still_gets_the_files_written(tmp_path):
    """train, probe and fit printed their table before writing --out / --json: with stdout on
    a full disk (or a pipe whose reader is gone) the files were never written, and `train`'s
    models were lost."""
    run = _cli(["train", "--preset", "none", "--n", "30", "--m", "4", "--steps", "20",
                "--batch", "8", "--device", "cpu", "--out", "r1", "--no-progress"],
               tmp_path, "/dev/full")
    assert run.returncode != 0 and "No space left" in run.stderr, run.stderr
    rows = read_jsonl(tmp_path / "r1" / "results.jsonl")
    assert len(rows) == 1 and (tmp_path / "r1" / rows[0]["weights"]).is_file()
    np.save(tmp_path / "h.npy", np.random.default_rng(0).standard_normal((60, 8)))
    run = _cli(["probe", "h.npy", "--json", "p.json", "--no-progress", "--backend", "torch"],
               tmp_path, "/dev/full")
    assert run.returncode != 0 and json.loads((tmp_path / "p.json").read_text())["rows"]
    run = _cli(["fit", "r1", "--json", "f.json"], tmp_path, "/dev/full")
    assert run.returncode != 0 and "cells" in json.loads((tmp_path / "f.json").read_text())


LIMITED = """
import resource, sys
from superkern._atomic import write_atomic
from superkern.sweep.store import ResultsStore
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # SIGXFSZ is ignored by Python
for f in (lambda: write_atomic("big.bin", b"x" * 10000),
          lambda: ResultsStore("r.jsonl").append({"blob": "y" * 10000})):
    try:
        f()
    except OSError as exc:
        print(exc)
"""


def test_write_errors_name_the_file_and_what_to_do(tmp_path):
    """A full disk or a file-size limit said only '[Errno 27] File too large' or '[Errno 28]
    No space left on device': not which file, nor that a rerun resumes."""
    run = subprocess.run([sys.executable, "-c", LIMITED], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = run.stdout.splitlines()
    assert len(lines) == 2, (run.stdout, run.stderr)
    assert lines[0].startswith("[Errno 27] cannot write big.bin: File too large")
    assert lines[1].startswith("[Errno 27] cannot append to r.jsonl: File too large")
    assert all("rerun resumes" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]  # no temporary file left


def test_over_long_names_fail_before_the_work_and_long_ones_work(tmp_path):
    """A name over the file system's limit passed the early check and failed only when the
    results were written (48 s of training lost); a valid name of 242-255 bytes was refused,
    as the temporary file's name added 14 bytes."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(ValueError, match=rf"is {limit + 1} bytes, longer than the {limit}"):
        check_target(tmp_path / "new" / ("a" * (limit + 1)), is_dir=True, option="--out")
    with pytest.raises(ValueError, match="longer than"):
        check_target(tmp_path / ("é" * (limit // 2 + 1) + ".json"))  # 2 bytes per character
    name = "b" * (limit - 5) + ".json"
    check_target(tmp_path / name)
    write_atomic(tmp_path / name, "{}")
    assert (tmp_path / name).read_text() == "{}" and len(list(tmp_path.iterdir())) == 1


def test_a_whole_last_row_without_its_newline_is_kept(tmp_path):
    """A results file edited by hand (its last newline dropped) lost its last row: repair()
    truncated it as a part line and the sweep trained the model again."""
    store = ResultsStore(tmp_path / "results.jsonl")
    store.append({"run_id": "a", "loss": 1.0})
    store.append({"run_id": "b", "loss": 2.0})
    with open(store.path, "rb+") as f:
        f.truncate(f.seek(0, os.SEEK_END) - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["run_id"] for r in read_jsonl(store.path)] == ["a", "b"]  # readers keep it
    with pytest.warns(ResultsWarning, match="added the missing newline"):
        assert store.repair() == 0
    assert store.path.read_bytes().endswith(b"}\n") and len(store.rows()) == 2
    with open(store.path, "ab") as f:  # a true part line is still dropped
        f.write(b'{"run_id": "c", "lo')
    with pytest.warns(ResultsWarning, match="removed a partial last line"):
        assert store.repair() == len(b'{"run_id": "c", "lo')
    assert [r["run_id"] for r in store.rows()] == ["a", "b"]


def test_a_damaged_manifest_is_kept_aside_with_a_warning(tmp_path):
    """An unreadable sweep.json was replaced without a word, its history of earlier grids
    lost."""
    from superkern.sweep.runner import _with_history

    path = tmp_path / "sweep.json"
    path.write_text('{"experiment": "old", "previous": [{"experiment": "older"}')
    with pytest.warns(UserWarning, match="unreadable .* the old one is kept as"):
        new = _with_history(path, {"experiment": "new"})
    assert new["experiment"] == "new" and "previous" not in new and not path.exists()
    (kept,) = tmp_path.glob("sweep.json.unreadable-*")
    assert "older" in kept.read_text()


def test_a_symlinked_target_is_written_through(tmp_path):
    """write_atomic replaced a symlink with a plain file: the file it pointed at (results
    kept on another disk, say) was never updated."""
    real = tmp_path / "store" / "f.json"
    real.parent.mkdir()
    real.write_text("old")
    (tmp_path / "link.json").symlink_to(real)
    write_atomic(tmp_path / "link.json", "new")
    assert (tmp_path / "link.json").is_symlink() and real.read_text() == "new"
