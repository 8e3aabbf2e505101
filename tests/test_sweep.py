"""Sweep layer: grid expansion, validation, grouping, the crash-safe store, resume after kill -9,
the row schema, and one tiny end-to-end sweep through the real toy engine."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from superkern.sweep import (apply_overrides, apply_variant, build_configs, expand,
                             group_configs, prepare, run_sweep)
from superkern.sweep.grid import parse_experiment
from superkern.sweep.runner import ROW_KEYS
from superkern.sweep.store import ResultsStore, ResultsWarning, read_jsonl
from superkern.toy import ToyConfig

REPO = Path(__file__).resolve().parents[1]

# A fake trainer: no torch work, deterministic numbers, optional sleep per launch. Also used by
# the subprocess of the kill test (written out as a module there).
FAKE = textwrap.dedent('''
    import json, time
    from pathlib import Path

    class FakeResult:
        def __init__(self, config):
            self.config = config
            self.final_loss = 1.0 / config.m
            self.final_loss_std = 0.01 / config.m
            self.phi_half = 1.0 if config.gamma < 0 else config.m / config.n
            self.phi_1 = 0.5
            self.geometry = {"mean_sq_strong": 1.0 / config.m}

        def to_dict(self):
            return {"run_id": self.config.run_id, "config": self.config.to_dict(),
                    "final_loss": self.final_loss, "final_loss_std": self.final_loss_std,
                    "phi_half": self.phi_half, "phi_1": self.phi_1, "geometry": self.geometry,
                    "curve": [[1, 2.0], [self.config.steps, self.final_loss]], "seconds": 0.0,
                    "backend": "fake", "precision": self.config.precision, "device": "cpu"}

        def save(self, directory):
            d = Path(directory)
            d.mkdir(parents=True, exist_ok=True)
            p = d / f"{self.config.run_id}.safetensors"
            p.write_bytes(b"fake")
            return p

    def make_fake(sleep=0.0, calls=None):
        def train(configs, device=None, progress=None):
            if calls is not None:
                calls.append([c.run_id for c in configs])
            for s in range(1, 4):
                time.sleep(sleep / 3)
                if progress:
                    progress(s * len(configs) * configs[0].steps // 3,
                             len(configs) * configs[0].steps)
            return [FakeResult(c) for c in configs]
        return train
''')
_ns: dict = {}
exec(FAKE, _ns)  # noqa: S102 - test helper defined once, shared with the subprocess
make_fake = _ns["make_fake"]

DOC = {
    "experiment": {"name": "t"},
    "base": {"preset": None, "n": 64, "steps": 30, "batch": 16},
    "grid": {"data": [{"dist": "exponential"}, {"dist": "power", "alpha": 1.5}],
             "gamma": {"linspace": [-1.0, 1.0, 3]},
             "m": {"powers_of_2": [2, 4]}, "seeds": [0, 1]},
    "variants": {"quick": {"m": [4, 8], "steps": 10}},
}


def small_configs(**over):
    exp = apply_overrides(parse_experiment(DOC), [f"{k}={v}" for k, v in over.items()])
    return build_configs(expand(exp))


def test_expand_product_zip_generators_and_overrides():
    exp = parse_experiment(DOC)
    dicts = expand(exp)
    assert exp.size() == len(dicts) == 2 * 3 * 3 * 2
    assert {d["gamma"] for d in dicts} == {-1.0, 0.0, 1.0}
    assert {d["m"] for d in dicts} == {4, 8, 16}
    assert {d["seed"] for d in dicts} == {0, 1}
    assert all(("alpha" in d) == (d["dist"] == "power") for d in dicts)
    q = apply_variant(exp, "quick")
    assert {d["m"] for d in expand(q)} == {4, 8} and expand(q)[0]["steps"] == 10
    o = apply_overrides(exp, ["steps=200", "m=[10,20]", "gamma=0.5", 'dist="linear"'])
    d = expand(o)
    assert len(d) == 2 * 1 * 2 * 2 and {x["m"] for x in d} == {10, 20}
    assert all(x["dist"] == "linear" and x["steps"] == 200 and x["gamma"] == 0.5 for x in d)


def test_invalid_configs_rejected_before_any_work(tmp_path):
    calls: list = []
    exp = apply_overrides(parse_experiment(DOC), ["m=[8, 100]"])  # m=100 > n=64
    with pytest.raises(ValueError, match=r"12 of 24 configs are invalid(.|\n)*exceeds n=64"):
        configs = build_configs(expand(exp))
        run_sweep(configs, tmp_path, train_fn=make_fake(calls=calls), progress=False)
    assert calls == [] and not (tmp_path / "results.jsonl").exists()
    with pytest.raises(ValueError, match="unknown field"):
        expand(apply_overrides(parse_experiment(DOC), ["widht=3"]))


def test_builtin_experiments_expand_and_validate():
    sizes = {}
    for name in ("fig1", "small", "density", "fig17"):
        exp, configs = prepare(name)
        sizes[name] = len(configs)
        _, quick = prepare(name, quick=True)
        assert 0 < len(quick) <= 80
        assert len({c.run_id for c in configs}) == len(configs)
    assert sizes == {"fig1": 48, "small": 1020, "density": 540, "fig17": 408}, sizes
    _, fig1 = prepare("fig1")
    assert {c.m for c in fig1} == {2 ** k for k in range(3, 11)} and fig1[0].n == 10240
    assert {(c.steps, c.batch) for c in fig1} == {(20000, 2048)}
    _, code = prepare("fig1", variants=["code"])
    assert {(c.steps, c.batch) for c in code} == {(40000, 8192)}
    _, small = prepare("fig4b")  # alias of "small"
    assert sorted({c.m for c in small}) == [10, 15, 25, 39, 63, 100]
    assert len({c.alpha for c in small}) == 17 and len({c.gamma for c in small}) == 10
    _, dens = prepare("fig7")
    from superkern.toy import toy_probabilities
    es = sorted({round(float(toy_probabilities(c).sum()), 4) for c in dens})
    assert len(es) == 9 and es[0] == 1.0 and abs(es[-1] - 7.4855) < 1e-3, es


def test_grouping_shares_launches_and_chunks():
    configs = small_configs()
    configs += build_configs([{**c.to_dict(), "steps": 40} for c in configs[:5]])
    launches = group_configs(configs, max_instances=7)
    assert sum(len(lz.configs) for lz in launches) == len(configs)
    for lz in launches:
        assert len(lz.configs) <= 7
        assert len({(c.n, c.steps, c.batch, c.precision, c.backend) for c in lz.configs}) == 1
        ms = [c.m for c in lz.configs]
        assert ms == sorted(ms)  # widths sorted: little padding waste
    assert {lz.steps for lz in launches} == {30, 40}
    with pytest.raises(ValueError):
        group_configs(configs, max_instances=0)


def test_store_tolerates_and_repairs_partial_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultsStore(path)
    store.append({"run_id": "a", "x": 1})
    store.append({"run_id": "b", "x": 2})
    with open(path, "ab") as f:
        f.write(b'{"run_id": "c", "x"')  # a kill in the middle of a write
    with pytest.warns(ResultsWarning, match="partial last line"):
        rows = read_jsonl(path)
    assert [r["run_id"] for r in rows] == ["a", "b"]
    with pytest.warns(ResultsWarning, match="removed a partial"):
        assert store.repair() > 0
    store.append({"run_id": "c", "x": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["run_id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_resume_skips_done_and_rows_match_schema(tmp_path):
    configs = small_configs()
    calls: list = []
    s1 = run_sweep(configs[:10], tmp_path, experiment="t", train_fn=make_fake(calls=calls),
                   max_instances=4, progress=False)
    assert (s1.trained, s1.skipped, s1.launches) == (10, 0, 3)
    s2 = run_sweep(configs, tmp_path, experiment="t", train_fn=make_fake(calls=calls),
                   max_instances=4, progress=True)
    assert (s2.trained, s2.skipped) == (len(configs) - 10, 10)
    rows = read_jsonl(tmp_path / "results.jsonl")
    assert sorted(r["run_id"] for r in rows) == sorted(c.run_id for c in configs)
    trained = [rid for call in calls for rid in call]
    assert len(trained) == len(set(trained)) == len(configs)
    for r in rows:
        missing = [k for k in ROW_KEYS if k not in r]
        assert not missing, missing
        assert ToyConfig.from_dict(r["config"]).run_id == r["run_id"]
        assert r["seed"] == r["config"]["seed"]
        assert r["weights"].startswith("weights/") and (tmp_path / r["weights"]).is_file()
        assert r["versions"]["torch"] and r["versions"]["superkern"]
        assert isinstance(r["final_loss"], float) and r["launch"]["instances"] >= 1



def test_group_by_reaches_the_trainer(tmp_path):
    """``group_by`` (argument or ``[sweep]`` option) is passed to the trainer; None leaves
    the trainer's protocol (and train_many's default, "bucket") untouched."""
    seen: list = []
    fake = make_fake()

    def train(configs, device=None, progress=None, **kw):
        seen.append(kw)
        return fake(configs, device=device, progress=progress)

    configs = small_configs()[:4]
    run_sweep(configs, tmp_path / "a", train_fn=train, progress=False)
    run_sweep(configs, tmp_path / "b", train_fn=train, progress=False, group_by="width")
    assert seen[0] == {} and seen[-1] == {"group_by": "width"}
    # Old-style trainers without the keyword keep working when it is not given.
    run_sweep(configs, tmp_path / "c", train_fn=make_fake(), progress=False)
    with pytest.raises(ValueError, match="unknown group_by 'widths'"):
        run_sweep(configs, tmp_path / "d", train_fn=train, progress=False, group_by="widths")
    assert not (tmp_path / "d").exists()
    exp = apply_overrides(parse_experiment(DOC), ["group_by=\"none\""])
    assert exp.sweep["group_by"] == "none"
    from superkern.sweep import sweep

    toml = tmp_path / "e.toml"
    toml.write_text('[base]\npreset = "small"\nn = 48\nsteps = 10\nbatch = 8\n'
                    '[grid]\nm = [3, 20]\n[sweep]\ngroup_by = "none"\n')
    sweep(str(toml), tmp_path / "e", train_fn=train, progress=False)
    assert seen[-1] == {"group_by": "none"}
    sweep(str(toml), tmp_path / "f", train_fn=train, progress=False, group_by="bucket")
    assert seen[-1] == {"group_by": "bucket"}

KILL_SCRIPT = '''
import sys
sys.path.insert(0, {repo!r})
from fake_trainer import make_fake
from superkern.sweep import apply_overrides, build_configs, expand, run_sweep
from superkern.sweep.grid import parse_experiment
doc = {doc!r}
configs = build_configs(expand(parse_experiment(doc)))
run_sweep(configs, sys.argv[1], train_fn=make_fake(sleep=0.3), max_instances=2,
          progress=False)
'''


def test_kill_9_mid_sweep_then_resume(tmp_path):
    (tmp_path / "fake_trainer.py").write_text(FAKE)
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(repo=str(REPO), doc=DOC))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:  # wait for a few launches to land, then kill mid-sweep
        if results.exists() and results.read_bytes().count(b"\n") >= 5:
            break
        if proc.poll() is not None:
            pytest.fail(f"sweep exited early: {proc.communicate()[1].decode()[-2000:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(read_jsonl(results))
    configs = build_configs(expand(parse_experiment(DOC)))
    assert 5 <= n_before < len(configs), n_before
    calls: list = []
    s = run_sweep(configs, out, train_fn=make_fake(calls=calls), max_instances=2,
                  progress=False)
    rows = read_jsonl(results)
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(configs), (len(ids), len(set(ids)), len(configs))
    assert s.skipped == n_before and s.trained == len(configs) - n_before
    assert not list((out / "weights").glob(".*.tmp"))  # no stray temp file became visible


def test_cli_sweep_and_fit_roundtrip(tmp_path, capsys):
    from superkern.cli import main

    toml = tmp_path / "e.toml"
    toml.write_text('[experiment]\nname = "cli"\n[base]\npreset = "small"\nn = 48\n'
                    'steps = 40\nbatch = 32\nalpha = 1.5\n[grid]\ngamma = [-1.0, 0.5]\n'
                    'm = [3, 6, 12]\n')
    assert main(["sweep", str(toml), "--out", str(tmp_path / "o"), "--dry-run",
                 "--set", "m=[4,8,16]"]) == 0
    assert "6 valid configs" in capsys.readouterr().out
    rc = main(["sweep", str(toml), "--out", str(tmp_path / "o"), "--device", "cpu",
               "--no-progress", "--set", "m=[4,8,16]"])
    assert rc == 0
    rows = read_jsonl(tmp_path / "o" / "results.jsonl")
    assert len(rows) == 6 and all(r["device"] == "cpu" for r in rows)
    assert all(r["final_loss"] > 0 and 0 <= r["phi_half"] <= 1 for r in rows)
    assert all((tmp_path / "o" / r["weights"]).is_file() for r in rows)
    assert main(["sweep", str(toml), "--out", str(tmp_path / "o"), "--device", "cpu",
                 "--no-progress", "--set", "m=[4,8,16]"]) == 0
    assert "0 trained, 6 already done" in capsys.readouterr().out
    assert main(["fit", str(tmp_path / "o"), "--json", str(tmp_path / "fit.json")]) == 0
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert len(fit["cells"]) == 2 and all(c["fit"]["n_points"] == 3 for c in fit["cells"])
    assert main(["fit", str(tmp_path / "o"), "--range", "m<=8", "--json",
                 str(tmp_path / "fit8.json")]) == 0
    fit8 = json.loads((tmp_path / "fit8.json").read_text())  # 2 widths: too few for a line
    assert all(c["fit"] is None and "leaves 2 point" in c["error"] for c in fit8["cells"])
    capsys.readouterr()
    assert main(["fit", str(tmp_path / "o"), "--range", "middle"]) == 2
    assert "unknown fit range 'middle'" in capsys.readouterr().err


# --- sweeps past one GPU: shards ------------------------------------------------------------

def test_shard_and_devices_arguments_are_checked():
    from superkern.sweep.shard import parse_shard, resolve_devices

    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1 / 1 ") == (1, 1)
    for bad, msg in (("0/2", "K=0, N=2"), ("3/2", "K=3, N=2"), ("1/0", "K=1, N=0"),
                     ("a/b", "must be K/N"), ("2", "must be K/N")):
        with pytest.raises(ValueError, match=msg):
            parse_shard(bad)
    assert resolve_devices("cpu, cpu") == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_devices("cpu,tpu")
    with pytest.raises(ValueError, match="no device"):
        resolve_devices(" , ")
    import torch

    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"cuda:{seen} requested but torch sees {seen}"):
        resolve_devices(f"cuda:{seen}")


def test_partition_is_complete_balanced_and_order_free():
    from superkern.sweep.shard import model_cost, partition

    configs = small_configs(n=256, m="[2, 4, 20, 40, 100]")  # buckets 16, 16, 32, 64, 128
    ids = sorted(c.run_id for c in configs)
    biggest = max(model_cost(c) for c in configs)
    for count in (1, 2, 3, 5, 7, len(configs) + 3):
        parts = partition(configs, count)
        assert len(parts) == count
        flat = [c.run_id for part in parts for c in part]
        assert sorted(flat) == ids  # every model once, none twice
        loads = [sum(model_cost(c) for c in part) for part in parts]
        assert max(loads) - min(loads) <= biggest
        for part in parts:  # grid order kept inside a shard
            assert [configs.index(c) for c in part] == sorted(configs.index(c) for c in part)
        shuffled = list(configs)
        random.Random(count).shuffle(shuffled)
        for other in (list(reversed(configs)), shuffled):
            assert [sorted(c.run_id for c in p) for p in partition(other, count)] == \
                [sorted(c.run_id for c in p) for p in parts]
    with pytest.raises(ValueError, match="shard count must be >= 1, got 0"):
        partition(configs, 0)
    with pytest.raises(ValueError, match="61 configs, 60 distinct run ids"):
        partition(configs + configs[:1], 2)


def test_shards_train_every_model_once_and_readers_merge_them(tmp_path):
    from superkern.analysis.tables import load_results
    from superkern.sweep import results_files

    configs = small_configs()
    calls: list = []
    # Some models done before sharding (an earlier unsharded run): no shard retrains them.
    run_sweep(configs[:5], tmp_path, train_fn=make_fake(calls=calls), progress=False)
    summaries = {}
    for k in (2, 3, 1):  # shards start in any order, at different times
        summaries[k] = run_sweep(configs, tmp_path, train_fn=make_fake(calls=calls),
                                 max_instances=4, progress=False, shard=(k, 3))
        assert summaries[k].results_path.endswith(f"results.shard-{k}-of-3.jsonl")
        assert f"(shard {k}/3)" in summaries[k].text()
    assert sum(s.total for s in summaries.values()) == len(configs)
    assert sum(s.skipped for s in summaries.values()) == 5
    trained = [rid for call in calls for rid in call]
    assert sorted(trained) == sorted(c.run_id for c in configs)  # each model exactly once
    files = results_files(tmp_path)
    assert [f.name for f in files] == ["results.jsonl"] + [
        f"results.shard-{k}-of-3.jsonl" for k in (1, 2, 3)]
    rows = [r for f in files for r in read_jsonl(f)]
    assert sorted(r["run_id"] for r in rows) == sorted(c.run_id for c in configs)
    # Reruns, sharded again, re-split or unsharded, train nothing.
    again = run_sweep(configs, tmp_path, train_fn=make_fake(calls=calls), progress=False,
                      shard=(1, 3))
    assert (again.trained, again.skipped) == (0, again.total)
    for shard in ((1, 2), (2, 2), None):
        s = run_sweep(configs, tmp_path, train_fn=make_fake(calls=calls), progress=False,
                      shard=shard)
        assert s.trained == 0
    res = load_results(tmp_path)
    assert len(res.runs) == len(configs) and len(res.files) == 4
    assert "4 files" in res.caption()
    assert all(r.weights is not None and r.weights.is_file() for r in res.runs)
    with pytest.warns(UserWarning, match="reading 1 of the 4 results files"):
        assert len(load_results(tmp_path / "results.jsonl").runs) == 5
    # A folder with shard files only (no results.jsonl) reads too.
    (tmp_path / "results.jsonl").unlink()
    assert len(load_results(tmp_path).runs) == len(configs) - 5
    with pytest.raises(FileNotFoundError, match="has 3 results file.*pass the folder"):
        load_results(tmp_path / "results.jsonl")
    for f in results_files(tmp_path)[1:]:
        f.unlink()
    one = load_results(tmp_path)  # one shard file: named as itself, not results.jsonl
    assert one.path.name == "results.shard-1-of-3.jsonl" and one.path.is_file()
    assert "results.shard-1-of-3.jsonl" in one.caption()
    with pytest.raises(FileNotFoundError, match="no results file in"):
        load_results(tmp_path / "weights")


def test_devices_starts_one_shard_process_per_device(tmp_path, capsys, monkeypatch):
    from superkern.cli import main
    from superkern.sweep import results_files

    toml = tmp_path / "e.toml"
    toml.write_text('[experiment]\nname = "dev"\n[base]\npreset = "small"\nn = 48\n'
                    'steps = 20\nbatch = 16\nalpha = 1.5\n[grid]\ngamma = [-1.0, 0.5]\n'
                    'm = [3, 6, 12]\n')
    out = tmp_path / "o"
    assert main(["sweep", str(toml), "--out", str(out), "--devices", "cpu,cpu",
                 "--dry-run"]) == 0
    assert "shard 2/2: 3 models" in capsys.readouterr().out
    assert main(["sweep", str(toml), "--out", str(out), "--devices", "cpu,cpu",
                 "--no-progress", "--no-weights"]) == 0
    text = capsys.readouterr().out
    assert "shard 1/2 on cpu: ok" in text and "shard 2/2 on cpu: ok" in text
    assert [f.name for f in results_files(out)] == ["results.shard-1-of-2.jsonl",
                                                     "results.shard-2-of-2.jsonl"]
    ids = [r["run_id"] for f in results_files(out) for r in read_jsonl(f)]
    assert len(ids) == len(set(ids)) == 6
    assert (out / "logs" / "shard-1-of-2.log").is_file()
    assert main(["fit", str(out), "--json", str(tmp_path / "fit.json")]) == 0
    assert len(json.loads((tmp_path / "fit.json").read_text())["cells"]) == 2
    # A shard that fails is reported with its error, and the exit code says so (without the
    # interpreter, the triton backend refuses CPU tensors in the shard processes).
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert main(["sweep", str(toml), "--out", str(tmp_path / "bad"), "--devices", "cpu,cpu",
                 "--no-progress", "--set", 'backend="triton"']) != 0
    text = capsys.readouterr().out
    assert "shard 1/2 on cpu: FAILED" in text and "needs a CUDA device" in text
    for argv, msg in ((["--shard", "1/2", "--devices", "cpu"], "do not combine"),
                      (["--device", "cpu", "--devices", "cpu"], "do not combine")):
        assert main(["sweep", str(toml), "--out", str(out), *argv]) == 2
        assert msg in capsys.readouterr().err


def test_devices_parent_stopped_stops_every_shard(tmp_path):
    toml = tmp_path / "e.toml"
    toml.write_text('[base]\npreset = "small"\nn = 64\nsteps = 200000\nbatch = 64\n'
                    '[grid]\nm = [3, 4]\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "superkern", "sweep", str(toml), "--out",
                             str(tmp_path / "o"), "--devices", "cpu,cpu", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # "2 shard(s) started on cpu, cpu (pids A, B); logs in ..."
    pids = [int(x) for x in first.split("(pids ")[1].split(")")[0].split(", ")]
    assert len(pids) == 2, first
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)  # a second signal must not cut the clean-up short
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, (out, err)
    assert "rerun the same command to resume" in err and "Traceback" not in err
    for pid in pids:  # both shards are gone (not left running on their own)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_shard_environment_and_forwarded_options(monkeypatch):
    from superkern.cli import build_parser
    from superkern.commands.sweep import _child_argv
    from superkern.sweep.shard import _child_env

    for visible, want in ((None, "1"), ("4,5", "5"), ("GPU-a, GPU-b", "GPU-b")):
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        env, dev = _child_env("cuda:1")
        assert (env["CUDA_VISIBLE_DEVICES"], dev) == (want, "cuda")
    assert _child_env("cpu")[1] == "cpu"
    # Every option a shard must repeat survives the trip parent -> child argv -> parser.
    parser = build_parser()
    parent = parser.parse_args(["sweep", "fig1", "--quick", "--variant", "a", "--variant", "b",
                                "--set", "n=64", "--set", "m=[4,8]", "--max-instances", "7",
                                "--no-weights", "--keep-going", "--devices", "cpu,cpu",
                                "--out", "o"])
    child = parser.parse_args(["sweep", *_child_argv(parent), "--out", "o", "--shard", "1/2",
                               "--device", "cpu", "--no-progress"])
    own = {"shard", "device", "devices", "no_progress", "func"}
    mismatched = {k for k, v in vars(parent).items() if k not in own and vars(child)[k] != v}
    assert not mismatched, mismatched


def test_a_shard_runs_once_and_only_on_its_siblings_grid(tmp_path):
    from superkern.sweep.shard import claim_shard

    configs = small_configs()
    with claim_shard(tmp_path, (1, 2), configs):
        with pytest.raises(ValueError, match=r"shard 1/2 is already running .* \(held by pid"):
            with claim_shard(tmp_path, (1, 2), configs):
                pass
        with claim_shard(tmp_path, (2, 2), configs):  # another shard: fine
            pass
    with claim_shard(tmp_path, (1, 2), configs):  # released after the run
        pass
    with pytest.raises(ValueError, match="records another grid .*same CONFIG"):
        run_sweep(configs[:-1], tmp_path, train_fn=make_fake(), progress=False, shard=(2, 2))
    assert not (tmp_path / "results.shard-2-of-2.jsonl").exists()
    # Another N is another split: allowed, and it only trains what is missing.
    s = run_sweep(configs[:-1], tmp_path, train_fn=make_fake(), progress=False, shard=(1, 3))
    assert s.trained == s.total > 0
