"""Row-norm figures (paper Figs. 6a, 6b, 9, 11, 12) from the synthetic sweep's saved weights:
each panel holds the right runs and counts every row of every model once."""
from __future__ import annotations

import numpy as np
import pytest

from superkern.sweep import run_sweep
from tests.figure_fakes import synth_configs, synth_train


def _ctx(path, use_weights=True):
    from superkern.analysis.figures import Context
    from superkern.analysis.tables import load_results

    return Context(load_results(path), n_boot=0, use_weights=use_weights)


def _panels(fig):
    """Histogram panels as (title, ylabel, total bar height), in row-major order."""
    return [(ax.get_title(), ax.get_ylabel(), sum(p.get_height() for p in ax.patches))
            for ax in fig.axes]


def test_rank_fraction_above_by_hand():
    from superkern.analysis.fig_norms import rank_fraction_above

    a = np.array([1.5, 1.2, 0.9, 1.1, 0.2, 0.1])  # ranks 1..6
    b = np.array([0.5, 1.3, 1.0, 0.8, 1.01, 0.0])  # 1.0 itself is not above 1
    edges = np.array([1, 3, 5, 7, 9])
    got = rank_fraction_above([a, b], edges)
    # ranks 1-2: 1.5 1.2 0.5 1.3 -> 3/4; ranks 3-4: 0.9 1.1 1.0 0.8 -> 1/4; 5-6: 1.01 -> 1/4
    np.testing.assert_array_equal(got[:3], [0.75, 0.25, 0.25])
    assert np.isnan(got[3])  # no feature ranked 7-8


def test_fig11_fig12_rows_are_alphas_columns_widths(results_file):
    from superkern.analysis.fig_norms import fig11, fig12

    ctx = _ctx(results_file)
    for fn, gamma in ((fig11, "0.556"), (fig12, "-0.556")):
        fig = fn(ctx)
        panels = _panels(fig)
        assert len(panels) == 4 * 3  # alphas 0.5..2 x m = 10, 20, 40 of the n = 100 grid
        assert [t for t, _, _ in panels[:3]] == ["m = 10", "m = 20", "m = 40"]
        assert [y for _, y, _ in panels[::3]] == [f"alpha={a:g}" for a in (0.5, 1, 1.5, 2)]
        # one model per cell: the bars of each panel count its n = 100 rows
        assert all(abs(h - 100) < 1e-9 for _, _, h in panels), panels
        assert f"gamma = {gamma}" in fig._suptitle.get_text()


def test_fig9_rows_are_distribution_and_regime(results_file):
    from superkern.analysis.fig_norms import fig9

    panels = _panels(fig9(_ctx(results_file)))
    labels = [y for _, y, _ in panels[::5]]
    assert labels == ["power a=1.2\nstrong -1", "power a=1.2\nweak 0.1",
                      "exponential\nstrong -1", "exponential\nweak 0.1",
                      "linear\nstrong -1", "linear\nweak 0.1"]
    assert len(panels) == 6 * 5 and all(abs(h - 256) < 1e-9 for _, _, h in panels)


def test_fig6a_fraction_follows_the_synthetic_norms(results_file):
    """The synthetic strong W has norms falling linearly from 1.3 to 0.7 over the rank: the
    frequent half is above 1, the rare half below."""
    from superkern.analysis.fig_norms import fig6a

    fig = fig6a(_ctx(results_file))
    curves = fig.axes[1].get_lines()
    assert len(curves) == 3  # m = 10, 20, 40
    for line in curves:
        x, y = line.get_data()
        assert np.all(y[x < 40] == 1.0) and np.all(y[x > 60] == 0.0), (x, y)
    assert "alpha = 1" in fig._suptitle.get_text() and "gamma = -1" in fig._suptitle.get_text()


def test_norm_figures_need_weights(results_file, tmp_path):
    from superkern.analysis.figures import make_figures

    names = ["fig6a", "fig6b", "fig9", "fig11", "fig12"]
    rep = make_figures(results_file, tmp_path / "a", only=names, use_weights=False, n_boot=0)
    assert set(rep.skipped) == set(names)
    assert all("reads saved weights (disabled)" in why for why in rep.skipped.values())
    # a sweep that kept no weights files: skipped with the reason, nothing drawn
    run_sweep([c for c in synth_configs() if c.preset == "large"], tmp_path / "run",
              train_fn=synth_train, progress=False)
    for f in (tmp_path / "run").rglob("*.safetensors"):
        f.unlink()
    rep = make_figures(tmp_path / "run", tmp_path / "b", only=["fig9"], n_boot=0)
    assert "needs saved weights" in rep.skipped["fig9"] and not rep.written


def test_damaged_file_leaves_an_empty_panel(results_file, tmp_path):
    import shutil

    from superkern.analysis.fig_norms import fig12

    folder = tmp_path / "copy"
    shutil.copytree(results_file.parent, folder)
    ctx = _ctx(folder / "results.jsonl")
    victim = next(r for r in ctx.results.runs if r.gamma < -0.5 and r.gamma > -0.6
                  and r.m == 20 and r.alpha == 1.0)
    victim.weights.write_bytes(victim.weights.read_bytes()[:40])
    with pytest.warns(UserWarning, match="unreadable weights"):
        fig = fig12(ctx)
    heights = [h for _, _, h in _panels(fig)]
    assert heights[1 * 3 + 1] == 0 and sum(h == 0 for h in heights) == 1


def test_fig6b_one_density_per_width(results_file):
    """Fig. 6b draws one normalised histogram per width of the strong alpha-1 cell."""
    from superkern.analysis.fig_norms import fig6b

    fig = fig6b(_ctx(results_file))
    ax = fig.axes[0]
    steps = list(ax.patches)
    assert len(steps) == 3  # m = 10, 20, 40
    for p in steps:  # density: the area under each step outline is 1
        x, y = p.get_path().vertices.T
        area = sum((x[i + 1] - x[i]) * y[i] for i in range(len(x) - 1) if x[i + 1] > x[i])
        assert abs(area - 1.0) < 1e-6
    assert [t.get_text() for t in ax.get_legend().get_texts()][:3] == ["m=10", "m=20", "m=40"]


def test_frequency_bin_overlaps_against_a_brute_force_gram():
    """Rows in frequency order, 8 log-spaced rank bins over all n features (as the probe bins
    n counted tokens), zero rows out of the pairs, m times the mean c^2 over each bin's
    pairs: against an explicit Gram matrix."""
    import math

    import torch

    from superkern.analysis.weights import frequency_bin_overlaps

    n, m = 300, 12
    W = torch.randn(n, m, generator=torch.Generator().manual_seed(4))
    W[:20] = W[0] + 0.05 * W[:20]  # the 20 most frequent rows nearly parallel
    W[150] = 0.0                   # a zero row takes part in no pair
    mids, vals = frequency_bin_overlaps(W)
    nonzero = W.norm(dim=1).numpy() > 0
    rank = np.arange(1, n + 1)
    edges = np.unique(np.geomspace(1, n + 1, 9))
    which = np.clip(np.searchsorted(edges, rank, side="right") - 1, 0, len(edges) - 2)
    U = W.double() / W.double().norm(dim=1, keepdim=True).clamp_min(1e-300)
    assert len(vals) == len(mids) == len(np.unique(which))
    for b, (mid, got) in enumerate(zip(mids, vals)):
        members = np.flatnonzero(which == b)
        assert mid == math.sqrt((members[0] + 1.0) * (members[-1] + 1.0))
        ids = members[nonzero[members]]
        assert (150 in members) == (150 not in ids and ids.size == members.size - 1)
        k = ids.size
        if k < 2:
            assert math.isnan(got)
            continue
        C = U[torch.from_numpy(ids)] @ U[torch.from_numpy(ids)].T
        want = m * float(((C ** 2).sum() - k) / (k * (k - 1)))
        assert abs(got - want) < 1e-10 * want, (b, got, want)
    assert vals[np.isfinite(vals)][0] > 10 * vals[-1]  # the parallel head overlaps most


def test_freq_overlaps_figure(results_file):
    """Strong synthetic rows are random directions: m<c^2> near 1 in the large bins, and each
    line is the mean over seeds of frequency_bin_overlaps of that width's weights."""
    from superkern.analysis.fig_norms import freq_overlaps
    from superkern.analysis.weights import cached_stats

    ctx = _ctx(results_file)
    fig = freq_overlaps(ctx)
    left = fig.axes[0].get_lines()[:-1]  # the last line is the random level
    assert [ln.get_label() for ln in left] == ["m=10", "m=20", "m=40"]
    runs = [r for r in ctx.results.runs if r.gamma == -1.0 and r.alpha == 1.0 and r.n == 100
            and r.config.get("density_s") is None]
    for line, m in zip(left, (10, 20, 40)):
        stats = [cached_stats(r.weights, ctx.cache, "freqbins") for r in runs if r.m == m]
        want = np.mean([s[1] for s in stats], axis=0)
        ok = np.isfinite(want) & (want > 0)
        assert np.allclose(line.get_ydata(), want[ok], rtol=1e-12)
        assert 0.5 < line.get_ydata()[-1] < 2.0  # the biggest bin: random directions
    assert "gamma = -1" in fig._suptitle.get_text()


def test_freq_overlaps_skips_an_unreadable_file(results_file, tmp_path):
    """A damaged weights file drops that model from its line and from the footer's count;
    the figure still draws the rest."""
    import shutil

    from superkern.analysis.fig_norms import freq_overlaps

    folder = tmp_path / "copy"
    shutil.copytree(results_file.parent, folder)
    ctx = _ctx(folder / "results.jsonl")
    victim = next(r for r in ctx.results.runs if r.gamma == -1.0 and r.m == 20
                  and r.alpha == 1.0 and r.n == 100 and r.config.get("density_s") is None)
    victim.weights.write_bytes(victim.weights.read_bytes()[:40])
    with pytest.warns(UserWarning, match="unreadable weights"):
        fig = freq_overlaps(ctx)
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["m=10", "m=40", "random directions"]  # m = 20 had one seed, now none
    footer = fig.texts[-1].get_text()
    assert "(5 runs," in footer, footer  # 6 drawn without the damage, m = 20 now missing
