"""Sweeps past one GPU: shard arguments, the grid split, exactly-once training across shards,
readers merging shard files, one shard process per device, and stopping them cleanly."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from superkern.sweep import run_sweep
from superkern.sweep.devices import PARENT_ENV
from superkern.sweep.store import ResultsWarning, read_jsonl
from tests.sweep_fakes import make_fake, small_configs

REPO = Path(__file__).resolve().parents[1]


def test_shard_and_devices_arguments_are_checked(tmp_path, capsys):
    from superkern.sweep.devices import resolve_devices
    from superkern.sweep.shard import parse_shard

    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1 / 1 ") == (1, 1)
    for bad, msg in (("0/2", "K=0, N=2"), ("3/2", "K=3, N=2"), ("1/0", "K=1, N=0"),
                     ("a/b", "must be K/N"), ("2", "must be K/N"),
                     ("1/99999999999999999999", "at most 100000 shards")):
        with pytest.raises(ValueError, match=msg):
            parse_shard(bad)
    assert resolve_devices("cpu, cpu") == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_devices("cpu,tpu")
    with pytest.raises(ValueError, match="no device"):
        resolve_devices(" , ")
    with pytest.raises(ValueError, match="an empty entry in 'cpu,,cpu'"):
        resolve_devices("cpu,,cpu")
    from superkern.cli import main as cli_main

    # --devices '' (an unset shell variable) is an error, not a silent unsharded run
    assert cli_main(["sweep", "small", "--quick", "--devices", "", "--out",
                     str(tmp_path / "o")]) == 2
    assert "--devices: no device in ''" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
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
    # Shards past the number of models are empty, and the rest match the split into as many
    # shards as models (the heap keeps only those: the old min over every shard per model
    # took O(models x N)).
    huge = partition(configs, 100_000)
    assert len(huge) == 100_000 and not any(huge[len(configs):])
    assert huge[:len(configs)] == partition(configs, len(configs))
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
    # The report quotes this run's lines only, not those of an earlier run in the same log.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    (tmp_path / "bad" / "logs").mkdir(parents=True)
    (tmp_path / "bad" / "logs" / "shard-1-of-2.log").write_text("an earlier run's line\n")
    assert main(["sweep", str(toml), "--out", str(tmp_path / "bad"), "--devices", "cpu,cpu",
                 "--no-progress", "--set", 'backend="triton"']) != 0
    text = capsys.readouterr().out
    assert "shard 1/2 on cpu: FAILED" in text and "needs a CUDA device" in text
    assert "an earlier run's line" not in text
    for argv, msg in ((["--shard", "1/2", "--devices", "cpu"], "do not combine"),
                      (["--device", "cpu", "--devices", "cpu"], "do not combine")):
        assert main(["sweep", str(toml), "--out", str(out), *argv]) == 2
        assert msg in capsys.readouterr().err


def _start_long_devices_run(tmp_path):
    """A `--devices cpu,cpu` sweep that would run for hours, and the pids of its shards."""
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
    return proc, pids


def test_devices_parent_stopped_stops_every_shard(tmp_path):
    proc, pids = _start_long_devices_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)  # a second signal must not cut the clean-up short
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, (out, err)
    assert "rerun the same command to resume" in err and "Traceback" not in err
    for pid in pids:  # both shards are gone (not left running on their own)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_devices_parent_killed_takes_its_shards_along(tmp_path):
    """kill -9 cannot be caught: the shards end with their parent all the same."""
    proc, pids = _start_long_devices_run(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 60
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _running(pid)]
    for pid in alive:  # a failure leaves no process behind
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"shard(s) {alive} outlived their killed parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_shard_whose_starter_is_gone_stops_and_one_behind_a_wrapper_runs():
    code = ("from superkern.sweep.devices import follow_parent\n"
            "follow_parent()\n"
            "import time; time.sleep(0.2); print('still running')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    r = subprocess.run([sys.executable, "-c", code], env={**env, PARENT_ENV: str(gone.pid)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGTERM and "has ended; stopping" in r.stderr, r
    # A wrapper between the --devices process (alive: this one) and the shard is no reason
    # to stop.
    r = subprocess.run(["/bin/sh", "-c", f'"{sys.executable}" -c "$0"; exit $?', code],
                       env={**env, PARENT_ENV: str(os.getpid())}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "still running" in r.stdout, r


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, reaped by no one yet, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_shard_environment_and_forwarded_options(monkeypatch):
    from superkern.cli import build_parser
    from superkern.commands.sweep import _child_argv
    from superkern.sweep.devices import _child_env

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
    # Another N is another split: refused while a shard of the first runs (the two would
    # train some models twice) ...
    with claim_shard(tmp_path, (2, 2), configs):
        with pytest.raises(ValueError, match=r"shard 1/3: shards of another split are "
                           r"running on .* \(2/2\)"):
            run_sweep(configs[:-1], tmp_path, train_fn=make_fake(), progress=False,
                      shard=(1, 3))
    assert not (tmp_path / "results.shard-1-of-3.jsonl").exists()
    # ... and allowed once it stopped: it only trains what is missing.
    s = run_sweep(configs[:-1], tmp_path, train_fn=make_fake(), progress=False, shard=(1, 3))
    assert s.trained == s.total > 0


@pytest.mark.skipif(sys.platform == "win32", reason="folder locks use POSIX flock")
def test_an_unsharded_run_never_shares_its_folder(tmp_path):
    """Two unsharded runs on one folder, or one beside shards, would each train every model
    they see missing: the second fails at once. Shards share the folder with each other."""
    from superkern.sweep.shard import hold_folder

    configs = small_configs()
    with hold_folder(tmp_path, sharded=False):  # an unsharded run in progress
        for shard in (None, (1, 2)):  # naming it (the message had no holder)
            with pytest.raises(ValueError, match=rf"unsharded sweep \(pid {os.getpid()} on "
                                                 r".*\) is already running on"):
                run_sweep(configs, tmp_path, train_fn=make_fake(), progress=False, shard=shard)
    assert not list(tmp_path.glob("results*.jsonl"))  # refused before anything was trained
    with hold_folder(tmp_path, sharded=True):  # a shard in progress
        with pytest.raises(ValueError, match=r"another sweep \(--shard processes\) is "
                                             "already running"):
            run_sweep(configs, tmp_path, train_fn=make_fake(), progress=False)
        s = run_sweep(configs, tmp_path, train_fn=make_fake(), progress=False, shard=(2, 2))
        assert s.trained == s.total > 0
    s = run_sweep(configs, tmp_path, train_fn=make_fake(), progress=False)  # released
    assert s.trained + s.skipped == len(configs)


@pytest.mark.skipif(sys.platform == "win32", reason="folder locks use POSIX flock")
def test_a_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch):
    """flock failing for another reason than a holder (ENOLCK on some network file systems)
    is not "already running": the run warns and goes on, unprotected."""
    import errno
    import fcntl
    from types import SimpleNamespace

    import superkern.sweep.shard as sh

    def no_locks(fd, mode):
        raise OSError(errno.ENOLCK, "No locks available")

    # the folder lock's view of fcntl only (the results file keeps its own lock)
    monkeypatch.setattr(sh, "fcntl", SimpleNamespace(
        flock=no_locks, LOCK_SH=fcntl.LOCK_SH, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB))
    with pytest.warns(UserWarning, match="cannot lock the sweep folder .*No locks available"):
        s = run_sweep(small_configs(), tmp_path, train_fn=make_fake(), progress=False)
    assert s.trained == s.total > 0


def test_an_unsharded_run_tidies_what_kills_left_in_the_folder(tmp_path):
    """A torn last line in a shard's file and hour-old temporaries of interrupted atomic
    writes are removed by an unsharded run (it holds the folder alone); a fresh temporary,
    perhaps being written by another command, is kept."""
    configs = small_configs()
    run_sweep(configs, tmp_path, train_fn=make_fake(), progress=False, shard=(1, 2))
    shard_file = tmp_path / "results.shard-1-of-2.jsonl"
    data = shard_file.read_bytes()
    shard_file.write_bytes(data[:-40])  # the last row cut short
    old, new = tmp_path / "weights" / ".x.safetensors.ab.tmp", tmp_path / ".sweep.json.cd.tmp"
    for t in (old, new):
        t.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    with pytest.warns(ResultsWarning, match="removed a partial last line"):
        s = run_sweep(configs, tmp_path, train_fn=make_fake(), progress=False)
    assert shard_file.read_bytes().endswith(b"\n") and len(shard_file.read_bytes()) < len(data)
    assert not old.exists() and new.exists()
    ids = [r["run_id"] for f in sorted(tmp_path.glob("results*.jsonl")) for r in read_jsonl(f)]
    assert sorted(ids) == sorted(c.run_id for c in configs) and s.trained >= 1
