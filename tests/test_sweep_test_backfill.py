"""Test losses added on resume from saved weights (superkern/sweep/backfill.py) and
``superkern.toy.evaluate_test_losses``: the values equal what training with test batches
records, every model gets exactly one such row, and nothing already stored is lost."""
import json
import math
import re
import warnings

import pytest
import torch

from superkern.analysis.tables import load_results
from superkern.sweep import ResultsStore, run_sweep
from superkern.sweep.backfill import add_test_losses, untested
from superkern.toy import ToyConfig, evaluate_test_losses, train_many

T = 4


def _configs(test_batches=0):
    """Six models: two widths per data group, and three data groups (power, linear, seed)."""
    base = dict(preset=None, n=40, steps=30, batch=16, lr=0.02, backend="torch",
                test_batches=test_batches)
    return [ToyConfig(m=m, gamma=g, dist=d, seed=s, **base)
            for m, g, d, s in [(3, -1.0, "power", 0), (5, -1.0, "power", 0),
                               (4, 0.3, "linear", 0), (6, 0.3, "linear", 0),
                               (4, -1.0, "power", 1), (2, 0.3, "power", 1)]]


def _rows(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _by_id(rows):
    out = {}
    for r in rows:
        out.setdefault(r["run_id"], []).append(r)
    return out


def test_evaluate_equals_the_test_loss_training_records():
    cfgs = _configs(T)
    trained = train_many(cfgs, device="cpu")
    got = evaluate_test_losses(cfgs, [(r.W, r.b) for r in trained], device="cpu")
    for r, (mean, std) in zip(trained, got):
        assert math.isclose(mean, r.test_loss, rel_tol=1e-6)
        assert math.isclose(std, r.test_loss_std, rel_tol=1e-5)
    # alone, or in another order, the same values up to rounding (per-model data groups)
    alone = [evaluate_test_losses([c], [(r.W, r.b)], device="cpu")[0]
             for c, r in zip(cfgs[::-1], trained[::-1])][::-1]
    for (m1, s1), (m2, s2) in zip(got, alone):
        assert math.isclose(m1, m2, rel_tol=1e-5) and math.isclose(s1, s2, rel_tol=1e-4)
    # test_batches 0: nothing evaluated
    assert all(math.isnan(v) for v in evaluate_test_losses(
        [cfgs[0].replace(test_batches=0)], [(trained[0].W, trained[0].b)], device="cpu")[0])


@pytest.mark.parametrize("params, match", [
    ([(torch.zeros(40, 4), torch.zeros(40))], "do not fit its config"),
    ([(torch.zeros(40, 3), torch.zeros(39))], "do not fit its config"),
    ([torch.zeros(40, 3)], r"\(W, b\) pair"),
    ([], "1 configs but 0"),
])
def test_evaluate_refuses_parameters_that_do_not_fit(params, match):
    with pytest.raises(ValueError, match=match):
        evaluate_test_losses(_configs(T)[:1], params, device="cpu")


def test_resume_adds_test_losses_from_saved_weights(tmp_path):
    first = run_sweep(_configs(0), tmp_path, progress=False, device="cpu")
    assert first.trained == 6 and first.tested == 0
    before = _rows(tmp_path)
    assert all(r["test_loss"] is None for r in before)

    again = run_sweep(_configs(T), tmp_path, progress=False, device="cpu")
    assert again.trained == 0 and again.tested == 6
    assert "6 given a test loss from their saved weights" in again.text()
    rows = _rows(tmp_path)
    assert rows[:6] == before  # nothing stored is rewritten
    # the added values are the ones training with T test batches records
    retrained = {r.run_id: r for r in train_many(_configs(T), device="cpu")}
    for rid, (old, new) in _by_id(rows).items():
        assert new["config"] == {**old["config"], "test_batches": T}
        assert new["final_loss"] == old["final_loss"] and new["weights"] == old["weights"]
        assert new["test_from_weights"]["models"] == 6
        assert new["test_from_weights"]["backend"] == "torch"
        assert new["test_from_weights"]["device"] == "cpu"
        assert math.isclose(new["test_loss"], retrained[rid].test_loss, rel_tol=1e-6)
        assert math.isclose(new["test_loss_std"], retrained[rid].test_loss_std, rel_tol=1e-5)

    # a third run adds nothing; readers see one run per model and warn about nothing
    third = run_sweep(_configs(T), tmp_path, progress=False, device="cpu")
    assert third.tested == 0 and len(_rows(tmp_path)) == 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        final, test = load_results(tmp_path), load_results(tmp_path, "test")
    assert len(final.runs) == len(test.runs) == 6
    by_new = {r["run_id"]: r for r in rows[6:]}
    for f, t in zip(final.runs, test.runs):
        assert f.final_loss == by_new[f.run_id]["final_loss"]
        assert t.final_loss == by_new[t.run_id]["test_loss"]


def test_models_without_weights_are_named_and_left_alone(tmp_path):
    run_sweep(_configs(0), tmp_path, progress=False, device="cpu")
    rows = _rows(tmp_path)
    (tmp_path / rows[0]["weights"]).unlink()
    (tmp_path / rows[1]["weights"]).write_bytes(b"not a safetensors file")
    for _ in range(2):  # and again on the next resume: still missing, still no extra row
        with pytest.warns(UserWarning, match="2 finished model.s. ask for test batches"), \
                pytest.warns(UserWarning, match="1 finished model.s. have lost their saved"):
            s = run_sweep(_configs(T), tmp_path, progress=False, device="cpu")
    assert s.tested == 0
    ids = [r["run_id"] for r in _rows(tmp_path)]
    assert len(ids) == 10 and ids.count(rows[0]["run_id"]) == ids.count(rows[1]["run_id"]) == 1


def test_a_nan_test_loss_is_stored_as_null_and_not_retried(tmp_path):
    run_sweep(_configs(0), tmp_path, progress=False, device="cpu")
    store = ResultsStore(tmp_path / "results.jsonl")
    calls = []

    def nan_eval(cfgs, params, **kw):
        calls.append(len(cfgs))
        return [(math.nan, math.nan)] * len(cfgs)

    cfgs = _configs(T)
    assert add_test_losses(cfgs, tmp_path, store, device="cpu", max_instances=4,
                           vers={}, evaluate=nan_eval) == 6
    assert calls == [4, 2]  # max_instances per evaluation
    added = _rows(tmp_path)[6:]
    assert all(r["test_loss"] is None and r["config"]["test_batches"] == T for r in added)
    assert untested(cfgs, tmp_path) == []


def test_a_failed_evaluation_warns_and_training_goes_on(tmp_path, monkeypatch):
    """Nothing about the test losses stops a sweep: the pending models still train, and a
    later resume evaluates the models that failed."""
    import superkern.sweep.engine as eng

    run_sweep(_configs(0)[:3], tmp_path, progress=False, device="cpu")

    def fail(*a, **k):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(eng, "evaluate_fn", lambda: fail)
    with pytest.warns(UserWarning, match=r"3 finished model.s. .*evaluation failed: 3 model.s.: "
                      "RuntimeError: out of memory .simulated."):
        s = run_sweep(_configs(T), tmp_path, progress=False, device="cpu")
    assert (s.trained, s.tested, s.failed) == (3, 0, [])
    assert len(_rows(tmp_path)) == 6
    monkeypatch.undo()
    assert run_sweep(_configs(T), tmp_path, progress=False, device="cpu").tested == 3


def test_models_that_cannot_be_evaluated_here_are_named(tmp_path, monkeypatch):
    import superkern.sweep.engine as eng

    run_sweep(_configs(0), tmp_path, progress=False, device="cpu")
    real = eng.resolve_backend

    def only_power(config, device):
        if config.dist != "power":
            raise ValueError("backend 'triton' is not available: no GPU (simulated)")
        return real(config, device)

    monkeypatch.setattr(eng, "resolve_backend", only_power)
    with pytest.warns(UserWarning, match=r"2 finished model.s. .*cannot be evaluated here "
                      r"\(backend 'triton' is not available"):
        assert run_sweep(_configs(T), tmp_path, progress=False, device="cpu").tested == 4


def test_diverged_models_and_weights_of_another_model_are_left_out(tmp_path):
    run_sweep(_configs(0), tmp_path, progress=False, device="cpu")
    path = tmp_path / "results.jsonl"
    rows = _rows(tmp_path)
    rows[0]["final_loss"], rows[0]["diverged"] = None, True
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # model 2's file now holds model 3 (same n, another m and run id)
    (tmp_path / rows[2]["weights"]).write_bytes((tmp_path / rows[3]["weights"]).read_bytes())
    with pytest.warns(UserWarning, match="1 finished model.s. ask for test batches but have "
                      "no saved weights that hold them"):
        s = run_sweep(_configs(T), tmp_path, progress=False, device="cpu")
    assert s.tested == 4
    added = {r["run_id"] for r in _rows(tmp_path)[6:]}
    assert rows[0]["run_id"] not in added and rows[2]["run_id"] not in added


def test_shards_each_add_their_own_models(tmp_path):
    run_sweep(_configs(0), tmp_path, progress=False, device="cpu")
    tested = [run_sweep(_configs(T), tmp_path, progress=False, device="cpu",
                        shard=(k, 2)).tested for k in (1, 2)]
    assert sum(tested) == 6 and min(tested) >= 1
    rows = [json.loads(line) for f in sorted(tmp_path.glob("results*.jsonl"))
            for line in f.read_text().splitlines()]
    assert sorted(len(v) for v in _by_id(rows).values()) == [2] * 6
    assert run_sweep(_configs(T), tmp_path, progress=False, device="cpu").tested == 0


def test_evaluate_on_the_triton_engine_equals_its_training_record():
    from superkern.toy.backend import triton_toy

    tri, why = triton_toy()
    if tri is None:
        pytest.skip(f"triton toy kernels unavailable: {why}")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfgs = [ToyConfig(preset=None, n=32, m=m, steps=2, batch=16, lr=0.02, seed=s,
                      backend="triton", test_batches=2) for m, s in [(3, 0), (4, 1)]]
    trained = train_many(cfgs, device=dev)
    got = evaluate_test_losses(cfgs, [(r.W, r.b) for r in trained], device=dev)
    for r, (mean, std) in zip(trained, got):
        assert math.isclose(mean, r.test_loss, rel_tol=1e-6)
        assert math.isclose(std, r.test_loss_std, rel_tol=1e-5)


def test_dry_run_says_what_a_resume_would_do(tmp_path, capsys):
    from superkern.cli import main

    tiny = ["--quick", "--set", "n=32", "--set", "steps=5", "--set", "batch=8",
            "--set", "m=[2, 4]", "--device", "cpu", "--no-progress", "--out", str(tmp_path)]
    assert main(["sweep", "fig1", *tiny, "--set", "m=[2]", "--set", "test_batches=0"]) == 0
    capsys.readouterr()
    assert main(["sweep", "fig1", *tiny, "--dry-run"]) == 0
    assert (f"{tmp_path}: 6 already done, 6 to train in 1 launch(es); 6 finished model(s) "
            "without a test loss, 6 of them with saved weights to evaluate"
            in capsys.readouterr().out)
    assert len(_rows(tmp_path)) == 6  # a dry run writes nothing
    (tmp_path / _rows(tmp_path)[0]["weights"]).unlink()
    assert main(["sweep", "fig1", *tiny, "--dry-run", "--shard", "1/2"]) == 0
    line = capsys.readouterr().out.splitlines()[2]  # this shard's share, as a run counts it
    done, todo = (int(w) for w in re.findall(r"(\d+) already done, (\d+) to train", line)[0])
    assert line.startswith(f"{tmp_path} (shard 1/2): ") and done + todo < 12
    lack, saved = (int(w) for w in re.findall(r"(\d+) finished model.s. without a test "
                                               r"loss, (\d+) of them", line)[0])
    assert lack == done and saved in (lack, lack - 1)


def test_asking_for_test_losses_later_is_the_same_grid(tmp_path, capsys):
    """test_batches is recorded, not hashed: the rerun adds test losses without the "another
    grid" warning, and the first manifest is still kept under "previous"."""
    from superkern.cli import main

    tiny = ["--quick", "--set", "n=32", "--set", "steps=5", "--set", "batch=8", "--set",
            "m=[2, 4]", "--set", "gamma=[-1.0]", "--device", "cpu", "--no-progress", "--out",
            str(tmp_path)]
    assert main(["sweep", "fig1", *tiny, "--set", "test_batches=0"]) == 0
    first = json.loads((tmp_path / "sweep.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        assert main(["sweep", "fig1", *tiny, "--set", "test_batches=2"]) == 0
    assert "0 trained, 6 already done" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert manifest["grid_hash"] == first["grid_hash"] and manifest["base"]["test_batches"] == 2
    assert [p["base"]["test_batches"] for p in manifest["previous"]] == [0]
    # another grid still warns
    with pytest.warns(UserWarning, match="already holds results of another grid"):
        assert main(["sweep", "fig1", *tiny, "--set", "test_batches=2", "--set", "steps=6"]) == 0
    assert json.loads((tmp_path / "sweep.json").read_text())["grid_hash"] != first["grid_hash"]
