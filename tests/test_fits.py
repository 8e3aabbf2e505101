"""Fits: power laws with noise (estimate and standard error), fit ranges, bootstrap over seeds,
the shared-exponent width law, run comparisons and the CLI shims (the Zipf recipe: test_zipf.py)."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from superkern.analysis.fits import (fit_power_law, fit_power_law_seeds, fit_width_law,
                                     paper_fit_range, select_range)

M = np.array([8, 16, 32, 64, 128, 256, 512, 1024], dtype=float)


def test_power_law_exact_and_noisy_with_sensible_stderr():
    exact = fit_power_law(M, 3.0 * M ** -1.01)
    assert abs(exact.alpha_m - 1.01) < 1e-12 and exact.r2 > 1 - 1e-12
    assert np.allclose(exact.predict(M), 3.0 * M ** -1.01)
    rng = np.random.default_rng(0)
    sigma, alphas, ses = 0.05, [], []
    for _ in range(400):
        f = fit_power_law(M, 3.0 * M ** -0.89 * np.exp(rng.normal(0, sigma, M.size)))
        alphas.append(f.alpha_m)
        ses.append(f.stderr)
    alphas, ses = np.array(alphas), np.array(ses)
    # analytic slope sd for iid log-noise: sigma / sqrt(sum (x - xbar)^2)
    x = np.log(M)
    sd_true = sigma / math.sqrt(((x - x.mean()) ** 2).sum())
    print(f"mean alpha {alphas.mean():.4f}, sd {alphas.std():.4f}, mean se {ses.mean():.4f}, "
          f"analytic {sd_true:.4f}")
    assert abs(alphas.mean() - 0.89) < 4 * sd_true / math.sqrt(alphas.size)
    assert 0.8 < alphas.std() / sd_true < 1.2
    assert 0.8 < ses.mean() / sd_true < 1.2
    within = np.abs(alphas - 0.89) <= 3 * ses
    assert within.mean() > 0.95, within.mean()


def test_fit_ranges_and_paper_rules():
    assert select_range(M, "all").all()
    assert M[select_range(M, "m>=32")].min() == 32 and select_range(M, "m>=32").sum() == 6
    assert M[select_range(M, "last5")].tolist() == [64, 128, 256, 512, 1024]
    assert M[select_range(M, "from3")].tolist() == M[2:].tolist()
    seeds = np.repeat(M, 3)  # counting is over distinct widths, not points
    assert select_range(seeds, "last5").sum() == 15
    assert M[select_range(M, "m<=128")].tolist() == [8, 16, 32, 64, 128]
    assert M[select_range(M, "16 <= m <= 64")].tolist() == [16, 32, 64]
    with pytest.raises(ValueError, match="empty fit range.*64 > 16"):
        select_range(M, "64<=m<=16")
    with pytest.raises(ValueError, match="unknown fit range"):
        select_range(M, "middle")
    loss = M ** -1.0
    loss[:2] *= 3  # curvature at small m that the paper's range leaves out
    assert abs(fit_power_law(M, loss, "m>=32").alpha_m - 1.0) < 1e-12
    assert fit_power_law(M, loss, "all").alpha_m > 1.1
    large = {"preset": "large"}
    assert paper_fit_range({**large, "gamma": -1.0, "dist": "exponential"}) == "all"
    assert paper_fit_range({**large, "gamma": -1.0, "dist": "power"}) == "m>=32"
    assert paper_fit_range({**large, "gamma": -1.0, "dist": "linear"}) == "m>=32"
    assert M[select_range(M, "from3")].min() == 32  # the paper's "from the third point"
    assert paper_fit_range({**large, "gamma": 0.1, "dist": "power"}) == "last5"
    assert paper_fit_range({**large, "gamma": 0.1, "dist": "linear"}) == "all"
    assert paper_fit_range({"preset": "small", "gamma": -1.0, "dist": "power"}) == "all"
    with pytest.raises(ValueError, match="need >= 3"):
        fit_power_law(M[:2], M[:2] ** -1.0)
    with pytest.raises(ValueError, match="> 0"):
        fit_power_law(M, -M)


def test_bootstrap_over_seeds_covers_truth():
    rng = np.random.default_rng(1)
    groups = [1.7 * m ** -1.3 * np.exp(rng.normal(0, 0.03, 4)) for m in M]
    f = fit_power_law_seeds(M, groups, n_boot=500)
    print(f)
    assert f.ci_method == "t+bootstrap" and f.n_seeds == 4
    assert f.ci_low < 1.3 < f.ci_high and f.ci_high - f.ci_low < 0.1
    t_only = fit_power_law(M, [math.exp(np.log(g).mean()) for g in groups])
    assert f.ci_low <= t_only.ci_low and f.ci_high >= t_only.ci_high  # never narrower
    again = fit_power_law_seeds(M, groups, n_boot=500)
    assert (again.ci_low, again.ci_high) == (f.ci_low, f.ci_high)  # deterministic
    one = fit_power_law_seeds(M, [g[:1] for g in groups])
    assert one.ci_method == "t" and one.n_seeds == 1
    # One width with extra seeds does not switch to a (far too narrow) seed bootstrap.
    mixed = fit_power_law_seeds(M, [g if i == len(M) - 1 else g[:1] for i, g in enumerate(groups)])
    assert mixed.ci_method == "t" and mixed.n_seeds == 1


def test_interval_coverage_with_few_points():
    """The 95% interval covers the true exponent about 95% of the time, also with 3 and 5
    widths (a normal +-1.96 se interval covers 70% and 86% there)."""
    rng = np.random.default_rng(3)
    for k in (3, 5):
        m = M[:k]
        hits = sum(f.ci_low < 1.0 < f.ci_high for f in
                   (fit_power_law(m, m ** -1.0 * np.exp(rng.normal(0, 0.1, k)))
                    for _ in range(2000)))
        assert 0.93 < hits / 2000 < 0.97, (k, hits)


def _width_data(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    fams = {"opt": [768, 1024, 2048, 2560, 4096, 5120, 7168, 9216],
            "qwen": [896, 1536, 2048, 3584, 5120, 8192], "gpt2": [768, 1024, 1280, 1600],
            "pythia": [512, 1024, 2048, 2560, 4096, 5120]}
    offsets = {}
    groups, m, loss = [], [], []
    for i, (fam, widths) in enumerate(fams.items()):
        for j, ds in enumerate(("wiki", "c4", "pile", "books")):
            lg = 1.5 + 0.3 * i + 0.2 * j
            offsets[(fam, ds)] = lg
            for w in widths:
                groups.append((fam, ds))
                m.append(w)
                loss.append(600.0 / w ** 0.91 + lg + rng.normal(0, noise))
    return groups, np.array(m, float), np.array(loss), offsets


def test_width_law_recovers_parameters():
    g, m, y, offsets = _width_data(0.0)
    f = fit_width_law(g, m, y)
    assert f.success and f.n_params == 18 and f.n_points == y.size
    assert abs(f.alpha_m - 0.91) < 1e-6 and abs(f.c / 600.0 - 1) < 1e-5
    assert max(abs(f.offsets[k][0] - v) for k, v in offsets.items()) < 1e-6
    est, ses = [], []
    for seed in range(40):
        g, m, y, _ = _width_data(0.01, seed)
        f = fit_width_law(g, m, y)
        est.append(f.alpha_m)
        ses.append(f.alpha_m_se)
    est, ses = np.array(est), np.array(ses)
    print(f"width law: alpha mean {est.mean():.4f} sd {est.std():.4f} mean se {ses.mean():.4f}")
    assert abs(est.mean() - 0.91) < 4 * est.std() / math.sqrt(est.size) + 1e-3
    assert 0.6 < est.std() / ses.mean() < 1.5
    with pytest.raises(ValueError, match="cannot fit"):
        fit_width_law(g[:3], m[:3], y[:3])  # 3 points, 3 parameters


def test_width_law_refuses_what_the_data_cannot_determine():
    # One width per group: the offsets absorb every loss; this used to return the start
    # value alpha_m = 1.0000 +- 0.0000 (a negative variance clipped to 0).
    ws = [256, 512, 1024, 2048, 4096]
    g = [(f"m{k}",) for k in range(5)] * 2
    loss = [3, 2.5, 2.2, 2.1, 2.05, 3.1, 2.6, 2.3, 2.2, 2.1]
    with pytest.raises(ValueError, match="every group has a single width"):
        fit_width_law(g, ws * 2, loss)
    # Flat losses: no power of m to measure. Each draw is refused (no convergence, a rank
    # loss, no finite optimum, an exponent its own error swamps tenfold; one printed 26.6 +-
    # 8.7e6 with exit 0) or warned about (an error larger than the exponent).
    for seed in range(12):
        noise = np.random.default_rng(seed).normal(0, 0.01, 15)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fit_width_law([(f"f{k}",) for k in range(3) for _ in ws], ws * 3, 2 + noise)
            except ValueError as exc:
                assert "width-law fit failed" in str(exc)
            else:
                assert any("is not determined by these data" in str(w.message)
                           for w in caught), seed
    # Exactly flat losses leave no residual (se 0) and an arbitrary alpha_m (it printed
    # 0.9097 +- 0.0000 with C = 1e-14): the power term's change across the widths is nothing.
    with pytest.raises(ValueError, match="flat losses, any alpha_m fits"):
        fit_width_law([("a",)] * 3 + [("b",)] * 3, [64, 128, 256] * 2, [2.0] * 3 + [3.0] * 3)
    # The interval uses t with n - p degrees of freedom: one group, 4 points, 3 parameters.
    f = fit_width_law([("a",)] * 4, [256, 512, 1024, 2048],
                      [50 / w ** 0.9 + 2 + e for w, e in zip([256, 512, 1024, 2048],
                                                               [1e-4, -1e-4, 2e-4, 0])])
    lo, hi = f.alpha_m_ci
    assert (hi - lo) / (2 * f.alpha_m_se) == pytest.approx(stats.t.ppf(0.975, 1))


def test_power_law_of_equal_losses_is_flat_not_nan():
    f = fit_power_law([8, 16, 32, 64], [1.5] * 4)
    assert (f.alpha_m, f.stderr, f.ci_low, f.ci_high) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(f.r2) and f.log_c == pytest.approx(math.log(1.5))


def test_cli_fit_zipf_and_width_law(tmp_path, capsys):
    from superkern.cli import main

    counts = tmp_path / "counts.txt"
    counts.write_text("\n".join(str(int(1e6 / r)) for r in range(1, 3001)) + "\n")
    assert main(["fit", "zipf", str(counts), "--json", str(tmp_path / "z.json")]) == 0
    assert "alpha = 1.00" in capsys.readouterr().out
    assert abs(json.loads((tmp_path / "z.json").read_text())["alpha"] - 1.0) < 0.01
    freqs = tmp_path / "freqs.json"  # relative frequencies, as word-frequency lists give them
    freqs.write_text(json.dumps({f"w{r}": 0.1 / r for r in range(1, 3001)}))
    assert main(["fit", "zipf", str(freqs)]) == 0
    out = capsys.readouterr().out
    assert "alpha = 1.00" in out and "frequencies, not counts" in out
    assert main(["fit", "zipf", str(freqs), "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["frequencies"] is True and d["n_tokens"] is None
    assert abs(d["total_weight"] - sum(0.1 / r for r in range(1, 3001))) < 1e-9
    g, m, y, _ = _width_data(0.0)
    csv = tmp_path / "llm.csv"
    csv.write_text("family,dataset,m,loss\n" + "".join(
        f"{a},{b},{w:g},{float(v)!r}\n" for (a, b), w, v in zip(g, m, y)))
    assert main(["fit", "width-law", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "alpha_m = 0.9100" in out and "L_g opt/wiki" in out
    assert main(["fit", "zipf"]) == 2


def _write_runs(path, precision, alphas, noise=0.0, seed=0, widths=(8, 16, 32, 64, 128),
                mode="w", row_backend=None, **over):
    """A results file of synthetic runs: loss = 2 m^-alpha (times log-normal noise) per
    (gamma -> alpha) cell, config fields from a real ToyConfig; ``row_backend`` is the
    backend the row says it ran on (configs say "auto")."""
    from superkern.toy import ToyConfig

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        for gamma, alpha in alphas.items():
            for m in widths:
                cfg = ToyConfig(n=256, m=m, gamma=gamma, dist="exponential",
                                precision=precision, **{"steps": 10, "batch": 8, **over})
                loss = 2.0 * m ** -alpha * math.exp(noise * rng.standard_normal())
                f.write(json.dumps({"run_id": cfg.run_id, "config": cfg.to_dict(),
                                    "final_loss": loss, "final_loss_std": 0.01 * loss,
                                    "phi_half": 1.0, "phi_1": 0.5,
                                    **({"backend": row_backend} if row_backend else {})}) + "\n")


def test_exponents_of_two_runs_compared_cell_by_cell(tmp_path, capsys):
    from superkern.analysis.compare import compare_runs
    from superkern.analysis.tables import load_results
    from superkern.cli import main

    _write_runs(tmp_path / "fp32" / "results.jsonl", "fp32", {-1.0: 1.0, 0.5: 0.4}, 0.02, 1)
    _write_runs(tmp_path / "x3" / "results.jsonl", "tf32x3", {-1.0: 1.0, 0.5: 0.4}, 0.02, 2,
                row_backend="triton")
    _write_runs(tmp_path / "bad" / "results.jsonl", "tf32", {-1.0: 1.0, 0.5: 0.7, 0.9: 1.0})
    A = load_results(tmp_path / "fp32")
    rows, skipped = compare_runs(A, load_results(tmp_path / "x3"), "all")
    assert len(rows) == 2 and not skipped and all(r.agree for r in rows)
    # how each side ran: the rows' own backend where they record one, else the config's
    assert {(r.compute_a, r.compute_b) for r in rows} == {("fp32/auto", "tf32x3/triton")}
    assert all(abs(r.diff) < 0.05 for r in rows)
    rows, skipped = compare_runs(A, load_results(tmp_path / "bad"), "all")
    by_gamma = {r.cell["gamma"]: r for r in rows}
    assert by_gamma[-1.0].agree and not by_gamma[0.5].agree
    assert by_gamma[0.5].alpha_b == pytest.approx(0.7, abs=1e-9)  # noiseless: exact
    assert by_gamma[0.5].diff == pytest.approx(0.7 - by_gamma[0.5].alpha_a, abs=1e-12)
    assert abs(by_gamma[0.5].diff - 0.3) < 0.05 and abs(by_gamma[0.5].z) > 2
    assert skipped == ["exponential, gamma=+0.9: only in the second run"]
    # Not comparable: other widths, other models (lr), one side holding two precisions.
    _write_runs(tmp_path / "short" / "results.jsonl", "tf32", {-1.0: 1.0, 0.5: 0.4},
                widths=(8, 16, 32))
    rows, skipped = compare_runs(A, load_results(tmp_path / "short"), "all")
    assert not rows and all("fitted over different widths" in u for u in skipped)
    _write_runs(tmp_path / "lr" / "results.jsonl", "tf32", {-1.0: 1.0}, lr=0.003)
    rows, skipped = compare_runs(A, load_results(tmp_path / "lr"), "all")
    assert not rows and "gamma=-1: the models differ in lr" in skipped[0]
    # Cells that differ in a field their labels leave out: each side names the difference.
    _write_runs(tmp_path / "long" / "results.jsonl", "tf32", {-1.0: 1.0}, steps=30)
    rows, skipped = compare_runs(A, load_results(tmp_path / "long"), "all")
    assert not rows and "exponential, gamma=-1: only in the first run (nearest cell there " \
        "differs in steps 10 vs 30)" in skipped
    assert "exponential, gamma=-1: only in the second run (nearest cell there differs in " \
        "steps 30 vs 10)" in skipped
    _write_runs(tmp_path / "mixed" / "results.jsonl", "tf32", {-1.0: 0.5})
    _write_runs(tmp_path / "mixed" / "results.jsonl", "fp32", {-1.0: 1.0}, mode="a")
    with pytest.raises(ValueError,
                       match="holds the cell 'exponential, gamma=-1, precision=fp32' twice"):
        compare_runs(A, load_results(tmp_path / "mixed"), "all")
    with pytest.raises(ValueError, match="tol must be finite and > 0, got inf"):
        compare_runs(A, A, "all", tol=math.inf)
    # The command: exit 0 only when every cell is compared and agrees.
    assert main(["fit", str(tmp_path / "fp32"), "--against", str(tmp_path / "x3"),
                 "--range", "all"]) == 0
    out = capsys.readouterr().out
    assert "exponents agree in all 2 compared cells" in out
    assert "(fp32/auto vs tf32x3/triton)" in out
    assert main(["fit", str(tmp_path / "fp32"), "--against", str(tmp_path / "bad"),
                 "--range", "all", "--json", str(tmp_path / "cmp.json")]) == 1
    out = capsys.readouterr().out
    assert "exponents DIFFER in 1 of 2 cells; 1 cell(s) not compared" in out
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert [c["agree"] for c in saved["cells"]] == [True, False] and saved["agree"] is False
    _write_runs(tmp_path / "part" / "results.jsonl", "tf32", {-1.0: 1.0, 0.5: 0.4, 0.9: 1.0})
    assert main(["fit", str(tmp_path / "fp32"), "--against", str(tmp_path / "part"),
                 "--range", "all"]) == 1  # the extra cell counts against agreement
    assert main(["fit", str(tmp_path / "fp32"), "--against", str(tmp_path / "part"),
                 "--range", "all", "--allow-partial"]) == 0
    capsys.readouterr()
    assert main(["fit", "zipf", "x.txt", "--against", str(tmp_path / "part")]) == 2
    assert "does not apply" in capsys.readouterr().err


def test_weak_cells_carry_the_ideal_weak_fit(tmp_path):
    """Each weak cell also fits the ideal weak loss <v^2> sum_{i > m} p_i on its own widths and
    range; on the paper's Fig. 1 grid that separates the power law (straight) from the curved
    frequencies, checked here against an independent numpy computation."""
    from scipy.stats import linregress

    from superkern.analysis import fit_report, format_report
    from superkern.analysis.tables import load_results
    from superkern.toy import ToyConfig

    n, widths = 10240, [8, 16, 32, 64, 128, 256, 512, 1024]
    data = {"exponential": {}, "linear": {}, "power": {"alpha": 1.2}}
    path = tmp_path / "results.jsonl"
    with open(path, "w") as f:
        for dist, extra in data.items():
            for gamma in (0.1, -1.0):
                for m in widths:
                    cfg = ToyConfig(n=n, m=m, gamma=gamma, dist=dist, preset="large", steps=10,
                                    batch=8, **extra)
                    f.write(json.dumps({"run_id": cfg.run_id, "config": cfg.to_dict(),
                                        "final_loss": 2.0 * m ** -0.5, "final_loss_std": 0.01,
                                        "phi_half": m / n, "phi_1": m / n}) + "\n")
    rep = fit_report(load_results(path), n_boot=0)
    i = np.arange(n, dtype=np.float64)
    p_of = {"exponential": np.exp(-i / 400), "linear": (n - i) / n, "power": (i + 1) ** -1.2}
    seen = set()
    for c in rep.cells:
        dist = c.cell["dist"]
        if c.gamma < 0:
            assert c.ideal is None
            continue
        p = p_of[dist]
        ideal = np.array([p[m:].sum() for m in widths])
        sel = slice(-5, None) if dist == "power" else slice(None)   # the paper's weak ranges
        ref = linregress(np.log(widths)[sel], np.log(ideal)[sel])
        assert c.ideal.alpha_m == pytest.approx(-ref.slope, rel=1e-9)
        assert c.ideal.r2 == pytest.approx(ref.rvalue ** 2, rel=1e-9)
        assert c.ideal.n_points == (5 if dist == "power" else 8)
        seen.add(dist)
    assert seen == set(data)
    by = {c.cell["dist"]: c.ideal for c in rep.cells if c.ideal is not None}
    assert by["power"].r2 > 0.98 and by["exponential"].r2 < 0.8 and by["linear"].r2 < 0.8
    text = format_report(rep)
    assert "ideal weak loss" in text and f"{by['power'].r2:.3f}" in text


def test_cells_never_pool_different_models_as_seeds(tmp_path):
    """Runs of two learning rates are two cells; the large preset's width-dependent rates stay
    one; one model stored twice (older run ids) counts once, never as two seeds."""
    from superkern.analysis.scaling import fit_cells
    from superkern.analysis.tables import cell_key, load_results
    from superkern.toy import ToyConfig

    f = tmp_path / "lr" / "results.jsonl"
    _write_runs(f, "fp32", {-1.0: 1.0}, lr=0.01)  # preset None's own lr
    _write_runs(f, "fp32", {-1.0: 0.5}, lr=0.05, mode="a")
    fits = fit_cells(load_results(f), "all", n_boot=0)
    assert sorted((c.label, round(c.fit.alpha_m, 6)) for c in fits) == [
        ("exponential, gamma=-1, lr=0.05", 0.5), ("exponential, gamma=-1, lr=preset", 1.0)]
    assert all(c.n_runs == 5 and c.fit.n_seeds == 1 for c in fits)
    large = [ToyConfig(preset="large", n=256, m=m, gamma=-1.0, dist="linear", steps=10, batch=8)
             for m in (8, 16, 32)]
    assert len({c.lr for c in large}) == 3  # 0.02 (8/m)^0.25, 2/m: still one cell
    assert len({cell_key(c.to_dict()) for c in large}) == 1
    assert len({cell_key(c.replace(lr=0.01).to_dict()) for c in large}) == 1
    assert cell_key(large[0].replace(lr=0.01).to_dict()) != cell_key(large[0].to_dict())
    # alpha does not enter a non-power model: one run id, so a sweep trains it once.
    exp = [ToyConfig(n=64, m=8, gamma=-1.0, dist="exponential", alpha=a, steps=5, batch=4)
           for a in (1.0, 1.5)]
    assert exp[0].run_id == exp[1].run_id
    assert exp[0].replace(dist="power").run_id != exp[1].replace(dist="power").run_id
    # Rows written before that (two run ids, one model): kept once, with a warning.
    g = tmp_path / "dup" / "results.jsonl"
    g.parent.mkdir()
    with open(g, "w") as out:
        for i, a in enumerate((1.0, 1.5)):
            for m in (8, 16, 32):
                cfg = ToyConfig(n=64, m=m, gamma=-1.0, dist="exponential", alpha=a, steps=5,
                                batch=4).to_dict()
                out.write(json.dumps({"run_id": f"old{i}{m}", "config": cfg,
                                      "final_loss": 1.0 / m, "final_loss_std": 0.0}) + "\n")
    with pytest.warns(UserWarning, match=r"are the same model.*differing only in \['alpha'\]"):
        (fit,) = fit_cells(load_results(g), "all", n_boot=0)
    assert fit.n_runs == 3 and fit.fit.n_seeds == 1


def test_runs_above_the_zero_output_loss_are_flagged_as_untrained(tmp_path):
    """A loss over 10% above <v^2> E = 4E/3 (what y = 0 gets) means the model did not train:
    the report says so instead of printing the exponents of the start of training beside the
    paper's."""
    from superkern.analysis import fit_report, format_report
    from superkern.analysis.tables import load_results

    _write_runs(tmp_path / "ok" / "results.jsonl", "fp32", {-1.0: 1.0})  # 2 m^-1 <= 0.25
    rep = fit_report(load_results(tmp_path / "ok"), "all", n_boot=0)
    assert rep.untrained == [] and "not trained" not in format_report(rep)
    _write_runs(tmp_path / "short" / "results.jsonl", "fp32", {-1.0: 0.1})  # 2 m^-0.1: 1.23..1.62
    res = load_results(tmp_path / "short")
    rep = fit_report(res, "all", n_boot=0)
    above = sorted(r.run_id for r in res.runs if r.final_loss > 1.1 * 4 / 3)
    assert len(above) == 2 and sorted(rep.untrained) == above  # m = 8, 16 (m = 32: 1.41 < 1.47)
    assert "warning: 2 of 5 runs end over 10% above the loss of predicting zero" in \
        format_report(rep)
    assert rep.to_dict()["untrained"] == rep.untrained
    from superkern.cli import main

    with pytest.warns(UserWarning, match=r"2 of 5 runs of the second results end over 10% "
                                         r"above the loss of predicting zero"):
        main(["fit", str(tmp_path / "ok"), "--against", str(tmp_path / "short"), "--range",
              "all"])


