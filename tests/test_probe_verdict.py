"""The probe's verdict, baselines and sampling: the verdict on toy geometries (labels, norm
scale, notes, evidence), the random-vector baselines, which rows a sampled pass draws, and
compare's derived columns."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import superkern
from superkern.probe import baselines
from superkern.probe.core import probe
from tests.test_probe import _toy
from tests.utils import assert_close


def test_random_baselines():
    assert_close("E|c| m=2", baselines.random_mean_abs(2), 2 / math.pi, 1e-14)
    assert_close("E|c| m=3", baselines.random_mean_abs(3), 0.5, 1e-14)
    for m in (3, 5, 64, 384, 4096):  # m = 2 has integrable poles at +-1
        c = np.linspace(-1, 1, 400001)
        f = baselines.random_density(c, m)
        assert_close(f"int f m={m}", np.trapezoid(f, c), 1.0, 1e-4)
        assert_close(f"E c^2 m={m}", np.trapezoid(c * c * f, c), 1 / m, 1e-3)
        mean_abs = np.trapezoid(np.abs(c) * f, c)
        assert_close(f"E|c| m={m}", mean_abs, baselines.random_mean_abs(m), 1e-3)
        assert_close(f"E c^2 baseline m={m}", baselines.random_mean_sq(m), 1 / m, 1e-15)
        assert_close(f"Var|c| m={m}", baselines.random_var_abs(m),
                     np.trapezoid(c * c * f, c) - mean_abs ** 2, 2e-3)
    g = torch.Generator().manual_seed(0)
    U = torch.nn.functional.normalize(torch.randn(4000, 64, generator=g, dtype=torch.float64))
    c = (U[:2000] * U[2000:]).sum(1)
    assert abs(float(c.abs().mean()) - baselines.random_mean_abs(64)) < 0.005
    assert baselines.welch_bound(10, 10) == 0.0
    assert_close("welch", baselines.welch_bound(6, 3), math.sqrt(3 / 15), 1e-14)
    assert baselines.etf_possible(6, 3) and not baselines.etf_possible(7, 3)


def test_verdicts_on_toy_geometries():
    n, m = 600, 24
    strong = probe(_toy(n, m, 0, torch.ones(n)), progress=False)
    assert strong.verdict["label"] == "strong superposition", strong.verdict
    assert strong.verdict["norm_scale"] == "raw"
    assert 0.8 < strong.verdict["evidence"]["m_mean_sq"] < 1.25
    norms = torch.full((n,), 0.01)
    norms[:40] = 1.0  # 40 > m rows represented, the rest off
    weak = probe(_toy(n, m, 1, norms), progress=False)
    assert weak.verdict["label"] == "weak superposition", weak.verdict
    norms[20:] = 0.0  # fewer represented rows than dimensions
    none = probe(_toy(n, m, 2, norms), progress=False)
    assert none.verdict["label"] == "no superposition", none.verdict
    assert none.blocks["all"].exact["n_zero"] == n - 20
    few = probe(_toy(10, m, 3, torch.ones(10)), progress=False)
    assert few.verdict["label"] == "no superposition"
    scaled = probe(_toy(n, m, 4, torch.full((n,), 5.0)), progress=False)
    assert scaled.verdict["norm_scale"] == "median"
    assert scaled.verdict["label"] == "strong superposition"
    # 60% untrained rows far below the rest: the median scale alone called all represented
    split = torch.full((n,), 0.02)
    split[:240] = 3.0
    two = probe(_toy(n, m, 5, split), progress=False)
    assert two.verdict["norm_scale"] == "median" and two.verdict["label"] == "undetermined"
    assert two.verdict["evidence"]["phi_half_of_q90"] == pytest.approx(0.4)
    # A near-tight frame (60 rows in 50 dimensions): m mean c^2 ~ 0.17, below 1/4 because the
    # rows overlap less than random ones (the note said "more clustered")
    Q = torch.linalg.qr(torch.randn(60, 60, generator=torch.Generator().manual_seed(6),
                                    dtype=torch.float64))[0][:, :50]
    frame = probe(torch.nn.functional.normalize(Q, dim=1).float(), progress=False)
    assert frame.verdict["label"] == "strong superposition"
    notes = " ".join(frame.verdict["notes"])
    assert "overlap less than random packing" in notes and "clustered" not in notes
    assert "n/m = 1.20: barely more rows than dimensions" in notes


def test_zero_rows_outliers_and_scale_choice():
    n, m = 1000, 16
    norms = torch.ones(n)
    norms[500:] = 0.0  # half the vocabulary is padding
    rep = probe(_toy(n, m, 7, norms), progress=False, splits=False)
    ev = rep.verdict["evidence"]
    assert ev["n_represented"] == 500 and ev["rows_analysed"] == n and ev["n"] == 500
    assert ev["thresholds"] == {"represented_min_phi_half": 0.9,
                                "m_mean_sq_close_to_1_within_factor": 4.0,
                                "toy_scale_min_norm": 0.5, "toy_scale_max_norm": 2.0,
                                "toy_scale_max_fraction_above": 0.01}
    assert rep.verdict["label"] == "weak superposition" and "500 of 1000" in rep.verdict["summary"]
    assert rep.norms.median == pytest.approx(1.0)  # nonzero rows: zero padding does not make it 0
    # The centred pass leaves zero rows out too (centring would make them equal vectors).
    cen = rep.blocks["centred"]
    assert cen.exact["n_used"] == 500 and cen.stats.max_abs < 0.999
    X = _toy(n, m, 7, norms)[:500].double()
    Xc = torch.nn.functional.normalize(X - X.mean(0))
    G = Xc @ Xc.T
    P = 500 * 499 / 2
    assert_close("centred mean_sq", cen.exact["mean_sq"], float(((G ** 2).sum() - 500) / 2 / P),
                 1e-9)
    # More than half zero: the median-scaled fractions still see the represented rows.
    norms[300:] = 0.0
    norms[:300] = 3.0
    rep = probe(_toy(n, m, 8, norms), progress=False, splits=False, centred=False)
    assert rep.verdict["norm_scale"] == "median" and rep.norms.median == pytest.approx(3.0)
    assert rep.verdict["evidence"]["n_represented"] == 300
    # One outlying row does not switch the scale: 400 rows at 1 and 600 at 0.05 are weak.
    norms = torch.full((n,), 0.05)
    norms[:400] = 1.0
    for top in (1.0, 2.1):
        norms[0] = top
        v = probe(_toy(n, m, 9, norms), progress=False, splits=False, centred=False).verdict
        assert v["norm_scale"] == "raw" and v["label"] == "weak superposition", (top, v)
    with pytest.raises(ValueError, match="only 1 nonzero row.*among the 10 analysed"):
        probe(torch.cat([torch.ones(1, 4), torch.zeros(9, 4)]), progress=False)
    with pytest.raises(ValueError, match="only 0 nonzero"):
        probe(torch.zeros(10, 4), progress=False)


def test_a_sampled_main_pass_draws_among_nonzero_rows():
    """Half the rows are zero: the sample of 6 drew from all 200 rows (fewer nonzero rows than
    asked; its top-k cap counted zero rows and failed with P = 0). Without rows=, the report
    has no selection (a centred run said 'selected 200')."""
    W = torch.randn(200, 8, generator=torch.Generator().manual_seed(8))
    W[:100] = 0
    rep = probe(W, sample=6, sample_main=True, topk=15, seed=0, progress=False)
    d = rep.to_dict()
    assert d["overlaps"]["all"]["sampled"] and d["overlaps"]["all"]["sample_rows"] == 6
    assert len(rep.blocks["all"].stats.topk_values) == 15
    assert d["rows"]["selected"] is None
    assert probe(W, rows=list(range(150)), progress=False).to_dict()["rows"]["selected"] == 150


def test_frequencies_as_token_counts_print_as_frequencies():
    """token_counts may be frequencies (the docs allow it): they printed as '1 tokens' and
    '0-0' in every counts cell."""
    W = torch.randn(300, 8, generator=torch.Generator().manual_seed(9))
    p = 1 / torch.arange(1, 301, dtype=torch.float64)
    freq = probe(W, token_counts=(p / p.sum()).numpy(), progress=False)
    text = str(freq)
    assert "total frequency 1;" in text and " 0-0 " not in text and "0.159-0.0796" in text
    assert freq.to_dict()["frequency"]["tokens_counted"] == pytest.approx(1.0)
    counts = probe(W, token_counts=(p / p.sum() * 1e4).round().numpy(), progress=False)
    assert "9998 tokens;" in str(counts) and "1592-796" in str(counts)


def test_split_blocks_sample_the_same_rows_with_or_without_the_centred_block():
    """Each block's seed was seed + the number of blocks before it: turning centred off
    changed which rows the split blocks sampled."""
    W = torch.randn(400, 8, generator=torch.Generator().manual_seed(10)).abs() + 0.5
    on = probe(W, sample=50, seed=3, progress=False)
    off = probe(W, sample=50, seed=3, centred=False, progress=False)
    for key in ("norm>1", "norm>median"):
        if on.blocks[key].sampled:
            assert on.blocks[key].stats.mean_abs == off.blocks[key].stats.mean_abs, key
    assert on.blocks["norm>median"].sampled


def test_min_norm_evidence_leaves_padding_rows_out():
    """min_norm_over_median is the paper's "non-zero minimum norm": padding rows made it 0."""
    norms = torch.ones(300)
    norms[:150] = 2.0
    W = _toy(300, 8, 11, norms)
    W[290:] = 0
    ev = probe(W, progress=False).verdict["evidence"]
    assert ev["n_zero"] == 10 and ev["min_norm_over_median"] == pytest.approx(0.5)


def test_compare_n_over_m_counts_the_rows_in_the_pairs():
    """compare's n/m counted zero rows, which the verdict and the Welch bound leave out."""
    W = torch.randn(500, 20, generator=torch.Generator().manual_seed(12))
    W[400:] = 0
    row = superkern.compare([W], names=["h"], progress=False).rows[0]
    assert row["n"] == 500 and row["n_over_m"] == pytest.approx(400 / 20)


def test_random_gaussian_rows_are_named_as_such():
    """iid Gaussian rows are strong superposition by the paper's statistics: the verdict says
    that these two statistics cannot tell them from noise; rows whose norms spread as a trained
    head's do (std/mean ~0.2) get no such note."""
    g = torch.Generator().manual_seed(5)
    W = torch.randn(6000, 64, generator=g)
    rep = probe(W, progress=False, splits=False)
    v = rep.verdict
    assert v["label"] == "strong superposition" and v["evidence"]["norm_cv"] < 0.1
    assert any("cannot be told from iid random rows" in note for note in v["notes"]), v
    spread = W * (1 + 0.3 * torch.rand(6000, 1, generator=g))
    v = probe(spread, progress=False, splits=False).verdict
    assert v["evidence"]["norm_cv"] > 0.1
    assert not any("iid random rows" in note for note in v["notes"]), v
    # the same directions at norm ~0.5: weak superposition, and no note that speaks of strong
    half = W / W.norm(dim=1, keepdim=True) * 0.5 * (0.98 + 0.04 * torch.rand(6000, 1, generator=g))
    v = probe(half, progress=False, splits=False).verdict
    assert v["label"] == "weak superposition" and v["evidence"]["norm_cv"] < 0.1, v
    assert not any("iid random rows" in note for note in v["notes"]), v


def test_the_verdict_is_wrapped_to_the_terminal_table():
    """Its sentences ran to 250 characters on one line; wrapped, they keep every word."""
    rep = probe(_toy(600, 24, 0, torch.ones(600)), progress=False, splits=False)
    text = str(rep)
    block = text[text.index("Verdict:"):text.index("Run:")]
    assert all(len(line) <= 100 for line in block.splitlines()), block
    assert " ".join(block.split()).count(" ".join(rep.verdict["summary"].split())) == 1
