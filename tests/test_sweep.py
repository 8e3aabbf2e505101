"""Sweep layer: grid expansion, validation, grouping, the crash-safe store, resume after kill -9,
the row schema, and one tiny end-to-end sweep through the real toy engine."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
from tests.sweep_fakes import DOC, FAKE, make_fake, small_configs

REPO = Path(__file__).resolve().parents[1]


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
    with pytest.raises(ValueError, match=r"12 of 24 configs are invalid(.|\n)*exceeds n=64") as e:
        build_configs(expand(exp))
    assert str(e.value).count("exceeds n=64") == 1 and "(and 11 more config(s))" in str(e.value)
    with pytest.raises(ValueError, match="group_by"):  # a bad option: no launch starts
        run_sweep(small_configs(), tmp_path, train_fn=make_fake(calls=calls), progress=False,
                  group_by="widths")
    assert calls == [] and not (tmp_path / "results.jsonl").exists()
    with pytest.raises(ValueError, match="unknown field"):
        expand(apply_overrides(parse_experiment(DOC), ["widht=3"]))


def test_set_values_and_sweep_options_checked(capsys):
    from superkern.cli import main
    from superkern.sweep.grid import parse_value

    assert parse_value("linear") == "linear" and parse_value("[4, 8]") == [4, 8]
    assert parse_value("false") is False and parse_value("4e-11") == 4e-11
    for bad, msg in (("m=[4,8", "not a TOML value"), ("save_weights=no", "true or false"),
                     ("group_by=foo", "group_by must be one of"),
                     ("max_instances=0", "max_instances must be an integer >= 1")):
        assert main(["sweep", "fig1", "--quick", "--dry-run", "--set", bad]) == 2
        assert msg in capsys.readouterr().err, bad
    # Tiny values survive the rounding of generated floats; repeated points are counted once.
    assert main(["sweep", "fig1", "--quick", "--dry-run", "--set", "lr=4e-11",
                 "--set", "seeds=[0,0]"]) == 0
    out = capsys.readouterr().out
    assert "30 valid configs (30 repeated grid point(s) dropped)" in out and "lr=4e-11" in out


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



def test_resume_reads_results_once_and_names_lost_weights(tmp_path, monkeypatch):
    """A resume reads each results file once (the plan and the test-loss backfill share the
    rows), and a finished model whose weights file is gone is named in a warning: its row is
    kept and it is not retrained."""
    import superkern.sweep.shard as shard_mod

    configs = small_configs()
    calls: list = []
    run_sweep(configs[:6], tmp_path, train_fn=make_fake(calls=calls), progress=False)
    rows = read_jsonl(tmp_path / "results.jsonl")
    (tmp_path / rows[2]["weights"]).unlink()
    reads: list = []
    real = shard_mod.read_jsonl
    monkeypatch.setattr(shard_mod, "read_jsonl",
                        lambda path, **kw: reads.append(Path(path).name) or real(path, **kw))
    with pytest.warns(UserWarning, match=r"1 finished model\(s\) have lost their saved "
                      r"weights \(first: " + rows[2]["weights"].replace(".", r"\.")):
        s = run_sweep(configs, tmp_path, train_fn=make_fake(calls=calls), progress=False)
    assert reads == ["results.jsonl"]
    assert (s.skipped, s.trained) == (6, len(configs) - 6)
    stored = [r["run_id"] for r in read_jsonl(tmp_path / "results.jsonl")]
    assert stored.count(rows[2]["run_id"]) == 1
    with warnings.catch_warnings():  # without saving weights, lost ones are not news
        warnings.simplefilter("error")
        run_sweep(configs, tmp_path, train_fn=make_fake(calls=calls), progress=False,
                  save_weights=False)



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
    out = capsys.readouterr().out
    assert "6 valid configs" in out and f"{tmp_path / 'o'}: no results yet" in out
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
    # Another grid into the same folder: a warning, the old manifest kept, cells told apart.
    with pytest.warns(UserWarning, match="already holds results of another grid"):
        assert main(["sweep", str(toml), "--out", str(tmp_path / "o"), "--device", "cpu",
                     "--no-progress", "--set", "m=[4,8,16]", "--set", "steps=41",
                     "--set", "gamma=[-1.0]"]) == 0
    manifest = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert len(manifest["previous"]) == 1 and "set:m=[4,8,16]" in manifest["previous"][0][
        "applied"][0] and manifest["base"]["steps"] == 41
    assert main(["fit", str(tmp_path / "o"), "--json", str(tmp_path / "fit2.json")]) == 0
    labels = sorted(c["label"] for c in json.loads((tmp_path / "fit2.json").read_text())["cells"])
    assert labels == ["power a=1.5, gamma=+0.5", "power a=1.5, gamma=-1, steps=40",
                      "power a=1.5, gamma=-1, steps=41"], labels


def test_a_device_or_engine_that_cannot_run_is_refused_before_the_folder_is_touched(
        tmp_path, capsys):
    from superkern.cli import main

    configs = small_configs()
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="unknown device 'cdua'"):
        run_sweep(configs, out, device="cdua", progress=False)
    with pytest.raises(ValueError, match="precision 'bf16' needs the triton backend"):
        run_sweep([c.replace(precision="bf16") for c in configs], out, device="cpu",
                  progress=False)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            run_sweep(configs, out, device="cuda", progress=False)
        assert main(["sweep", "fig1", "--quick", "--out", str(out), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists()
    assert main(["sweep", "fig1", "--quick", "--dry-run", "--device", "cdua"]) == 2
    assert "unknown device 'cdua'" in capsys.readouterr().err
    # Only the models a run would train count: a finished bf16 grid (trained elsewhere; a
    # fake trainer here) resumes on a CPU with nothing to do, and a shard is judged by its own
    bf16 = [c.replace(precision="bf16") for c in configs]
    done = tmp_path / "done"
    run_sweep(bf16, done, train_fn=make_fake(), progress=False)
    s = run_sweep(bf16, done, device="cpu", progress=False)
    assert (s.trained, s.skipped) == (0, len(configs))
    mixed = bf16[:4] + configs[4:]
    from superkern.sweep.shard import shard_configs

    first = {c.run_id for c in shard_configs(mixed, (1, 2))}
    part = tmp_path / "part"
    run_sweep([c for c in mixed if c.precision == "bf16"], part, train_fn=make_fake(),
              progress=False)  # the bf16 models are done; fp32 ones remain for both shards
    s = run_sweep(mixed, part, device="cpu", progress=False, shard=(1, 2))
    assert s.trained == len(first - {c.run_id for c in bf16[:4]})


def test_progress_bar_counts_steps_across_launches_and_models_done(capsys):
    """The bar counts launch steps (it/s = steps per second, a right ETA) from the trainer's
    model-step callback, never backwards or past a launch's end; models done in the postfix."""
    pytest.importorskip("tqdm")
    from superkern.sweep.progress import LaunchBar

    bar = LaunchBar(total_steps=300, total_models=5, enabled=True)
    bar.start_launch(100)
    bar.callback(150, 300)          # 3 models, half their steps: step 50 of this launch
    assert bar.bar.n == 50
    bar.callback(90, 300)           # a late, smaller report does not move it back
    assert bar.bar.n == 50
    bar.finish_launch(100, 3)
    assert (bar.bar.n, bar.models_done) == (100, 3)
    bar.start_launch(200)
    bar.callback(400, 400)
    bar.finish_launch(200, 2)
    assert (bar.bar.n, bar.models_done) == (300, 5)
    bar.close()
    assert "models 5/5" in capsys.readouterr().err
    quiet = LaunchBar(total_steps=300, total_models=5, enabled=False)
    quiet.start_launch(300)
    quiet.callback(1, 2)
    quiet.finish_launch(300, 5)
    assert quiet.bar is None and quiet.models_done == 5
