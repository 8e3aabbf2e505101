"""The Python API as a notebook user meets it: short reprs, no warnings on the happy path,
progress for long calls, path arguments where the CLI takes paths, strings where lists are
expected (from a Python-API walkthrough)."""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch

import superkern
from superkern import ToyConfig, train
from superkern.sweep import run_sweep

TINY = dict(n=20, m=4, steps=30, batch=4, preset=None, lr=1e-2, gamma=-1.0, alpha=1.0)


def test_reprs_are_one_short_line():
    """A notebook cell ending in a result printed it whole: 344 KB for MiniLM's report (the
    head matrix included), W and the curve for a toy result."""
    W = torch.randn(400, 16, generator=torch.Generator().manual_seed(0))
    st = superkern.overlap_stats(W, bins=8, per_row=True, topk=3)
    rep = superkern.probe(W, progress=False, splits=False)
    r = train(ToyConfig(**TINY), device="cpu")
    for obj, starts in ((st, "OverlapStats(n_used=400, m=16"), (rep, "ProbeReport("),
                        (r, f"ToyResult({r.run_id}: n=20, m=4")):
        text = repr(obj)
        assert text.startswith(starts) and "\n" not in text and len(text) < 300, text
    assert f"mean_sq={st.mean_sq:.6g}" in repr(st)
    assert "strong superposition" in repr(rep)


def test_read_only_numpy_arrays_are_read_without_a_warning(tmp_path):
    """np.load(mmap_mode='r') gives a read-only array: torch warned that it is not writable on
    every call, though the ops only read it."""
    np.save(tmp_path / "w.npy", np.random.default_rng(0).standard_normal((60, 8)))
    a = np.load(tmp_path / "w.npy", mmap_mode="r")
    assert not a.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st = superkern.overlap_stats(a)
        ns = superkern.row_norm_stats(a)
    assert st.n_used == 60 and ns.n == 60


def test_train_takes_a_progress_callback_and_bar():
    """train() had no progress: the README's first example runs 20000 silent steps on a CPU."""
    seen = []
    r = train(ToyConfig(**{**TINY, "steps": 250}), device="cpu",
              progress=lambda done, total: seen.append((done, total)))
    assert seen == [(100, 250), (200, 250), (250, 250)] and np.isfinite(r.final_loss)
    with pytest.raises(ValueError, match="progress must be None, True/False or a callable"):
        train(ToyConfig(**TINY), device="cpu", progress="yes")


def test_sweep_takes_one_override_or_variant_as_a_string_and_a_dict_of_overrides():
    """A string was iterated into characters ('--set expects KEY=VALUE, got 's'')."""
    from superkern.sweep import prepare

    _, configs = prepare("fig1", quick=True, overrides="steps=10")
    assert {c.steps for c in configs} == {10}
    _, configs = prepare("fig1", quick=True, overrides={"steps": 12, "m": [4, 8]})
    assert {c.steps for c in configs} == {12} and {c.m for c in configs} == {4, 8}
    _, configs = prepare("fig1", variants="quick")
    assert configs and {c.steps for c in configs} == {c.steps for c in prepare(
        "fig1", quick=True)[1]}
    with pytest.raises(ValueError, match=r"overrides must be a string or a list of strings"):
        prepare("fig1", overrides=5)


def test_sweep_package_is_callable_like_probe(tmp_path):
    """superkern.probe(...) ran the probe but superkern.sweep(...) was a TypeError ('module
    object is not callable'): the sweep function was superkern.sweep.sweep. Neither package
    showed its function's signature."""
    from tests.figure_fakes import synth_train

    assert superkern.sweep.grid.expand and superkern.probe.loaders.load_head  # still packages
    out = tmp_path / "run"
    first = superkern.sweep("fig1", out, quick=True, overrides="steps=10", progress=False,
                            train_fn=synth_train, save_weights=False)
    assert first.trained == first.total > 0 and (out / "results.jsonl").is_file()
    again = superkern.sweep.sweep("fig1", out, quick=True, overrides="steps=10",
                                  progress=False, train_fn=synth_train, save_weights=False)
    assert again.trained == 0 and again.skipped == first.total  # the same function, resumed
    # a notebook's `superkern.sweep?` / `superkern.probe?` read the function's signature
    assert list(inspect.signature(superkern.sweep).parameters)[:3] == ["spec", "out_dir",
                                                                      "quick"]
    assert "exclude_duplicates" in inspect.signature(superkern.probe).parameters


def test_fit_report_and_figures_take_a_path_and_check_their_range(tmp_path, monkeypatch):
    """fit_report took only loaded Results (a path failed with an AttributeError) and turned a
    bad range into 'skipped' cells; make_figures wrote into ./figures of the working folder,
    created even when every figure was skipped."""
    from superkern.analysis import fit_report
    from superkern.analysis.figures import make_figures
    from tests.figure_fakes import synth_configs, synth_train

    out = tmp_path / "run"
    run_sweep([c for c in synth_configs() if c.preset == "large"], out, train_fn=synth_train,
              progress=False)
    rep = fit_report(out, n_boot=0)
    assert rep.cells and rep.n_runs > 0
    with pytest.raises(ValueError, match=r"unknown fit range 'bogus'.*or 'paper'"):
        fit_report(out, fit_range="bogus")
    monkeypatch.chdir(tmp_path)
    figs = make_figures(out, only=["fig1"], n_boot=0, dpi=40)
    assert set(figs.written) == {"fig1"}
    assert (out / "figures" / "fig1.png").is_file() and not (tmp_path / "figures").exists()
    skipped = make_figures(out, tmp_path / "none", only=["fig7"], n_boot=0)
    assert not skipped.written and not (tmp_path / "none").exists()


def test_histogram_edges_are_exact_and_a_0_1_index_array_gets_a_hint():
    W = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    for bins in (2, 49, 100, 256):
        e = superkern.overlap_stats(W, bins=bins).edges
        want = [(2 * k - bins) / bins for k in range(bins + 1)]  # correctly rounded in fp64
        assert e.tolist() == want and e[0] == -1 and e[-1] == 1, bins
    assert superkern.overlap_stats(W, bins=100).edges[50] == 0.0
    flags = np.zeros(30, dtype=np.int64)
    flags[:10] = 1
    with pytest.raises(ValueError, match="pass a boolean mask"):
        superkern.overlap_stats(W, rows=flags)
    assert superkern.overlap_stats(W, rows=flags.astype(bool)).n_used == 10


def test_row_norm_bins_below_one_name_the_valid_range():
    """bins=-1 said 'must be >= 0', though 0 is refused too."""
    for bad in (-1, 0):
        with pytest.raises(ValueError, match=r"bins must be in \[1, 16777216\] for the norm "
                                             rf"histogram, got {bad}"):
            superkern.row_norm_stats(torch.ones(3, 2), bins=bad)


def test_toy_result_save_refuses_a_file_name_for_its_folder(tmp_path):
    """save("x/run.safetensors") made a folder named run.safetensors and wrote into it."""
    r = train(ToyConfig(**TINY), device="cpu")
    with pytest.raises(ValueError, match="save takes a folder and names the file itself"):
        r.save(tmp_path / "run.safetensors")
    assert not (tmp_path / "run.safetensors").exists()
    assert r.save(tmp_path, name="run") == tmp_path / "run.safetensors"
