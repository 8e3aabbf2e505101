"""Model size against width (paper Fig. 23): the shared-exponent fit, its standard error,
the alpha_m = k alpha_N conversion, the built-in table of the paper's 27 models, the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from superkern.analysis.llm_size import BUILTIN, fit_size_width, load_size_csv


def _synthetic(noise: float, seed: int = 0, k: float = 2.5):
    rng = np.random.default_rng(seed)
    fams, m, n = [], [], []
    for fam, a, widths in (("a", 30.0, [512, 1024, 2048, 4096]), ("b", 60.0, [768, 1536, 3072]),
                           ("c", 10.0, [1024, 2048, 4096, 8192, 16384])):
        for w in widths:
            fams.append(fam)
            m.append(w)
            n.append(a * w ** k * math.exp(noise * rng.standard_normal()))
    return fams, np.array(m, float), np.array(n)


def test_exact_power_laws_recover_exponent_and_coefficients():
    f = fit_size_width(*_synthetic(0.0))
    assert f.k == pytest.approx(2.5, abs=1e-12) and f.k_se < 1e-10 and f.r2 == pytest.approx(1)
    assert f.coefficients == pytest.approx({"a": 30.0, "b": 60.0, "c": 10.0}, rel=1e-10)
    assert (f.n_points, f.families) == (12, 3)


def test_standard_error_matches_the_scatter_of_the_exponent():
    ks, ses = [], []
    for seed in range(300):
        f = fit_size_width(*_synthetic(0.1, seed))
        ks.append(f.k)
        ses.append(f.k_se)
    ks, ses = np.array(ks), np.array(ses)
    assert abs(ks.mean() - 2.5) < 4 * ks.std() / math.sqrt(ks.size)
    assert 0.85 < ks.std() / ses.mean() < 1.15


def test_alpha_m_from_the_size_exponent():
    """The paper: 2.52 +- 0.03 times alpha_N = 0.35 +- 0.02 is 0.88 +- 0.06 (errors added)."""
    f = fit_size_width(*_synthetic(0.0))
    v, se_q, se_lin = type(f)(k=2.52, k_se=0.03, r2=1.0).alpha_m(0.35, 0.02)
    assert v == pytest.approx(0.882) and round(se_lin, 2) == 0.06
    assert se_q == pytest.approx(math.hypot(2.52 * 0.02, 0.35 * 0.03))
    assert f.alpha_m(0.35, 0.0)[0] == pytest.approx(2.5 * 0.35)


def test_bad_inputs():
    with pytest.raises(ValueError, match="no family has two different widths"):
        fit_size_width(["a", "a", "b", "b"], [8, 8, 16, 16], [1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"must be finite and > 0 \(row 1: m = 0.0"):
        fit_size_width(["a", "a", "a"], [8, 0, 16], [1, 2, 3])
    with pytest.raises(ValueError, match="3 points cannot fit 1 exponent and 2 coefficients"):
        fit_size_width(["a", "a", "b"], [8, 16, 8], [1, 2, 3])
    with pytest.raises(ValueError, match="lengths differ"):
        fit_size_width(["a"], [8, 16], [1, 2])


def test_builtin_table_and_cli(tmp_path, capsys):
    from superkern.analysis.fig_llm import size_width_figure
    from superkern.cli import main

    fams, m, n = load_size_csv(BUILTIN)
    assert len(fams) == 27 and sorted(set(fams)) == ["gpt2", "opt", "pythia", "qwen2.5"]
    rows = dict(zip(zip(fams, m), n))
    assert rows[("opt", 9216)] == 66e9 and rows[("qwen2.5", 8192)] == 72e9
    assert rows[("gpt2", 1600)] == 1.5e9 and rows[("pythia", 512)] == 70e6
    assert fit_size_width(fams, m, n).k == pytest.approx(2.3134, abs=1e-4)  # in the README
    assert main(["fit", "size-width", "--json", str(tmp_path / "s.json"),
                 "--plot", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    d = json.loads((tmp_path / "s.json").read_text())
    f = fit_size_width(fams, m, n)
    assert d["k"] == pytest.approx(f.k) and d["alpha_m"] == pytest.approx(0.35 * f.k)
    assert f"k = {f.k:.3f}" in out and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    ax = size_width_figure(fams, m, n, f).axes[0]
    lines = ax.get_lines()
    for pts, curve, fam in zip(lines[::2], lines[1::2], sorted(set(fams))):
        x, y = curve.get_data()
        assert np.allclose(y, f.coefficients[fam] * x ** f.k)
        assert len(pts.get_xdata()) == fams.count(fam)
    csv = tmp_path / "sizes.csv"
    csv.write_text("\ufeff# comment\nFamily,M,Params\nx,512,1e8\nx,1024,5e8\nx,2048,3e9\n",
                   encoding="utf-8")  # with a byte-order mark, as spreadsheets save it
    assert main(["fit", "size-width", str(csv), "--alpha-n", "0.3", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "x 0.3 =" in out and "paper" not in out  # the paper's k is for its own table
    assert main(["fit", "size-width", "--range", "all"]) == 2
    assert "does not apply to 'fit size-width'" in capsys.readouterr().err
    csv.write_text("family,m,params\nx,512,lots\n")
    assert main(["fit", "size-width", str(csv)]) == 2
    assert "sizes.csv:2: m, params must be numbers" in capsys.readouterr().err
