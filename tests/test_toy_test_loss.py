"""Test loss on fresh batches (``ToyConfig.test_batches``, superkern/toy/evaluate.py).

Checked against an fp64 replay of the test stream, for the reference trainer, the instance-
batched torch engine and (under the Triton interpreter on CPU) the fused Triton engine; the
training itself must not change; and the estimate must agree with an independent one.
"""
import dataclasses
import json
import math
import warnings

import pytest
import torch

import superkern
from superkern.toy import ToyConfig, train_many
from superkern.toy.backend import triton_toy
from superkern.toy.batched import BatchedTrainer
from superkern.toy.config import data_seed
from superkern.toy.data import sample_batch, toy_probabilities
from superkern.toy.evaluate import eval_seed, toy_loss_torch
from superkern.toy.loss import toy_loss_ref

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _cfg(**kw):
    base = dict(preset=None, n=60, m=6, gamma=-1.0, steps=40, batch=32, lr=0.02,
                test_batches=7, backend="torch")
    base.update(kw)
    return ToyConfig(**base)


def _replay(W, b, cfg, batches, seed=None):
    """fp64 reported losses of (W, b) on the first ``batches`` batches of a stream."""
    g = torch.Generator().manual_seed(eval_seed(cfg.data_seed) if seed is None else seed)
    p = toy_probabilities(cfg).float()
    return torch.stack([toy_loss_ref(W.double(), b.double(),
                                     sample_batch(p, cfg.batch, g).double()) * cfg.n
                        for _ in range(batches)])


def test_reference_test_loss_is_the_replayed_stream():
    cfg = _cfg()
    r = superkern.train(cfg, device="cpu")
    want = _replay(r.W, r.b, cfg, cfg.test_batches)
    assert math.isclose(r.test_loss, float(want.mean()), rel_tol=1e-5)
    assert math.isclose(r.test_loss_std, float(want.std()), rel_tol=1e-4)
    # the test stream is not the training stream: its first batch differs from step 1's
    p = toy_probabilities(cfg).float()
    train_x = sample_batch(p, cfg.batch, torch.Generator().manual_seed(data_seed(cfg.seed)))
    test_x = sample_batch(p, cfg.batch, torch.Generator().manual_seed(eval_seed(cfg.data_seed)))
    assert not torch.equal(train_x, test_x)


def test_test_batches_do_not_change_training_or_run_id():
    a = superkern.train(_cfg(test_batches=0), device="cpu")
    b = superkern.train(_cfg(test_batches=5), device="cpu")
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    assert a.final_loss == b.final_loss and a.curve == b.curve
    assert a.run_id == b.run_id
    assert math.isnan(a.test_loss) and math.isnan(a.test_loss_std)
    d = a.to_dict()
    assert d["test_loss"] is None and d["test_loss_std"] is None
    assert json.loads(json.dumps(b.to_dict()))["test_loss"] == pytest.approx(b.test_loss)
    one = superkern.train(_cfg(test_batches=1), device="cpu")
    assert math.isfinite(one.test_loss) and math.isnan(one.test_loss_std)


def test_batched_engine_matches_each_model_alone():
    """A launch group mixing test_batches (7, 3, 0), seeds and widths: each model's test
    loss equals training it alone; the one with 3 batches uses the group's first 3."""
    cfgs = [_cfg(), _cfg(seed=1, m=4, test_batches=3), _cfg(gamma=0.3, test_batches=0)]
    got = train_many(cfgs, device="cpu", group_by="none")
    for c, r in zip(cfgs, got):
        alone = superkern.train(c, device="cpu")
        assert r.group_size == 3
        if c.test_batches:
            assert math.isclose(r.test_loss, alone.test_loss, rel_tol=1e-5), c
            assert math.isclose(r.test_loss_std, alone.test_loss_std, rel_tol=1e-4), c
        else:
            assert math.isnan(r.test_loss)
    want = _replay(got[1].W, got[1].b, cfgs[1], 3)
    assert math.isclose(got[1].test_loss, float(want.mean()), rel_tol=1e-5)


def test_test_loss_agrees_with_an_independent_estimate():
    """Same expectation as the loss on any other fresh data: within 5 standard errors of an
    estimate from an unrelated stream (a wrong scale, such as a missing factor n, fails)."""
    cfg = _cfg(n=200, m=20, steps=150, batch=256, test_batches=60)
    r = superkern.train(cfg, device="cpu")
    other = _replay(r.W, r.b, cfg, 60, seed=123457)
    se = math.sqrt(r.test_loss_std ** 2 / 60 + float(other.std()) ** 2 / 60)
    assert abs(r.test_loss - float(other.mean())) < 5 * se
    assert se < 0.05 * r.test_loss  # the check has teeth: the spread is small


def test_forward_loss_matches_autograd_reference():
    g = torch.Generator().manual_seed(3)
    I, n, M, B = 3, 11, 4, 9
    W = torch.randn(I, n, M, generator=g, dtype=torch.float64)
    b = torch.randn(I, n, generator=g, dtype=torch.float64)
    x = torch.rand(2, B, n, generator=g, dtype=torch.float64)
    group = torch.tensor([1, 0, 1])
    got = toy_loss_torch(W, b, x, group, chunk_elems=B * n)  # one instance per chunk
    want = torch.stack([toy_loss_ref(W[i], b[i], x[group[i]]) for i in range(I)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "7"])
def test_bad_test_batches(bad):
    with pytest.raises(ValueError, match="test_batches must be an integer >= 0"):
        _cfg(test_batches=bad)


def test_triton_engine_test_loss_replays_its_philox_stream():
    tri, why = triton_toy()
    if tri is None:
        pytest.skip(f"triton toy kernels unavailable: {why}")
    kw = dict(preset=None, n=32, steps=2, batch=16, backend="triton")
    cfgs = [ToyConfig(m=4, gamma=-1.0, seed=0, test_batches=3, **kw),
            ToyConfig(m=6, gamma=0.5, seed=1, test_batches=2, **kw)]
    tr = BatchedTrainer(cfgs, DEV, backend="triton", triton_mod=tri)
    res = tr.results(tr.run())
    keys = torch.tensor([eval_seed(s) for s in tr.seeds.tolist()], dtype=torch.int64,
                        device=tr.p.device)
    xs = [tri.toy_sample_triton(tr.p, keys, t + 1, tr.B).double().cpu() for t in range(3)]
    for i, (c, r) in enumerate(zip(cfgs, res)):
        g = int(tr.group[i])
        want = torch.stack([toy_loss_ref(r.W.double(), r.b.double(), x[g]) * c.n
                            for x in xs[:c.test_batches]])
        assert math.isclose(r.test_loss, float(want.mean()), rel_tol=1e-5), i
        assert math.isclose(r.test_loss_std, float(want.std()), rel_tol=1e-3), i
    # the test stream is not a training step's: step 1 of the data seeds draws other batches
    train_x = tri.toy_sample_triton(tr.p, tr.seeds, 1, tr.B).double().cpu()
    assert not torch.equal(train_x, xs[0])
    assert dataclasses.replace(cfgs[0], test_batches=0).run_id == cfgs[0].run_id


def test_cli_test_batches(tmp_path, capsys):
    from superkern.cli import main

    args = ["train", "--preset", "none", "--n", "20", "--m", "2,3", "--steps", "6", "--batch",
            "4", "--device", "cpu", "--backend", "torch"]
    assert main(args + ["--test-batches", "4", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[5:9] == ["loss", "+-", "test", "+-"] and len(lines) == 3 + 3
    rows = [json.loads(s) for s in (tmp_path / "results.jsonl").read_text().splitlines()]
    for row, line in zip(rows, lines[1:]):
        assert row["config"]["test_batches"] == 4 and row["test_loss"] > 0
        assert float(line.split()[7]) == pytest.approx(row["test_loss"], rel=1e-3)
    assert main(args) == 0
    assert "test" not in capsys.readouterr().out.splitlines()[0].split()
    assert main(args + ["--test-batches", "-2"]) == 2
    assert "test_batches must be an integer >= 0, got -2" in capsys.readouterr().err


def _rows(path, widths=(8, 16, 32, 64, 128)):
    """Synthetic results: final loss 2 m^-1, test loss 3 m^-2 (test_batches 100), and one
    more width trained without test batches (no test loss)."""
    with open(path, "w") as f:
        for m in (*widths, 256):
            cfg = ToyConfig(n=512, m=m, gamma=-1.0, dist="exponential", steps=10, batch=8,
                            test_batches=0 if m == 256 else 100)
            row = {"run_id": cfg.run_id, "config": cfg.to_dict(), "final_loss": 2.0 / m,
                   "final_loss_std": 0.01 / m, "phi_half": 1.0, "phi_1": 0.5,
                   "test_loss": None if m == 256 else 3.0 / m ** 2,
                   "test_loss_std": None if m == 256 else 0.02 / m ** 2}
            f.write(json.dumps(row) + "\n")


def test_fit_and_figures_read_the_test_loss(tmp_path, capsys):
    from superkern.analysis.figures import make_figures
    from superkern.analysis.tables import load_results
    from superkern.cli import main

    path = tmp_path / "results.jsonl"
    _rows(path)
    final = load_results(path)
    assert len(final.runs) == 6 and final.loss == "final"
    with pytest.warns(UserWarning, match="1 row.s. with no test loss"):
        test = load_results(path, "test")
    assert len(test.runs) == 5 and "test loss" in test.caption()
    assert sorted(r.final_loss for r in test.runs) == pytest.approx(
        sorted(3.0 / m ** 2 for m in (8, 16, 32, 64, 128)))
    with pytest.raises(ValueError, match="unknown loss 'best'"):
        load_results(path, "best")
    # test_batches is not a cell field: one cell over all six widths
    assert main(["fit", str(path), "--range", "all", "--bootstrap", "0", "--json", "-"]) == 0
    rep = json.loads(capsys.readouterr().out)
    (cell,) = rep["cells"]
    assert cell["fit"]["alpha_m"] == pytest.approx(1.0) and cell["fit"]["n_points"] == 6
    with pytest.warns(UserWarning, match="no test loss"):
        assert main(["fit", str(path), "--loss", "test", "--range", "all", "--bootstrap", "0",
                     "--json", "-"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["cells"][0]["fit"]["alpha_m"] == pytest.approx(2.0)
    with pytest.warns(UserWarning, match="no test loss"):
        report = make_figures(path, tmp_path / "figs", only=["fig1"], loss="test", n_boot=0)
    assert "fig1" in report.written, report.text()
    with pytest.raises(ValueError, match="read with loss='final', not 'test'"):
        make_figures(final, tmp_path / "figs", loss="test")
    with pytest.warns(UserWarning, match="no test loss"):
        assert main(["figures", str(path), "--loss", "test", "--only", "fig1",
                     "--bootstrap", "0"]) == 0
    assert (tmp_path / "figures-test" / "fig1.png").is_file()
    assert not (tmp_path / "figures").exists()


def test_a_retrain_with_test_batches_supplies_the_test_loss(tmp_path):
    """train --out appends; the run id does not hash test_batches, so the retrain's row comes
    after the first one: --loss test uses it, --loss final keeps the first row."""
    from superkern.analysis.tables import load_results
    from superkern.cli import main

    args = ["train", "--preset", "none", "--n", "20", "--m", "2,3,4", "--steps", "6",
            "--batch", "4", "--device", "cpu", "--backend", "torch", "--out", str(tmp_path)]
    assert main(args) == 0 and main(args + ["--test-batches", "3"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first rows are completed, not left out
        test = load_results(tmp_path, "test")
    assert len(test.runs) == 3 and all(r.row["test_loss"] > 0 for r in test.runs)
    with pytest.warns(UserWarning, match="left out 3 row.s. .duplicates"):
        final = load_results(tmp_path)
    assert len(final.runs) == 3 and all(r.row["test_loss"] is None for r in final.runs)
