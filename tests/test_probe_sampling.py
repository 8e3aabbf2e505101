"""Sampled probe statistics carry honest errors: the standard error of a sampled mean |c|
against the spread of the mean over many samples, and the report's labels (a sampled
maximum and top pairs say they come from a sample)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from superkern import probe
from superkern.probe.rowsel import sampled_mean_abs_se


def _head(n, m, seed, uneven=True):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, m, generator=g, dtype=torch.float64)
    if uneven:  # a third of the rows share a direction: rows' mean |c| differ (s1 large)
        W[: n // 3] += 2.0 * torch.randn(1, m, generator=g, dtype=torch.float64)
    return W


@pytest.mark.parametrize("uneven", [True, False])
@pytest.mark.parametrize("S", [60, 200, 360])
def test_standard_error_matches_the_spread_over_samples(S, uneven):
    """400 rows; 300 samples of S without replacement (up to 90% of the rows, where the
    finite-population terms matter), each mean |c| exact over its pairs: their sd, and the
    mean |c| of all 79800 pairs, against the standard error computed from each sample
    alone."""
    W = _head(400, 12, seed=3, uneven=uneven)
    U = torch.nn.functional.normalize(W, dim=1)
    iu = torch.triu_indices(400, 400, 1)
    full = float((U @ U.T)[iu[0], iu[1]].abs().mean())
    rng = np.random.default_rng(0)
    means, ses = [], []
    for t in range(300):
        s = torch.from_numpy(np.sort(rng.choice(400, S, replace=False)))
        C = (U[s] @ U[s].T).abs()
        j = torch.triu_indices(S, S, 1)
        means.append(float(C[j[0], j[1]].mean()))
        ses.append(sampled_mean_abs_se(W, s, 400, seed=t, probe_rows=60))
    sd, se = float(np.std(means, ddof=1)), float(np.mean(ses))
    assert 0.88 < se / sd < 1.12, (se, sd)  # 300 samples: sd known to ~4%
    assert abs(np.mean(means) - full) < 3 * sd / math.sqrt(300)  # unbiased
    z = (np.array(means) - full) / np.array(ses)
    assert 0.85 < float(np.sqrt(np.mean(z ** 2))) < 1.2
    assert math.isnan(sampled_mean_abs_se(W, torch.tensor([0, 1]), 400, seed=0))
    # the whole population sampled: no sampling error left
    assert sampled_mean_abs_se(W, torch.arange(400), 400, seed=0) == 0.0


def test_sampled_report_states_errors_and_labels_its_maximum(tmp_path):
    W = _head(1500, 24, seed=5).float()
    rep = probe(W, sample=300, sample_main=True, topk=3, bins=16, progress=False)
    d = rep.to_dict()["overlaps"]
    for key, b in d.items():
        if b.get("tiled") is None:
            continue
        assert b["sampled"] and b["sample_rows"] == 300, key
        assert 0 < b["mean_abs_se"] < 0.05 * b["mean_abs"], (key, b["mean_abs_se"])
    text = rep.format_table()
    assert "Largest |c| in a sample of 300 rows = " in text
    assert "Top 3 pairs by |c| in a sample of 300 rows:" in text
    assert f"{d['all']['mean_abs']:.4g} +- " in text and "max|c| a lower bound" in text
    assert "## Most overlapping pairs in a sample of 300 rows" in rep.to_markdown()
    exact = probe(W, sample=0, topk=3, progress=False).to_dict()["overlaps"]
    assert exact["all"]["sampled"] is False and exact["all"]["mean_abs_se"] is None
    assert "in a sample" not in probe(W, sample=0, progress=False).format_table()
    assert json.loads(json.dumps(rep.to_dict(), allow_nan=False))
