"""Bad arguments to the Python API (from an adversarial audit): each is a ValueError that
names the problem, raised before any work or file, never a TypeError from deep inside;
config round trips keep what the constructor would fill."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import superkern
from superkern.toy import ToyConfig, toy_probabilities, train_many
from tests.sweep_fakes import make_fake, small_configs


@pytest.mark.parametrize("spec, match", [
    ((10, "power", 1.0, 1.0, -1.0), r"density_s must be a number in \[0, 1\]"),
    ((10, "power", float("nan")), "alpha must be a finite number"),
    ((10, "power", 1.0, float("nan")), "E must be a finite number"),
])
def test_probability_specs_are_checked(spec, match):
    with pytest.raises(ValueError, match=match):
        toy_probabilities(spec)


def test_probability_specs_accept_lists_and_numpy_scalars():
    want = toy_probabilities((10, "power", 1.0))
    for spec in ([10, "power", 1.0], (np.int64(10), "power", 1.0, np.float32(1.0))):
        assert torch.equal(toy_probabilities(spec), want)
    assert toy_probabilities((10, "exponential", None)).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("kw, match", [
    (dict(dist=(None,) * 20), "explicit dist must be n probabilities .*None"),
    (dict(dist=("a",) * 20), "explicit dist must be n probabilities .*'a'"),
    (dict(steps="100", preset="large"), "steps must be an integer >= 1, got '100'"),
    (dict(n=10 ** 13), "n=10000000000000 features is more than 2147483647"),
])
def test_toy_config_values_are_checked_before_use(kw, match):
    base = dict(n=20, m=2, preset=None, steps=1, batch=1)
    with pytest.raises(ValueError, match=match):
        ToyConfig(**{**base, **kw})


def test_from_dict_fills_as_the_constructor_does():
    assert ToyConfig.from_dict({"m": 10, "warmup": 0}).warmup == ToyConfig(m=10, warmup=0).warmup
    big = {**ToyConfig(m=16, preset="large").to_dict(), "m": np.int64(16)}
    assert ToyConfig.from_dict(big).replace(m=32).lr == ToyConfig(m=32, preset="large").lr
    with pytest.raises(ValueError, match="m must be an integer >= 1, got 0"):
        ToyConfig.from_dict({"m": 0, "preset": "large"})
    with pytest.raises(ValueError, match="from_dict needs a dict"):
        ToyConfig.from_dict(None)
    with pytest.raises(ValueError, match=r"unknown ToyConfig field\(s\) \['foo'\]"):
        ToyConfig(m=4).replace(foo=1)


def test_sweep_arguments_are_checked_before_the_folder_is_touched(tmp_path):
    from superkern.sweep import build_configs, run_sweep

    configs = small_configs()
    for shard, match in (((0, 2), "need 1 <= K <= N"), ((1.5, 2), r"shard must be \(K, N\)"),
                         ("3/2", "need 1 <= K <= N")):
        with pytest.raises(ValueError, match=match):
            run_sweep(configs, tmp_path / "s", train_fn=make_fake(), progress=False,
                      shard=shard)
    for mi in (0, 2.5, None):
        with pytest.raises(ValueError, match="max_instances must be an integer >= 1"):
            run_sweep(configs, tmp_path / "s", train_fn=make_fake(), progress=False,
                      max_instances=mi)
    with pytest.raises(ValueError, match="run_sweep takes ToyConfig objects"):
        run_sweep([configs[0].to_dict()], tmp_path / "s", train_fn=make_fake(),
                  progress=False)
    assert not (tmp_path / "s").exists()
    summary = run_sweep(configs[:2], tmp_path / "ok", train_fn=make_fake(), progress=False,
                        save_weights=False, shard="1/1")  # the CLI's string form works too
    assert summary.trained == 2
    with pytest.raises(ValueError, match=r"config 1/1: a int, not a dict"):
        build_configs([1])


def test_compare_and_vocab_arguments():
    W = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    for bad in (W, "minilm"):
        with pytest.raises(ValueError, match="compare takes a list of heads"):
            superkern.compare(bad)
    head = superkern.load_head(W)
    with pytest.raises(ValueError, match="vocab must be a list of token strings"):
        superkern.load_head(W, vocab="vocab.txt")
    with pytest.raises(ValueError, match="vocab has 31 tokens but the head has only 30 rows"):
        superkern.load_head(W, vocab=[f"t{i}" for i in range(31)])
    named = superkern.load_head(head, vocab=[f"t{i}" for i in range(20)])  # shorter: padded
    assert named.token(3) == "t3" and named.token(25) == "#25"
    assert head.vocab is None  # the caller's Head is not changed


@pytest.mark.parametrize("kw, match", [
    (dict(rows={1, 2}), "got a set"), (dict(rows=slice(0, 10)), "got a slice"),
    (dict(rows=[1, None]), "integer indices"), (dict(rows=[2 ** 70]), "integer indices"),
    (dict(center="no"), "center must be True or False"),
    (dict(per_row=1), "per_row must be True or False"),
])
def test_overlap_stats_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        superkern.overlap_stats(torch.randn(20, 4), **kw)


@pytest.mark.parametrize("kw, match", [
    (dict(exclude=1.0), "exclude must be row indices"),
    (dict(centred="no"), "centred must be True or False"),
    (dict(norm_bins=10 ** 12), "norm_bins=1000000000000 exceeds"),
    (dict(token_counts={"a": 1}), "not a dict"),
])
def test_probe_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        superkern.probe(torch.randn(30, 4), progress=False, **kw)
    assert superkern.probe(torch.randn(30, 4), bins=np.int64(10), progress=False).n == 30


def test_analysis_and_toy_helpers_refuse_wrong_kinds(tmp_path):
    from superkern.analysis.fits import fit_power_law, fit_width_law
    from superkern.analysis.zipf import zipf_fit
    from superkern.toy.data import sample_batch
    from superkern.toy.result import load_weights

    m, L = [8, 16, 32, 64], [1.0, 0.5, 0.25, 0.125]
    with pytest.raises(ValueError, match="fit_range must be a range name"):
        fit_power_law(m, L, None)
    with pytest.raises(ValueError, match="'paper' picks a range per cell"):
        fit_power_law(m, L, "paper")
    from superkern.analysis.fits import fit_power_law_seeds

    seeds = [[v, 1.1 * v] for v in L]
    with pytest.raises(ValueError, match=r"width m = 16 has \[0.5, 0.0\]"):
        fit_power_law_seeds(m, [seeds[0], [0.5, 0.0]] + seeds[2:], "all")
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        fit_power_law_seeds(m, seeds, "all", seed=-1)
    assert superkern.overlap_moments_exact(torch.randn(20, 4), block=np.int64(8))["n_used"] == 20
    mixed = [(1,)] * 4 + [("b",)] * 4  # labels of mixed types sort as strings
    fit = fit_width_law(mixed, m + m, [2 / v + 1 for v in m] + [2 / v + 2 for v in m])
    assert fit.alpha_m == pytest.approx(1.0, abs=1e-6)
    c = 1000.0 / np.arange(1, 200)
    assert zipf_fit(c * 1e305).alpha == pytest.approx(zipf_fit(c).alpha, abs=1e-12)
    with pytest.raises(ValueError, match="for a {token: count} dict pass its values"):
        zipf_fit({"a": 3})
    with pytest.raises(ValueError, match="points must be an integer >= 2, got 2.5"):
        zipf_fit(c, points=2.5)
    g = torch.Generator()
    with pytest.raises(ValueError, match="p must be a torch tensor"):
        sample_batch(np.full(4, 0.5), 2, g)
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        sample_batch(torch.tensor([0.5, 1.5]), 2, g)
    garbage = tmp_path / "w.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable weights file"):
        load_weights(garbage)
    from safetensors.torch import save_file
    short = tmp_path / "short.safetensors"  # b of length 4 for n = 3 loaded silently
    save_file({"W": torch.zeros(3, 2), "b": torch.zeros(4)}, str(short), metadata={
        "config": json.dumps(ToyConfig(n=3, m=2, preset=None, steps=2, batch=4).to_dict())})
    with pytest.raises(ValueError, match=r"W has shape \[3, 2\] and b \[4\], but its config "
                                         r"says n=3, m=2"):
        load_weights(short)
    cfg = ToyConfig(n=12, m=2, preset=None, steps=2, batch=4, backend="torch")
    with pytest.raises(ValueError, match="train_many takes a list of ToyConfigs"):
        train_many(cfg)
    with pytest.raises(ValueError, match="progress must be None, True/False or a callable"):
        train_many([cfg], device="cpu", progress="yes")
    assert json.loads(json.dumps(superkern.train(cfg, device="cpu").to_dict()))["run_id"]


def test_probe_row_forms_match_overlap_stats():
    """exclude and rows take what overlap_stats takes: ints, sets, tensors, masks."""
    W = torch.randn(50, 4, generator=torch.Generator().manual_seed(3))
    kw = dict(progress=False, splits=False, centred=False)
    for ex, want in ((5, [5]), ({1, 2}, [1, 2]), (torch.tensor([1, 2]), [1, 2]),
                     (np.array([True] + [False] * 49), [0]), ("0-3", [0, 1, 2, 3])):
        assert superkern.probe(W, exclude=ex, **kw).to_dict()["rows"]["excluded_rows"] == want
    rows = superkern.probe(W, rows=[True] * 10 + [False] * 40, **kw)
    assert rows.to_dict()["rows"]["analysed"] == 10
    assert rows.blocks["all"].mean_sq == pytest.approx(
        superkern.overlap_stats(W[:10]).mean_sq, rel=1e-6)  # exact fp64 vs fp32 tiles
    with pytest.raises(ValueError, match="a mask must have n=50 entries, got 3"):
        superkern.probe(W, exclude=[True, False, True], **kw)
