"""``superkern fit zipf --plot`` (paper Fig. 22) and ``fit width-law --plot`` (Fig. 8b): the
figures draw the fitted numbers, not just a picture: read the artists back and check them."""
from __future__ import annotations

import numpy as np
import pytest

from superkern.analysis.fig_llm import png, width_law_figure, zipf_figure
from superkern.analysis.fits import fit_width_law
from superkern.analysis.zipf import zipf_fit


def _zipf_counts(n: int = 5000, alpha: float = 1.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = np.floor(2e6 * np.arange(1, n + 1) ** -alpha * np.exp(rng.normal(0, 0.05, n)))
    return rng.permutation(np.concatenate([c, np.zeros(17)]))  # order and zeros must not matter


def test_zipf_figure_draws_the_counts_and_the_fitted_line():
    c = _zipf_counts()
    fit = zipf_fit(c)
    fig = zipf_figure(c, fit, "synthetic", max_points=300)
    ax = fig.axes[0]
    curve, points, line = ax.get_lines()
    pos = np.sort(c[c > 0])[::-1]
    x, y = curve.get_data()
    assert len(x) <= 300 and x[0] == 1 and x[-1] == pos.size      # thinned, ends kept
    assert np.array_equal(y, pos[np.asarray(x, dtype=np.int64) - 1])  # count at each rank
    px, py = points.get_data()
    assert np.array_equal(py, pos[np.asarray(px, dtype=np.int64) - 1])
    lx, ly = line.get_data()
    slope = np.diff(np.log10(ly)) / np.diff(np.log10(lx))
    assert slope[0] == pytest.approx(-fit.alpha, rel=1e-12)
    assert ly[0] == pytest.approx(10 ** fit.intercept, rel=1e-12)
    assert abs(fit.alpha - 1.1) < 0.02
    assert f"alpha = {fit.alpha:.3f}" in line.get_label()
    assert png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="positive counts, but the fit saw"):
        zipf_figure(c[:100], fit)


def _width_rows(seed: int = 0, noise: float = 0.002):
    rng = np.random.default_rng(seed)
    groups, m, loss = [], [], []
    for fam, lg, widths in (("a", 2.0, [256, 512, 1024, 2048]), ("b", 2.6, [384, 768, 1536]),
                            ("c", 1.7, [512, 1024, 4096, 8192])):
        for w in widths:
            groups.append((fam, "web"))
            m.append(float(w))
            loss.append(40.0 / w ** 0.9 + lg + rng.normal(0, noise))
    return groups, np.array(m), np.array(loss)


def test_width_law_figure_collapses_every_group_on_one_line():
    groups, m, loss = _width_rows()
    fit = fit_width_law(groups, m, loss)
    fig = width_law_figure(groups, m, loss, fit)
    left, right = fig.axes
    assert len(left.get_lines()) == 2 * 3  # points and fitted curve per group
    for pts, curve in zip(left.get_lines()[::2], left.get_lines()[1::2]):  # Fig. 21: L vs 1/m
        g = tuple(pts.get_label().split("/"))
        sel = np.array([lab == g for lab in groups])
        x, y = pts.get_data()
        order = np.argsort(m[sel])
        assert np.allclose(x, 1.0 / m[sel][order], rtol=1e-12)
        assert np.allclose(y, loss[sel][order], rtol=1e-12)
        cx, cy = curve.get_data()
        assert np.allclose(cy - fit.c * cx ** fit.alpha_m, fit.offsets[g][0], atol=1e-12)
    drawn = right.get_lines()
    guide = drawn[-1]
    gx, gy = guide.get_data()
    assert np.allclose(gy, fit.c * gx ** -fit.alpha_m, rtol=1e-12)
    shown = 0
    for k, g in enumerate(sorted(set(groups))):
        pts = drawn[k]
        x, y = pts.get_data()
        sel = np.array([lab == g for lab in groups])
        expect = dict(zip(m[sel], loss[sel] - fit.offsets[g][0]))
        assert all(y_ > 0 and y_ == pytest.approx(expect[x_], rel=1e-12) for x_, y_ in zip(x, y))
        shown += len(x)
    assert shown == len(groups) and "not shown" not in right.get_title()  # all above L_g
    # One point pushed below its group's L_g (the fit kept): left off the log panel, counted.
    low = loss.copy()
    g0 = groups[0]
    low[0] = fit.offsets[g0][0] - 0.05
    right = width_law_figure(groups, m, low, fit).axes[1]
    k0 = sorted(set(groups)).index(g0)
    x0, _ = right.get_lines()[k0].get_data()
    assert m[0] not in x0 and len(x0) == sum(lab == g0 for lab in groups) - 1
    assert "1 point(s) at or below L_g not shown" in right.get_title()
    with pytest.raises(ValueError, match="not in the fit"):
        width_law_figure([("z", "web")] * len(m), m, loss, fit)


def test_cli_plot_flags(tmp_path, capsys):
    from superkern.cli import main

    counts = tmp_path / "counts.txt"
    counts.write_text("\n".join(str(int(c)) for c in _zipf_counts(800)) + "\n")
    out = tmp_path / "figs" / "zipf.png"
    assert main(["fit", "zipf", str(counts), "--plot", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    groups, m, loss = _width_rows()
    csv = tmp_path / "llm.csv"
    csv.write_text("family,dataset,m,loss\n" + "".join(
        f"{a},{b},{w:g},{v!r}\n" for (a, b), w, v in zip(groups, m, loss.tolist())))
    assert main(["fit", "width-law", str(csv), "--plot", str(tmp_path / "w.png")]) == 0
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["fit", str(tmp_path), "--plot", str(tmp_path / "x.png")]) == 2
    assert "drawn by 'superkern figures'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
