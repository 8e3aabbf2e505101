"""What a sweep does when something goes wrong: a launch that raises (``keep_going``), a
trainer that returns results out of order, unreadable lines in a results file, a partial last
line of any length. Nothing already written may be lost, and nothing wrong may be stored."""
from __future__ import annotations

import json
import warnings

import pytest

from superkern.sweep import run_sweep
from superkern.sweep.store import ResultsStore, ResultsWarning, read_jsonl
from tests.sweep_fakes import make_fake, small_configs


def _failing_first_launch():
    fake = make_fake()
    state = {"launches": 0}

    def train(configs, device=None, progress=None):
        state["launches"] += 1
        if state["launches"] == 1:
            raise RuntimeError("out of memory (simulated)")
        return fake(configs, device=device, progress=progress)
    return train


def test_keep_going_records_a_failed_launch_and_trains_the_rest(tmp_path):
    configs = small_configs()
    with pytest.warns(UserWarning, match="launch 0 .*out of memory"):
        summary = run_sweep(configs, tmp_path, train_fn=_failing_first_launch(),
                            progress=False, max_instances=4, save_weights=False,
                            keep_going=True)
    assert len(summary.failed) == 1 and "RuntimeError" in summary.failed[0]
    rows = read_jsonl(tmp_path / "results.jsonl")
    assert summary.trained == len(rows) == len(configs) - 4 and summary.launches >= 1
    # a rerun trains exactly the four models of the failed launch
    calls = []
    again = run_sweep(configs, tmp_path, train_fn=make_fake(calls=calls), progress=False,
                      max_instances=4, save_weights=False)
    assert again.skipped == len(configs) - 4 and sum(map(len, calls)) == 4
    ids = [r["run_id"] for r in read_jsonl(tmp_path / "results.jsonl")]
    assert sorted(ids) == sorted(c.run_id for c in configs)
    # without keep_going the error propagates and nothing of that launch is stored
    with pytest.raises(RuntimeError, match="out of memory"):
        run_sweep(configs, tmp_path / "strict", train_fn=_failing_first_launch(),
                  progress=False, max_instances=4, save_weights=False)
    strict = tmp_path / "strict" / "results.jsonl"
    assert not strict.exists() or read_jsonl(strict) == []


def test_results_out_of_order_are_refused_not_stored(tmp_path):
    fake = make_fake()

    def shuffled(configs, device=None, progress=None):
        return list(reversed(fake(configs, device=device, progress=progress)))

    with pytest.raises(RuntimeError, match="out of order"):
        run_sweep(small_configs(), tmp_path, train_fn=shuffled, progress=False,
                  max_instances=4, save_weights=False)
    path = tmp_path / "results.jsonl"
    assert not path.exists() or read_jsonl(path) == []


def test_unreadable_lines_are_skipped_with_their_line_number(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"run_id": "a"}\n{"run_id": "b", oops}\n[1, 2]\n\n{"run_id": "c"}\n')
    with pytest.warns(ResultsWarning, match=r"r.jsonl:2: skipping an unreadable line"):
        rows = read_jsonl(path)
    assert [r["run_id"] for r in rows] == ["a", "c"]  # the list on line 3 is no row either


@pytest.mark.parametrize("good_rows, tail_bytes", [(0, 30), (1, 70_000), (2, 1)])
def test_repair_drops_only_the_partial_last_line(tmp_path, good_rows, tail_bytes):
    """Tails shorter and longer than repair's 64 KiB read-back chunk, with and without a
    complete row before them."""
    path = tmp_path / "r.jsonl"
    store = ResultsStore(path)
    for k in range(good_rows):
        store.append({"run_id": str(k), "pad": "x" * 100})
    before = path.stat().st_size if path.exists() else 0
    with open(path, "ab") as f:
        f.write(b'{"run_id": "partial", "pad": "' + b"y" * max(0, tail_bytes - 30))
    with pytest.warns(ResultsWarning, match="removed a partial last line"):
        dropped = store.repair()
    assert path.stat().st_size == before and dropped > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["run_id"] for r in read_jsonl(path)] == [str(k) for k in range(good_rows)]
        assert store.repair() == 0  # nothing left to drop
    store.append({"run_id": "next"})
    assert json.loads(path.read_text().splitlines()[-1]) == {"run_id": "next"}


def test_diverged_models_are_counted_in_the_summary(tmp_path):
    """A model whose loss went non-finite is stored (its row says diverged) and the summary
    says how many, as ``superkern train`` does: a sweep must not look clean when it is not."""
    fake = make_fake()

    def train(configs, device=None, progress=None):
        results = fake(configs, device=device, progress=progress)
        for r in results[::3]:  # as a ToyResult stores one: no loss, and the flag
            row = dict(r.to_dict(), final_loss=None, diverged=True)
            r.to_dict = lambda row=row: row
        return results

    configs = small_configs()
    summary = run_sweep(configs, tmp_path, train_fn=train, progress=False, max_instances=4,
                        save_weights=False)
    rows = read_jsonl(tmp_path / "results.jsonl")
    want = sum(bool(r.get("diverged")) for r in rows)
    assert want > 0 and summary.diverged == want
    assert f", {want} diverged (non-finite loss" in summary.text()
