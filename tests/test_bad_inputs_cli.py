"""Bad command lines (from an adversarial audit): every one ends in a clear error (exit 2)
before any work, or completes correctly; nothing computed is lost to a bad output path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from superkern.cli import main
from tests.sweep_fakes import make_fake, small_configs

TRAIN = ["train", "--preset", "none", "--n", "20", "--m", "4", "--steps", "4", "--batch", "4",
         "--device", "cpu", "--backend", "torch"]


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


def test_train_out_repairs_a_partial_row_and_checks_the_folder_first(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(TRAIN + ["--out", str(out)]) == 0
    path = out / "results.jsonl"
    path.write_bytes(path.read_bytes()[:-40])  # a run killed while writing its row
    with pytest.warns(UserWarning, match="removed a partial last line"):
        assert main(TRAIN[:6] + ["12"] + TRAIN[7:] + ["--out", str(out)]) == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["config"]["m"] for r in rows] == [12]  # the damaged row is gone, the new one whole
    afile = tmp_path / "afile"
    afile.write_text("x")
    capsys.readouterr()
    assert main(TRAIN + ["--out", str(afile)]) == 2
    captured = capsys.readouterr()
    assert "--out" in captured.err and "exists and is not a folder" in captured.err
    assert "run_id" not in captured.out  # refused before training, not after


def test_sweep_checks_its_weights_folder_before_training(tmp_path):
    from superkern.sweep import run_sweep

    (tmp_path / "weights").write_text("in the way")
    calls: list = []
    with pytest.raises(ValueError, match="the weights folder .*exists and is not a folder"):
        run_sweep(small_configs(), tmp_path, train_fn=make_fake(calls=calls), progress=False)
    assert calls == [] and not (tmp_path / "results.jsonl").exists()


@pytest.mark.parametrize("grid, match", [
    ("seed = [0, 1]\nseeds = [2]\nm = [4]", r"\[grid\] sets 'seed' twice"),
    ("m = { linspace = [4, 8, 0] }", "gives 0 values"),
    ("m = { linspace = [4, 8] }", r"linspace takes \[start, stop, count\]"),
    ("m = { powers_of_2 = [3, 1] }", "first exponent <= last exponent"),
    ("m = { geomspace = [0, 8, 3] }", "nonzero and of one sign"),
    ("gamma = { linspace = [0, 1, 2.5] }", "count must be a whole number"),
    ("m = [4]\ngamma = {}", "axis 'gamma': an empty table sets nothing"),
    ("m = [4]\ngamma = [-1.0, {}]", "axis 'gamma': an empty table sets nothing"),
    ("m = [4]\ngamma = { linspce = [-1, 1, 5] }",
     "axis 'gamma': 'linspce' is neither a generator .*linspace.* nor a config field"),
])
def test_bad_grids_name_the_axis(tmp_path, capsys, grid, match):
    toml = tmp_path / "g.toml"
    toml.write_text(f'[base]\npreset = "small"\nn = 64\n[grid]\n{grid}\n')
    assert main(["sweep", str(toml), "--dry-run"]) == 2
    assert pytest.importorskip("re").search(match, _err(capsys))


def test_experiment_names_and_sweep_options(tmp_path, capsys):
    toml = tmp_path / "g.toml"
    toml.write_text('[experiment]\nname = "../../elsewhere"\n[base]\nn = 64\nm = 4\n')
    assert main(["sweep", str(toml), "--dry-run"]) == 2
    assert "must be a plain name" in _err(capsys)
    spaced = tmp_path / "my sweep.toml"  # a file name with a space names the experiment
    spaced.write_text('[base]\npreset = "small"\nn = 64\nm = 4\n')
    assert main(["sweep", str(spaced), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("my sweep: 1 valid configs")
    assert main(["sweep", "fig1", "--quick", "--max-instances", "0"]) == 2
    assert "--max-instances must be >= 1, got 0" in _err(capsys)


def test_outputs_that_would_overwrite_each_other(tmp_path, capsys):
    counts = tmp_path / "c.txt"
    counts.write_text("".join(f"{int(1000 / k)}\n" for k in range(1, 60)))
    same = tmp_path / "x.png"
    assert main(["fit", "zipf", str(counts), "--plot", str(same), "--json", str(same)]) == 2
    assert "two outputs would write this file" in _err(capsys) and not same.exists()
    # a misspelt form of fit, and a misspelt tokenizer alias, are named with the right one
    assert main(["fit", "zipff", str(counts)]) == 2
    assert "'zipff' is neither a results folder or file" in (e := _err(capsys))
    assert "did you mean 'zipf'?" in e
    assert main(["fit", "zipf", str(counts), "--tokenizer", "smolm2"]) == 2
    assert "an alias: gemma3-270m, minilm, smollm2; did you mean 'smollm2'?" in _err(capsys)
    head = tmp_path / "h.npy"
    np.save(head, np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32))
    plots = tmp_path / "p"
    assert main(["probe", str(head), "--json", str(plots / "norms.png"), "--plots", str(plots),
                 "--no-progress"]) == 2
    assert "the plot norms.png in" in _err(capsys)
    # a plot that will not be written (no token counts) does not claim its name
    assert main(["probe", str(head), "--json", str(plots / "norm_vs_frequency.png"),
                 "--plots", str(plots), "--no-progress"]) == 0
    assert json.loads((plots / "norm_vs_frequency.png").read_text())["rows"]["n"] == 30
    capsys.readouterr()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["compare", str(head), str(head), "--plots", str(afile / "sub"),
                 "--no-progress"]) == 2
    assert "afile is a file, not a folder" in _err(capsys)
    assert main(["fit", "zipf", str(counts), "--json", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in _err(capsys)


def test_probe_json_to_stdout(tmp_path, capsys):
    head = tmp_path / "h.npy"
    np.save(head, np.random.default_rng(1).standard_normal((30, 4)).astype(np.float32))
    assert main(["probe", str(head), "--json", "-", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["rows"]["n"] == 30 and not (tmp_path / "-").exists()


@pytest.mark.parametrize("argv, match", [
    (["figures", "RES", "--dpi", "100000"], "dpi must be an integer in [10, 1200]"),
    (["figures", "RES", "--range", "foo"], "unknown fit range 'foo'"),
    (["figures", "RES", "--bootstrap", "-1"], "bootstrap resamples must be an integer >= 0"),
    (["fit", "RES", "--bootstrap", "-1"], "--bootstrap must be >= 0, got -1"),
    (["fit", "size-width", "--alpha-n", "0.35", "-0.02"], "finite standard error >= 0"),
    (["fit", "size-width", "--alpha-n", "nan", "0.02"], "needs a finite exponent"),
    (["fit", "RES", "--params", "exact"], "--params picks the parameter count 'fit size-width'"),
])
def test_analysis_options_out_of_range(results_file, capsys, argv, match):
    argv = [str(results_file) if a == "RES" else a for a in argv]
    assert main(argv) == 2
    assert match in _err(capsys)


@pytest.mark.parametrize("exc, rc, said", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (MemoryError("std::bad_alloc"), 2, "out of memory (std::bad_alloc)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "  # torch
                  "allocate memory: you tried to allocate 80000000000 bytes."), 2,
     "out of memory ([enforce fail"),
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"), 2,
     "a smaller --dpi or --max-instances)"),  # env has no --device to suggest
    (RuntimeError("a bug, not memory"), None, None),  # other errors are not disguised
])
def test_interrupt_and_out_of_memory_messages(monkeypatch, capsys, exc, rc, said):
    import superkern.commands.env as env_cmd

    def fail(args):
        raise exc

    monkeypatch.setattr(env_cmd, "run", fail)
    if rc is None:
        with pytest.raises(RuntimeError, match="a bug"):
            main(["env"])
        return
    assert main(["env"]) == rc
    assert said in _err(capsys)


@pytest.mark.parametrize("command, said, not_said", [
    ("sweep", "run the same command again to resume", "train saves"),
    ("train", "train saves its models only at the end", "run the same command again"),
    ("probe", "(writes are atomic).", "resume")])
def test_an_interrupt_says_what_resumes_for_that_command(monkeypatch, capsys, command, said,
                                                         not_said):
    import importlib

    mod = importlib.import_module(f"superkern.commands.{command}")

    def stop(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "run", stop)
    argv = {"sweep": ["sweep", "fig1"], "train": ["train"], "probe": ["probe"]}[command]
    assert main(argv) == 130
    err = _err(capsys)
    assert f"superkern {command}: interrupted" in err and said in err and not_said not in err


def test_an_unknown_option_shows_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["probe", "minilm", "--sample-main", "2000"])
    assert exc.value.code == 2
    err = _err(capsys)
    assert "usage: superkern probe" in err
    assert "superkern probe: error: unrecognized arguments: 2000" in err
    for argv in (["--bogus"], ["--bogus", "env"]):  # before the command: the top level's
        with pytest.raises(SystemExit):
            main(argv)
        err = _err(capsys)
        assert "superkern: error: unrecognized arguments: --bogus" in err, argv
        assert "usage: superkern [-h] [--version] COMMAND" in err, argv


def test_a_gpu_out_of_memory_error_suggests_the_cpu_where_there_is_a_device_option(
        monkeypatch, capsys):
    import superkern.commands.train as train_cmd

    def fail(args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(train_cmd, "run", fail)
    assert main(["train"]) == 2
    assert "--max-instances, or --device cpu to leave the GPU)" in _err(capsys)


def test_closed_stdout_stops_quietly():
    """`superkern ... | head`: the reader closes the pipe before the command writes, so its
    first write fails with EPIPE. The command exits 141 (as one killed by SIGPIPE would)
    and says nothing on stderr: no traceback, not even at Python's exit-time flush."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "superkern", "fit", "size-width"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err.decode()
    assert err.decode().strip() == ""


def test_another_broken_pipe_is_an_error(monkeypatch, capsys):
    """A broken pipe that is not stdout's (stdout still writable) is reported, not hidden."""
    import superkern.commands.env as env_cmd

    def fail(args):
        raise BrokenPipeError(32, "Broken pipe (a child process)")

    monkeypatch.setattr(env_cmd, "run", fail)
    assert main(["env"]) == 2
    assert "Broken pipe (a child process)" in _err(capsys)


def test_warnings_are_one_line_naming_the_command(results_file, tmp_path):
    """A warning reads like an error line ("superkern fit: warning: ..."), without Python's
    file:line prefix and the echoed source line."""
    import shutil
    import subprocess
    import sys

    shutil.copy(results_file, tmp_path / "results.jsonl")
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write("garbage line\n")
    proc = subprocess.run([sys.executable, "-m", "superkern", "fit", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.strip()]
    assert warned and all(line.startswith("superkern fit: warning: ") for line in warned), warned
    assert "skipping an unreadable line" in proc.stderr


@pytest.mark.parametrize("argv, what", [
    (["probe", ""], "path"), (["compare", "minilm", " "], "paths"), (["fit", ""], "target"),
    (["figures", ""], "results"), (["sweep", "fig1", "--quick", "--dry-run", "--out", ""], "--out"),
    (TRAIN + ["--out", ""], "--out"), (["probe", "minilm", "--json", ""], "--json"),
    (["probe", "minilm", "--markdown", ""], "--markdown"),
    (["fit", "zipf", "x.txt", "--save-counts", ""], "--save-counts")])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, capsys,
                                                                   argv, what):
    """Path('') is '.': `probe ''` probed a weights file in the working folder, `sweep --out ''`
    trained into it (its dry run used the default folder) and `train --out ''` saved nothing."""
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "w.npy", np.ones((4, 3), dtype=np.float32))
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"argument {what}: empty path; name a file or folder" in _err(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npy"]  # nothing written


@pytest.mark.parametrize("body, match", [
    ("base = [1, 2]", r"base must be a table \(\[base\]\), got list"),
    ("grid = 5", r"grid must be a table \(\[grid\]\), got int"),
    ("experiment = 5", "experiment must be a table"), ("sweep = 5", "sweep must be a table"),
    ("variants = 5", "variants must be a table"),
    ("[variants]\nquick = 5", r"variants.quick must be a table \(\[variants.quick\]\)")])
def test_toml_sections_that_are_not_tables(tmp_path, capsys, body, match):
    """They were AttributeError / TypeError tracebacks."""
    toml = tmp_path / "t.toml"
    toml.write_text(body + "\n")
    assert main(["sweep", str(toml), "--dry-run"]) == 2
    assert pytest.importorskip("re").search(match, _err(capsys))


def test_outputs_in_the_way_are_named_before_any_work(results_file, tmp_path, capsys):
    """figures --out on a file was '[Errno 17] File exists' after drawing; a file that cannot
    be created named the hidden temporary file instead of the one asked for."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["figures", str(results_file), "--out", str(afile), "--only", "fig1"]) == 2
    assert f"--out {afile}: exists and is not a folder" in _err(capsys)
    from superkern._atomic import write_atomic

    if Path("/proc").is_dir():  # a folder where no file can be created
        with pytest.raises(OSError, match=r"cannot write /proc/superkern-x\.json \(no file "
                                          r"can be created in /proc"):
            write_atomic("/proc/superkern-x.json", "{}")
    with pytest.raises(IsADirectoryError, match="is a folder; cannot write a file there"):
        write_atomic(tmp_path, "{}")
