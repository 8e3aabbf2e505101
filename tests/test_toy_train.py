"""End-to-end: reference trainer vs instance-batched engine, padding exactness, the weak /
strong superposition check, results, CLI, and errors before any work."""
import json
import math

import pytest
import torch

import superkern.toy.api as api
from superkern._tf32 import tf32_enabled
from superkern.toy import ToyConfig, load_weights, train, train_many
from superkern.toy.batched import BatchedTrainer
from superkern.toy.geometry import toy_geometry, unlearned_loss, welch_kappa2
from tests.utils import assert_allclose


def _mix(steps=30, n=48, B=24):
    """Different m, gamma, p, seeds, loss scales and schedules; A and B share a data group."""
    kw = dict(n=n, steps=steps, batch=B, backend="torch", log_every=10)
    return [
        ToyConfig(m=4, gamma=-1.0, seed=0, **kw),
        ToyConfig(m=7, gamma=0.5, seed=0, **kw),
        ToyConfig(m=7, gamma=0.0, seed=1, **kw),
        ToyConfig(preset="large", m=6, gamma=-1.0, dist="exponential", seed=2, **kw),
        ToyConfig(m=3, gamma=-0.3, dist="linear", E=2.0, seed=0, lr=0.03, **kw),
    ]


def test_train_many_equals_each_trained_alone():
    configs = _mix()
    many = train_many(configs, device="cpu")
    assert [r.config for r in many] == configs
    for c, r in zip(configs, many):
        ref = train(c, device="cpu")
        tag = f"m={c.m} gamma={c.gamma} seed={c.seed} preset={c.preset}"
        assert r.W.shape == (c.n, c.m) and r.b.shape == (c.n,)
        assert_allclose(f"W ({tag})", r.W, ref.W, rtol=1e-4, atol=2e-6)
        assert_allclose(f"b ({tag})", r.b, ref.b, rtol=1e-4, atol=2e-6)
        assert [s for s, _ in r.curve] == [1, 10, 20, 30] == [s for s, _ in ref.curve]
        assert_allclose(f"curve ({tag})", torch.tensor([v for _, v in r.curve]),
                        torch.tensor([v for _, v in ref.curve]), rtol=1e-5)
        assert r.final_loss == pytest.approx(ref.final_loss, rel=1e-5), tag
        assert r.final_loss_std == pytest.approx(ref.final_loss_std, rel=1e-3), tag
        assert r.group_size == len(configs) and ref.group_size == 1


def test_data_groups_share_batches():
    tr = BatchedTrainer(_mix(steps=2), "cpu")
    assert tr.G == 4 and tr.group.tolist() == [0, 0, 1, 2, 3], tr.group.tolist()
    assert tr.M == 7


def test_padding_is_exact():
    """A padded model's extra columns stay exactly zero; its losses equal the unpadded run."""
    small, wide = _mix(steps=25)[0], _mix(steps=25)[1]
    both = BatchedTrainer([small, wide], "cpu")
    alone = BatchedTrainer([small], "cpu")
    assert both.M == 7 and alone.M == 4
    for _ in range(small.steps):
        l2 = both.step()
        l1 = alone.step()
        assert bool((both.W[0, :, 4:] == 0).all()), "padded columns of W moved"
        assert bool((both.opt.mW[0, :, 4:] == 0).all() and (both.opt.vW[0, :, 4:] == 0).all())
        assert float(l2[0]) == pytest.approx(float(l1[0]), rel=1e-6)
    assert_allclose("padded W", both.W[0, :, :4], alone.W[0], rtol=1e-5, atol=1e-7)


def _widths(steps=20, backend="torch"):
    """Widths in three buckets (16: 3, 8, 16; 32: 20, 17; 64: 33); A, B and F share data."""
    kw = dict(preset=None, n=40, steps=steps, batch=16, backend=backend, log_every=5)
    return [ToyConfig(m=m, gamma=g, seed=s, **kw) for m, g, s in
            [(3, -1.0, 0), (20, 0.5, 0), (8, 0.0, 1), (17, -1.0, 1), (33, 0.3, 2),
             (20, -0.5, 0), (16, -1.0, 3)]]


def test_width_bucket_rule():
    assert [api.width_bucket(m) for m in (1, 2, 15, 16, 17, 32, 33, 100, 128, 129, 1000)] == \
        [16, 16, 16, 16, 32, 32, 64, 128, 128, 256, 1024]
    with pytest.raises(ValueError, match="m must be >= 1"):
        api.width_bucket(0)


def test_width_bucket_equals_triton_block_m():
    """The pure-python bucket rule is the padded width the Triton kernels use."""
    common = pytest.importorskip("superkern.triton._toy_common")
    for m in range(1, 2049):
        assert api.width_bucket(m) == common.block_m(m), m


def test_plan_groups_policies():
    configs = _widths()
    cpu = torch.device("cpu")
    plans = {g: [idx for _, idx in api.plan_groups(configs, cpu, g)] for g in api.GROUP_BY}
    assert plans["none"] == [[0, 1, 2, 3, 4, 5, 6]]
    assert plans["bucket"] == [[0, 2, 6], [1, 3, 5], [4]]
    assert plans["width"] == [[0], [1, 5], [2], [3], [4], [6]]
    assert api.plan_groups(configs, cpu) == api.plan_groups(configs, cpu, "bucket")
    # Width splits come on top of the other keys, never instead of them.
    other = configs + [configs[0].replace(steps=30), configs[1].replace(batch=8)]
    assert [idx for _, idx in api.plan_groups(other, cpu, "none")] == [list(range(7)), [7], [8]]
    assert [idx for _, idx in api.plan_groups(other, cpu, "bucket")] == \
        [[0, 2, 6], [1, 3, 5], [4], [7], [8]]
    for bad in ("Bucket", "m", None):
        with pytest.raises(ValueError, match=r"unknown group_by .*'bucket', 'width', 'none'"):
            api.plan_groups(configs, cpu, bad)
    with pytest.raises(ValueError, match="unknown group_by 'widths'"):
        train_many(configs, device="cpu", group_by="widths")


def test_train_many_group_by_policies_agree():
    """Same init and batches under every policy (split data groups redraw the same stream):
    results agree up to the rounding of the padded products, and group sizes follow the plan."""
    configs = _widths()
    runs = {g: train_many(configs, device="cpu", group_by=g) for g in api.GROUP_BY}
    assert [r.group_size for r in runs["none"]] == [7] * 7
    assert [r.group_size for r in runs["bucket"]] == [3, 3, 3, 3, 1, 3, 3]
    assert [r.group_size for r in runs["width"]] == [1, 2, 1, 1, 1, 2, 1]
    for g in ("bucket", "width"):
        for c, a, r in zip(configs, runs["none"], runs[g]):
            tag = f"{g}: m={c.m} seed={c.seed}"
            assert r.config == c and r.W.shape == (c.n, c.m)
            assert_allclose(f"W ({tag})", r.W, a.W, rtol=1e-5, atol=1e-6)
            assert_allclose(f"b ({tag})", r.b, a.b, rtol=1e-5, atol=1e-6)
            assert [s for s, _ in r.curve] == [s for s, _ in a.curve] == [1, 5, 10, 15, 20]
            assert_allclose(f"curve ({tag})", torch.tensor([v for _, v in r.curve]),
                            torch.tensor([v for _, v in a.curve]), rtol=1e-5)
            assert r.final_loss == pytest.approx(a.final_loss, rel=1e-5), tag


def test_strong_vs_weak_superposition():
    """n = 200, m = 10: growth (gamma = -1) represents nearly every feature (phi_1/2 ~ 1),
    decay (gamma = 0.5) about m of them (phi_1/2 ~ m/n = 0.05), and the weak model's loss is
    close to the unlearned-feature prediction."""
    kw = dict(n=200, m=10, steps=1200, batch=512, seed=4, backend="torch")
    strong, weak = train_many([ToyConfig(gamma=-1.0, **kw), ToyConfig(gamma=0.5, **kw)],
                              device="cpu")
    info = [(r.phi_half, r.phi_1, r.final_loss, r.geometry["unlearned_loss"])
            for r in (strong, weak)]
    assert strong.phi_half >= 0.9, info
    assert 0.02 <= weak.phi_half <= 0.12, info
    all_off = 4 / 3 * 1.0                               # loss of y = 0: <v^2> * sum p
    assert strong.final_loss < 0.8 * all_off and weak.final_loss < 0.8 * all_off, info
    lu = weak.geometry["unlearned_loss"]
    assert 0.9 * lu <= weak.final_loss <= 1.6 * lu, info
    assert strong.geometry["unlearned_loss"] < 0.05 * lu, info


def test_result_to_dict_and_save(tmp_path):
    c = ToyConfig(preset=None, n=30, m=3, steps=12, batch=8, gamma=-1.0, log_every=5)
    r = train(c, device="cpu")
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert "W" not in d and d["run_id"] == c.run_id and json.loads(text)["config"]["m"] == 3
    assert d["curve"][0][0] == 1 and d["curve"][-1][0] == 12
    assert r.steps_per_second > 0 and r.device == "cpu" and r.backend == "torch"
    tail_mean = r.final_loss
    assert math.isfinite(tail_mean) and r.final_loss_std >= 0
    path = r.save(tmp_path)
    assert path.name == f"{c.run_id}.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "temp file left behind"
    W, b, c2 = load_weights(path)
    assert torch.equal(W, r.W) and torch.equal(b, r.b) and c2 == c


def test_geometry_recipes():
    n, m = 10, 3
    W = torch.zeros(n, m)
    W[0, 0], W[1, 1], W[2, 2] = 1.5, 1.2, 1.1          # strong, orthogonal
    W[3] = torch.tensor([0.4, 0.4, 0.0])                # represented (norm 0.57), not strong
    p = torch.tensor([0.05, 0.3, 0.1, 0.2, 0.05, 0.1, 0.05, 0.05, 0.05, 0.05],
                     dtype=torch.float64)
    phi_half, phi_1, g = toy_geometry(W, p)
    assert (phi_half, phi_1) == (0.4, 0.3)
    assert g["n_strong"] == 3 and g["mean_sq_strong"] == pytest.approx(0.0, abs=1e-12)
    assert g["welch_kappa2_strong"] == 0.0                # 3 vectors fit in R^3
    # Sorted descending: 0.3, 0.2, 0.1, 0.1 are "learned"; the other six sum to 0.3.
    assert g["unlearned_loss"] == pytest.approx(4 / 3 * 0.3, rel=1e-12)
    assert unlearned_loss(p, 1.0) == 0.0
    assert unlearned_loss(p.numpy()[::-1], 0.4) == pytest.approx(g["unlearned_loss"], rel=1e-12)
    # The sweep layer's entry (from a stored config, explicit p) counts the same features.
    from superkern.sweep.engine import unlearned_loss as from_config

    cfg = {"n": n, "dist": p.tolist()}
    assert from_config(cfg, 0.4) == pytest.approx(g["unlearned_loss"], rel=1e-12)
    assert welch_kappa2(7, 3) == pytest.approx(4 / 18) and math.isnan(welch_kappa2(1, 3))
    bad = W.clone()
    bad[0, 0] = float("nan")
    assert toy_geometry(bad, p)[2]["finite"] is False


def test_bad_configs_raise_before_any_work(monkeypatch):
    calls = []
    monkeypatch.setattr(api, "BatchedTrainer", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(api, "train_reference", lambda *a, **k: calls.append(a))
    monkeypatch.setitem(api.triton_toy.__globals__["_triton_cache"], "mod", None)
    monkeypatch.setitem(api.triton_toy.__globals__["_triton_cache"], "why", "not built (test)")
    good = ToyConfig(preset=None, n=10, m=2, steps=3, batch=2)
    with pytest.raises(ValueError, match="backend 'triton' is not available: not built"):
        train(good.replace(backend="triton"), device="cpu")
    with pytest.raises(ValueError, match="precision 'bf16' needs the triton backend"):
        train_many([good, good.replace(precision="bf16")], device="cpu")
    with pytest.raises(ValueError, match="must be a ToyConfig"):
        train_many([good, {"m": 3}], device="cpu")
    assert calls == [], "work started before validation finished"


def test_short_runs_and_bad_devices():
    one = train(ToyConfig(preset=None, n=12, m=2, steps=1, batch=4, backend="torch"),
                device="cpu")
    assert math.isfinite(one.final_loss) and math.isnan(one.final_loss_std)
    assert json.loads(json.dumps(one.to_dict(), allow_nan=False))["final_loss_std"] is None
    cfg = ToyConfig(preset=None, n=12, m=2, steps=2, batch=4, backend="torch")
    with pytest.raises(ValueError, match="unknown device"):
        train(cfg, device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            train_many([cfg], device="cuda")


def test_cli_grid(tmp_path, capsys):
    from superkern.cli import main

    rc = main(["train", "--preset", "none", "--n", "20", "--m", "2,3", "--gamma=-1,0.5",
               "--steps", "6", "--batch", "4", "--device", "cpu", "--backend", "torch",
               "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["run_id", "n", "m", "gamma"] and len(lines) == 5 + 3, out
    assert lines[5].startswith("loss: per-sample loss") and "welch2: the Welch" in lines[6]
    assert all(line.split()[4] == "1.000" for line in lines[1:5])  # alpha of the power law
    rows = [json.loads(s) for s in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["config"]["m"] for r in rows} == {2, 3}
    assert all((tmp_path / r["weights"]).exists() for r in rows)
    assert main(["train", "--preset", "none", "--n", "5", "--m", "9", "--steps", "2",
                 "--batch", "2"]) == 2
    assert "m=9 exceeds n=5" in capsys.readouterr().err
    small = ["train", "--preset", "none", "--n", "20", "--steps", "3", "--batch", "4",
             "--backend", "torch", "--m", "2"]
    for extra, msg in ((["--m", ","], "--m: no values"), (["--m", "2,x"], "comma list of ints"),
                       (["--dist", "linear", "--alpha", "1,2"], "--alpha applies to --dist power"),
                       (["--device", "bogus"], "unknown device 'bogus'"),
                       (["--device", "cuda:7"], "cuda:7")):
        assert main(small + extra) == 2, extra
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (extra, err)
    assert main(small[:-2] + ["--m", "2,2,3", "--device", "cpu", "--json"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # "2,2" is one model
    assert main(small + ["--dist", "exponential", "--device", "cpu", "--no-progress"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[4] == "-", row  # alpha does not enter an exponential p
    assert main(small + ["--device", "cpu", "--progress"]) == 0  # forced: stderr is no terminal
    assert "model-step/s" in capsys.readouterr().err
    assert main(small + ["--device", "cpu"]) == 0  # default: a bar only on a terminal
    assert "model-step/s" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(small + ["--progress", "--no-progress"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_engine_matches_cuda_reference():
    """On CUDA the data come from a CUDA generator (another stream than the CPU's): the
    engine and the reference must still agree there, in fp32 with tf32 off."""
    configs = _mix(steps=40)
    flags = (tf32_enabled(), torch.get_float32_matmul_precision())
    many = train_many(configs, device="cuda")
    assert flags == (tf32_enabled(), torch.get_float32_matmul_precision()), \
        "global tf32 settings not restored"
    for c, r in zip(configs, many):
        ref = train(c, device="cuda")
        assert r.device.startswith("cuda") and r.backend == "torch"
        assert_allclose(f"W m={c.m} gamma={c.gamma}", r.W, ref.W, rtol=1e-4, atol=5e-6)
        assert r.final_loss == pytest.approx(ref.final_loss, rel=1e-5)


class _CountReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts reads of a tensor value back to the host (bool(t), t.item(), float(t))."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


def test_training_steps_read_nothing_back_from_the_device():
    """A host read stalls a GPU queue: a step of either torch trainer does none (the data's p
    was checked once, when it was built)."""
    from superkern.toy.reference import ReferenceTrainer

    configs = _mix(steps=8)
    batched, alone = BatchedTrainer(configs, "cpu"), ReferenceTrainer(configs[1], "cpu")
    for trainer in (batched, alone):
        with _CountReads() as mode:
            for _ in range(5):
                trainer.step()
        assert mode.reads == 0, f"{type(trainer).__name__}: {mode.reads} reads in 5 steps"
    with _CountReads() as mode:  # the counter sees a read where there is one
        bool(torch.ones(1).sum() > 0)
    assert mode.reads == 1
