"""The data sampler x_i = u_i v_i: frequencies against p (binomial z-scores, chi-square) and
magnitudes against U(0, 2) (Kolmogorov-Smirnov), with tests that can fail."""
import math

import pytest
import torch
from scipy import stats

from superkern.toy import sample_batch, toy_probabilities


def _freq_zscores(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    B = x.shape[0]
    k = (x > 0).sum(0).double()
    return (k - B * p) / torch.sqrt(B * p * (1 - p))


def _sample(p, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return sample_batch(p, B, g)


def test_frequencies_match_p():
    p = toy_probabilities((60, "power", 0.7, 3.0))
    x = _sample(p, 20000)
    z = _freq_zscores(x, p)
    chi2 = float((z * z).sum())
    pval = float(stats.chi2.sf(chi2, df=p.numel()))
    worst = int(z.abs().argmax())
    assert float(z.abs().max()) < 5.0, f"max |z| = {float(z.abs().max()):.2f} at feature {worst}"
    assert pval > 1e-4, f"chi2 = {chi2:.1f} on {p.numel()} df, p-value {pval:.2e}"


def test_frequency_test_has_power():
    # The same test must reject a sampler whose p is 5 % off.
    p = toy_probabilities((60, "power", 0.7, 3.0))
    x = _sample(p * 1.05, 20000)
    z = _freq_zscores(x, p)
    pval = float(stats.chi2.sf(float((z * z).sum()), df=p.numel()))
    assert pval < 1e-4, f"a 5% error in p went undetected (p-value {pval:.2e})"


def test_magnitudes_uniform_0_2():
    p = toy_probabilities((40, "linear", 0.0, 10.0))
    x = _sample(p, 4000)
    v = x[x > 0].double().numpy()
    assert v.min() > 0 and v.max() < 2.0
    ks = stats.kstest(v, "uniform", args=(0.0, 2.0))
    assert ks.pvalue > 1e-4, f"KS statistic {ks.statistic:.4f}, p-value {ks.pvalue:.2e}, N={v.size}"
    # <v^2> = 4/3: the constant of the unlearned-feature loss.
    v2 = float((v * v).mean())
    se = math.sqrt((16 / 5 - (4 / 3) ** 2) / v.size)
    assert abs(v2 - 4 / 3) < 5 * se, (v2, se)
    wrong = stats.kstest(v / 2.0, "uniform", args=(0.0, 2.0))
    assert wrong.pvalue < 1e-4, "KS test cannot tell U(0, 1) from U(0, 2)"


def test_sampler_stream_reproducible_and_fresh():
    p = toy_probabilities((30, "power", 1.0))
    g1 = torch.Generator().manual_seed(7)
    g2 = torch.Generator().manual_seed(7)
    a1, b1 = sample_batch(p, 16, g1), sample_batch(p, 16, g1)
    a2 = sample_batch(p, 16, g2)
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, b1)
    assert a1.dtype == torch.float32 and a1.shape == (16, 30)
    # Draw order as the authors': the first B*n uniforms decide u, the next B*n give v.
    g = torch.Generator().manual_seed(7)
    r1 = torch.rand(16, 30, generator=g)
    r2 = torch.rand(16, 30, generator=g)
    want = (r1 < p.float()).float() * r2 * 2
    assert torch.equal(a1.view(torch.int32), want.view(torch.int32))  # bit for bit


def test_sampler_rejects_bad_arguments():
    p = toy_probabilities((5, "power", 1.0))
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        sample_batch(p, 0, torch.Generator())
    with pytest.raises(ValueError, match="p must be 1-D"):
        sample_batch(p[None], 3, torch.Generator())
