"""Figures render from a small synthetic results file (written by the real runner with a
synthetic trainer whose losses follow the paper's laws), and fits recover those laws."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from superkern.sweep import run_sweep
from tests.figure_fakes import law_alpha_m, synth_configs, synth_train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


def test_fit_report_recovers_the_built_in_laws(results_file):
    from superkern.analysis import fit_report, format_report, load_results
    from superkern.analysis.tables import main_grid

    res = load_results(results_file)
    rep = fit_report(res, n_boot=0)
    fitted = [c for c in rep.cells if c.fit]
    assert len(fitted) == len(rep.cells) == 24 + 2 + 6 + 6
    for c in fitted:
        want = law_alpha_m(SimpleNamespace(dist=c.cell["dist"], alpha=c.cell.get("alpha"),
                                           gamma=c.gamma))
        # 1% log-noise on 3 to 5 widths (seeded, so fixed): slope sd ~0.006, largest error of
        # the 38 cells 0.0245
        assert abs(c.fit.alpha_m - want) < 0.03, (c.label, c.fit, want)
    text = format_report(rep)
    assert "(paper 1.01 +- 0.05)" in text and "median loss/prediction" in text
    phi = {(p.label, p.m): p for p in rep.phi}
    assert phi[("power a=1, gamma=-1, n=100", 10)].phi_half == 1.0  # n=200 is another grid
    # Heatmaps take the largest (gamma, alpha) grid, never two grids' cells on one pixel.
    power = [c for c in rep.cells if c.cell["dist"] == "power" and c.cell["density_s"] is None]
    grid, left_out = main_grid(power, lambda c: c.cell)
    assert len(grid) == 24 and {c.cell["n"] for c in grid} == {100}
    assert left_out == len(power) - 24 == 2 + 2  # fig17's n = 200 and the large model's cells
    assert rep.unlearned and all(u.gamma > 0 for u in rep.unlearned)
    assert "synth" in res.caption() and f"{len(res.runs)} runs" in res.caption()


def test_all_figures_render(results_file, tmp_path):
    from superkern.analysis.figures import available_figures, make_figures

    rep = make_figures(results_file, tmp_path / "figs", n_boot=50, dpi=60)
    assert not rep.skipped, rep.skipped
    assert set(rep.written) == set(available_figures())
    for name, path in rep.written.items():
        data = open(path, "rb").read()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 8000, (name, len(data))
    assert not list((tmp_path / "figs").glob(".*.tmp"))


def test_figures_leave_the_callers_matplotlib_alone(results_file, tmp_path):
    """Importing the figures switched matplotlib to Agg (a notebook's inline display went
    with it), and a skipped figure closed every open figure, the caller's too. A fresh
    process: the backend a user picked is the one matplotlib keeps for the process."""
    code = f"""
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
mine = plt.figure()
from superkern.analysis.figures import make_figures
rep = make_figures({str(results_file)!r}, {str(tmp_path)!r}, only=["fig1", "fig9"],
                   use_weights=False, n_boot=0, dpi=40)
assert set(rep.written) == {{"fig1"}} and set(rep.skipped) == {{"fig9"}}, rep
print(matplotlib.get_backend(), plt.get_fignums() == [mine.number])
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["svg", "True"], run.stdout


def test_figures_skip_with_reasons(tmp_path):
    from superkern.cli import main

    only_large = [c for c in synth_configs() if c.preset == "large"]
    run_sweep(only_large, tmp_path, train_fn=synth_train, progress=False)
    from superkern.analysis.figures import make_figures

    rep = make_figures(tmp_path, tmp_path / "f", dpi=50, n_boot=0)
    assert {"fig1", "fig4a", "fig10", "fig6c", "fig6d", "fig5a"} <= set(rep.written)
    assert "small" in rep.skipped["fig4b"] and "density" in rep.skipped["fig7"]
    lines = rep.text().splitlines()  # one line per reason, naming every figure it skips
    skipped = [s for s in lines if s.startswith("skipped ")]
    assert len(skipped) == len(set(rep.skipped.values())) < len(rep.skipped)
    named = {f for s in skipped for f in s[len("skipped "):].split(": ")[0].split(", ")}
    assert named == set(rep.skipped)
    assert main(["figures", str(tmp_path), "--out", str(tmp_path / "g"), "--only", "fig1",
                 "--dpi", "50"]) == 0
    assert (tmp_path / "g" / "fig1.png").read_bytes()[:8] == PNG_MAGIC


def test_ambiguity_matches_dense_spectral_norm():
    from superkern.analysis.weights import ambiguity

    gen = torch.Generator().manual_seed(0)
    for n, m in ((1, 1), (7, 3), (33, 33), (120, 9)):
        W = torch.randn(n, m, generator=gen, dtype=torch.float64) / math.sqrt(m)
        gold = W @ W.T
        k = min(n, m)
        gold[range(k), range(k)] -= 1.0
        want = torch.linalg.matrix_norm(gold, ord=2).item()
        got = ambiguity(W)
        assert abs(got - want) <= 1e-12 * max(1.0, want), (n, m, got, want)


def test_damaged_weights_file_counts_as_missing(results_file, tmp_path):
    from superkern.analysis.tables import load_results
    from superkern.analysis.weights import cached_stats

    run = next(r for r in load_results(results_file).runs if r.weights is not None)
    ok = cached_stats(run.weights, {}, "strong_weak")
    assert ok is not None
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(run.weights.read_bytes()[:50])  # truncated
    cache: dict = {}
    with pytest.warns(UserWarning, match=r"w.safetensors: unreadable weights"):
        assert cached_stats(bad, cache, "strong_weak") is None
    assert cached_stats(bad, cache, "strong_weak") is None  # remembered: one warning per file


def test_figures_take_one_grid_and_the_right_runs(results_file):
    """The synthetic folder mixes the small grid (n = 100), fig17's n = 200, a density sweep
    and the large model: each figure reads only its own runs."""
    from superkern.analysis.fig_geometry import _strong_grid
    from superkern.analysis.fig_scaling import density_cells, grid_cells, power_cells
    from superkern.analysis.figures import Context
    from superkern.analysis.tables import load_results

    ctx = Context(load_results(results_file), n_boot=0, use_weights=False)
    dens = density_cells(ctx)  # Figs. 7, 18: the density sweep only
    assert dens and all(c.cell["density_s"] is not None for c in dens)
    assert {c.cell["n"] for c in dens} == {100} and len(dens) == 3 * 2
    grid, note = grid_cells(power_cells(ctx))  # Figs. 4b, 5b, 6e, 14
    assert {c.cell["n"] for c in grid} == {100} and note == "4 cells of other grids left out"
    runs, note = _strong_grid(ctx, lambda r: True)  # Figs. 6c, 6d, 15, 16
    assert {r.n for r in runs} == {100} and all(r.gamma < 0 for r in runs)
    assert "runs of other grids left out" in note


def test_cells_of_several_grids_are_told_apart_in_legends_and_tables(results_file):
    """The folder holds runs at n = 100, 200 and 256: fig1's legend entries, fig4a's bars and the
    unlearned-loss rows name n where two cells would otherwise read the same."""
    from superkern.analysis.fig_scaling import fig1, fig4a
    from superkern.analysis.figures import Context
    from superkern.analysis.scaling import unlearned_table
    from superkern.analysis.tables import load_results

    ctx = Context(load_results(results_file), n_boot=0, use_weights=False)
    for make in (fig1, fig4a):
        fig = make(ctx)
        for ax in fig.axes:
            texts = ([t.get_text().split(":")[0] for t in ax.get_legend().get_texts()]
                     if ax.get_legend() else [t.get_text() for t in ax.get_xticklabels()])
            assert len(texts) == len(set(texts)), (make.__name__, texts)  # cells, not fits
            if make is fig1:  # the widths label the x axis, not colliding minor ticks
                widths = {f"{w:g}" for line in ax.get_lines() for w in line.get_xdata()}
                labels = [t.get_text() for t in ax.get_xticklabels()]
                assert set(labels) == widths and labels == sorted(labels, key=float), labels
                assert not any(t.get_text() for t in ax.xaxis.get_minorticklabels())
    rows = unlearned_table(ctx.results)  # weak runs: the small grid and the large model
    assert all(", n=" in r.label for r in rows)
    assert len({r.label.rsplit("n=", 1)[-1] for r in rows}) >= 2, sorted({r.label for r in rows})


def test_fit_tables_stay_aligned_with_long_cell_labels(results_file):
    """Cells of two grids in one folder get long labels (steps=..., warmup=...): the columns
    widen to the longest label instead of shifting the rows that pass 40 characters; the
    weak-regime rows carry their seed (two seeds of one width read the same otherwise)."""
    import dataclasses
    import re

    from superkern.analysis import fit_report, format_report, load_results

    rep = fit_report(load_results(results_file), n_boot=0)
    long = "power a=1, gamma=-1, steps=100, warmup=5, a label past forty"
    rep.cells[0] = dataclasses.replace(rep.cells[0], label=long)
    lines = format_report(rep).splitlines()
    hdr = next(i for i, line in enumerate(lines) if line.startswith("cell ") and "m fitted" in line)
    col = lines[hdr].index("m fitted") + len("m fitted")  # right edge of the width range
    rows = [line for line in lines[hdr + 1:hdr + 1 + len(rep.cells)] if "skipped" not in line]
    assert rows[0].startswith(long) and len(rows) >= 2
    for line in rows:
        assert re.fullmatch(r"\d+\.\.\d+", line[:col].split()[-1]) and line[col] == " ", line
    un = lines.index(next(s for s in lines if "seed" in s and "phi_half" in s and "ratio" in s))
    end = lines[un].index(" seed") + len(" seed")
    assert int(lines[un + 1][end - 5:end]) == rep.unlearned[0].seed
