"""Values of analysis helpers that figures and fits rely on, against direct computations:
overlaps among strong and weak rows (Figs. 5b, 15, 16), the unlearned-loss integral (App. D.5),
the fit-range fallback and error cells, and which rows ``load_results`` leaves out."""
from __future__ import annotations

import json
import math

import pytest
import torch

from superkern.analysis.scaling import fit_cells
from superkern.analysis.tables import load_results
from superkern.analysis.weights import strong_weak, subset_overlaps
from superkern.toy import ToyConfig
from tests.utils import gold_stats


def _rows_with_norms():
    g = torch.Generator().manual_seed(11)
    W = torch.randn(60, 8, generator=g, dtype=torch.float64)
    W /= W.norm(dim=1, keepdim=True)
    scale = torch.linspace(0.2, 1.8, 60, dtype=torch.float64)  # about half above 1
    W *= scale[torch.randperm(60, generator=g)][:, None]
    W[17] = 0.0
    return W


def test_strong_and_weak_overlaps_equal_the_gold():
    W = _rows_with_norms()
    norms = W.norm(dim=1)
    got = strong_weak(W)
    strong = gold_stats(W[norms > 1])
    assert got["strong"]["count"] == strong["N"] > 2
    for key in ("mean_sq", "mean_abs"):
        assert got["strong"][key] == pytest.approx(strong[key], rel=1e-12)
    c = strong["c"]  # every pair once
    assert got["strong"]["var_abs"] == pytest.approx(float(c.abs().var(unbiased=False)),
                                                     rel=1e-12)
    weak = gold_stats(W[(norms <= 1) & (norms > 0)])
    assert got["weak"]["count"] == weak["N"] == 60 - 1 - strong["N"]  # the zero row is out
    assert got["weak"]["mean_sq"] == pytest.approx(weak["mean_sq"], rel=1e-12)
    assert math.isnan(got["weak"]["mean_abs"])  # not asked for
    one = subset_overlaps(W, norms > 1.79)  # at most one row: no pair
    assert one["count"] <= 1 and math.isnan(one["mean_sq"]) and math.isnan(one["mean_abs"])


def test_unlearned_loss_integral_against_quadrature():
    from scipy.integrate import quad

    from superkern.sweep.engine import unlearned_loss_integral

    n, phi = 10240, 0.01
    for alpha in (1.0, 1.2, 0.6):
        cfg = {"dist": "power", "n": n, "alpha": alpha, "E": 1.0}
        tail = quad(lambda i: i ** -alpha, phi * n, n, limit=200)[0]
        total = quad(lambda i: i ** -alpha, 1, n, limit=200)[0]
        assert unlearned_loss_integral(cfg, phi) == pytest.approx(4 / 3 * tail / total,
                                                                  rel=1e-7), alpha
    assert unlearned_loss_integral({"dist": "power", "n": n, "alpha": 1.2}, 0.01) == \
        pytest.approx(0.3775299, rel=1e-6)
    assert math.isnan(unlearned_loss_integral({"dist": "linear", "n": n}, 0.01))


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(m, loss, **over):
    cfg = ToyConfig(n=1024, m=m, gamma=-1.0, dist="power", alpha=1.2, steps=10, batch=8,
                    preset="large")
    return {"run_id": cfg.run_id, "config": cfg.to_dict(), "final_loss": loss,
            "final_loss_std": 0.01 * loss, "phi_half": 1.0, "phi_1": 0.5, **over}


def test_paper_range_falls_back_to_all_widths_and_errors_are_cells(tmp_path):
    """Strong power law (large preset): the paper fits m >= 32. With widths 8, 16, 32 that
    leaves one width, so the paper range falls back to all widths and says so; a range asked
    for by name gives an error cell instead."""
    path = tmp_path / "results.jsonl"
    _write(path, [_row(m, 3.0 * m ** -0.9) for m in (8, 16, 32)])
    (cell,) = fit_cells(load_results(path), "paper", n_boot=0)
    assert cell.fit.fit_range == "all (paper's m>=32 left < 3 widths)"
    assert cell.fit.alpha_m == pytest.approx(0.9, abs=1e-12)
    (cell,) = fit_cells(load_results(path), "m>=32", n_boot=0)
    assert cell.fit is None and "need >= 3" in cell.error


def test_load_results_leaves_out_duplicates_diverged_and_nan(tmp_path):
    path = tmp_path / "results.jsonl"
    first = _row(8, 1.0)
    rows = [first, dict(first, final_loss=5.0),               # duplicate run_id: first kept
            _row(16, float("nan")), _row(32, 0.5, diverged=True), _row(64, 0.25)]
    path.write_text("".join(json.dumps(r).replace("NaN", "null") + "\n" for r in rows))
    with pytest.warns(UserWarning, match="left out 3 row"):
        res = load_results(path)
    assert res.skipped == 3
    assert sorted((r.m, r.final_loss) for r in res.runs) == [(8, 1.0), (64, 0.25)]
