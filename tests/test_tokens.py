"""Token counts under a given tokenizer (Zipf of tokens) and the probe's row norm vs token
frequency comparison (paper Fig. 6a for an LM head)."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

from superkern.analysis.tokens import load_token_counts, save_token_counts
from superkern.cli import main
from superkern.probe.frequency import format_frequency, frequency_stats

VOCAB = ["[UNK]", "[PAD]", "the", "cat", "sat", "on", "mat", "a", "dog"]


@pytest.fixture
def tokenizer_file(tmp_path):
    """A word-level tokenizer.json with padding and truncation switched on, as MiniLM's is."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = tokenizers.Tokenizer(WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.enable_padding(pad_id=1, pad_token="[PAD]", length=16)
    tok.enable_truncation(max_length=3)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_count_tokens_exact_without_padding_or_truncation(tokenizer_file):
    from superkern.analysis.tokens import count_tokens, load_tokenizer

    tok, name = load_tokenizer(tokenizer_file.parent)  # a folder holding tokenizer.json
    lines = ["the cat sat on the mat\n", "\n", "a dog sat   \n", "the zebra\n"]
    got = count_tokens(lines, tok, batch=2)  # batches of 2 lines: the flush path is used
    want = np.zeros(len(VOCAB), dtype=np.int64)
    for w in " ".join(lines).split():
        want[VOCAB.index(w) if w in VOCAB else 0] += 1
    np.testing.assert_array_equal(got, want)  # no [PAD] (id 1), nothing cut at 3 tokens
    assert got[1] == 0 and got[2] == 3 and got[0] == 1
    assert name == tokenizer_file.parent.name  # a tokenizer.json is named by its folder


def test_fit_zipf_with_tokenizer_and_saved_counts(tokenizer_file, tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = VOCAB[2:]
    p = 1.0 / np.arange(1, len(words) + 1)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words, 12, p=p / p.sum()))
                                for _ in range(400)))
    out = tmp_path / "counts.json"
    assert main(["fit", "zipf", str(corpus), "--tokenizer", str(tokenizer_file),
                 "--save-counts", str(out)]) == 0
    said = capsys.readouterr()
    assert f"{tmp_path.name} tokens" in said.out and f"wrote {out}" in said.err
    counts, meta = load_token_counts(out)
    assert counts.sum() == meta["total"] == 400 * 12 and meta["vocab_size"] == len(VOCAB)
    assert counts[0] == counts[1] == 0 and meta["tokenizer"] == tmp_path.name
    words_seen = corpus.read_text().split()
    assert all(counts[VOCAB.index(w)] == words_seen.count(w) for w in words)
    # the saved file is itself a counts file for 'fit zipf': the same fit, without tokenising
    capsys.readouterr()
    assert main(["fit", "zipf", str(corpus), "--tokenizer", str(tokenizer_file),
                 "--json", "-"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert main(["fit", "zipf", str(out), "--json", "-"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["alpha"] == direct["alpha"] and again["n_tokens"] == 400 * 12
    # misuse: a clear error (exit 2), not a silent fit of something else
    assert main(["fit", "zipf", str(corpus), "--save-counts", str(out)]) == 2
    assert main(["fit", "zipf", str(corpus), "--tokenizer", str(tokenizer_file),
                 "--mode", "counts"]) == 2
    assert main(["fit", "zipf", str(corpus), "--tokenizer", str(tmp_path / "none.json")]) == 2
    assert "no tokenizer file" in capsys.readouterr().err
    assert main(["fit", str(tmp_path), "--tokenizer", str(tokenizer_file)]) == 2
    assert "apply to 'fit zipf'" in capsys.readouterr().err
    # a corpus with nothing to fit: exit 2, and no counts file is left behind
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n")
    out.unlink()
    assert main(["fit", "zipf", str(blank), "--tokenizer", str(tokenizer_file),
                 "--save-counts", str(out)]) == 2 and not out.exists()


def test_minilm_tokenizer_matches_its_vocabulary():
    pytest.importorskip("tokenizers")
    from superkern.analysis.tokens import count_tokens, load_tokenizer

    try:
        tok, name = load_tokenizer("minilm")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    counts = count_tokens(["Superposition yields robust neural scaling.", "the the"], tok)
    assert name == "all-MiniLM-L6-v2" and counts.size == 30522
    assert counts[tok.token_to_id("the")] == 2 and counts[tok.token_to_id("[PAD]")] == 0
    assert counts.sum() == 7 + 2  # super ##position yields robust neural scaling . + the the


def test_token_counts_file_errors(tmp_path):
    ok = tmp_path / "ok.json"
    save_token_counts(ok, np.array([3, 0, 1]), "tok", "corpus")
    counts, meta = load_token_counts(ok)
    assert counts.tolist() == [3, 0, 1] and meta["total"] == 4
    plain = tmp_path / "plain.json"
    plain.write_text("[1, 2.5, 0]")
    assert load_token_counts(plain)[0].tolist() == [1, 2.5, 0]
    for text, match in (("[1, -2]", "token id 1"), ('{"counts": []}', "list of per-token"),
                        ("{", "not a token-counts JSON"), ('[1, "x"]', "must be a number"),
                        ("[[1, 2]]", "flat list")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            load_token_counts(bad)
    with pytest.raises(FileNotFoundError):
        load_token_counts(tmp_path / "missing.json")


def test_frequency_stats_by_hand():
    rng = np.random.default_rng(1)
    n = 60
    norms = rng.uniform(0.5, 1.5, n)
    norms[[4, 7]] = np.nan                        # rows not analysed
    counts = rng.integers(0, 50, n - 10).astype(float)  # 10 padded rows past the counts
    counts[:3] = 0
    centred = norms + rng.normal(0, 0.3, n)
    centred[[4, 7, 9]] = np.nan                   # row 9: a zero row has no centred norm
    f = frequency_stats(norms, counts, "t", n_bins=4, centred=centred)
    seen = np.isfinite(norms) & (np.concatenate([counts, np.zeros(10)]) > 0)
    ok = seen & np.isfinite(centred)
    rho_c = stats.spearmanr(centred[ok], np.concatenate([counts, np.zeros(10)])[ok])[0]
    assert abs(f.spearman_centred - rho_c) < 1e-12
    assert np.isnan(frequency_stats(norms, counts).spearman_centred)
    assert f.rows == seen.sum() and f.padded == 10
    assert f.unseen == np.isfinite(norms).sum() - f.rows
    rho, p = stats.spearmanr(norms[seen], np.concatenate([counts, np.zeros(10)])[seen])
    assert abs(f.spearman - rho) < 1e-12 and abs(f.spearman_p - p) < 1e-12
    assert sum(b["tokens"] for b in f.bins) == f.rows  # every seen token in one bin
    assert f.bins[0]["ranks"][0] == 1 and f.bins[-1]["ranks"][1] == f.rows
    # bins follow the counts, and a group of equal counts is never split between two bins
    assert all(a["count_min"] > b["count_max"] for a, b in zip(f.bins, f.bins[1:]))
    with pytest.raises(ValueError, match=r"cover 61 ids \(id 60 is counted\) but the head has"):
        frequency_stats(norms, np.ones(61))
    ok61 = frequency_stats(norms, np.r_[counts, np.zeros(11)])  # trailing zero ids: fine
    assert ok61.rows == f.rows and ok61.padded == 0
    with pytest.raises(ValueError, match="only 1 analysed nonzero row"):  # 4 is not analysed
        frequency_stats(norms, np.array([0, 1, 0, 0, 1.0]))
    with pytest.raises(ValueError, match="one value per token id"):
        frequency_stats(norms, np.ones((2, 3)))


def test_overlaps_inside_frequency_bins_against_fp64():
    """m<c^2> per frequency bin and among the unseen rows: the exact mean of c_ij^2 over the
    pairs inside each group, raw and with the whole head's column mean removed, against a
    brute-force fp64 Gram matrix; more bins than one Gram batch holds (group of 4)."""
    from superkern import probe
    from superkern.probe.frequency import frequency_bins

    n, m = 400, 16
    gen = torch.Generator().manual_seed(5)
    W = torch.randn(n, m, generator=gen) + 0.7 * torch.randn(m, generator=gen)  # shared part
    W[7] = 0.0  # a zero row: in no bin
    counts = np.floor(1e4 / np.arange(1, n + 1) ** 1.2)  # ties in the tail
    counts[350:] = 0  # unseen
    rep = probe(W, token_counts=counts, progress=False, splits=False)
    f = rep.frequency
    bins, unseen = frequency_bins(rep.row_norms.numpy(), counts)
    assert len(bins) == len(f.bins) > 4 and 7 not in np.concatenate(bins)
    Wd = W.double()
    Wc = Wd - Wd[torch.arange(n) != 7].mean(0)

    def mean_sq(X, ids):
        U = X[torch.from_numpy(ids)]
        U = U / U.norm(dim=1, keepdim=True)
        C = U @ U.T
        k = len(ids)
        return float(((C ** 2).sum() - k) / (k * (k - 1))) if k > 1 else math.nan

    for b, ids in zip(f.bins, bins):
        assert b["tokens"] == len(ids)
        for key, X in (("mean_sq", Wd), ("mean_sq_centred", Wc)):
            want = mean_sq(X, ids)
            assert (math.isnan(b[key]) and math.isnan(want)) or abs(b[key] - want) < 1e-12
    assert abs(f.unseen_overlap["mean_sq"] - mean_sq(Wd, unseen)) < 1e-12
    assert abs(f.unseen_overlap["mean_sq_centred"] - mean_sq(Wc, unseen)) < 1e-12
    assert f.m == m and "m<c^2>" in "\n".join(format_frequency(f.to_dict()))
    from superkern.probe.plots import norm_vs_frequency_figure

    right = norm_vs_frequency_figure(rep).axes[1]  # m<c^2> per bin, raw then centred
    raw, cen = right.get_lines()[:2]
    want = [m * b["mean_sq"] for b in f.bins]
    assert np.allclose(raw.get_ydata(), [v for v in want if v > 0], rtol=1e-12)
    assert np.allclose(cen.get_ydata(), [m * b["mean_sq_centred"] for b in f.bins
                                         if b["mean_sq_centred"] > 0], rtol=1e-12)


def test_one_token_bins_print_a_dash_and_unseen_keeps_its_centred_overlap():
    from superkern import probe

    c = np.zeros(100)
    c[[1, 2, 3]] = [3, 2, 1]  # three bins of one token each: no pairs inside any
    W = torch.randn(100, 8, generator=torch.Generator().manual_seed(1))
    f = probe(W, token_counts=c, progress=False, splits=False).frequency
    assert all(math.isnan(b["mean_sq"]) for b in f.bins)
    lines = format_frequency(f.to_dict())
    assert "m<c^2> centred" in lines[3]
    unseen = next(x for x in lines if x.strip().startswith("unseen"))
    want = 8 * f.unseen_overlap["mean_sq_centred"]
    assert unseen.split()[-1] == f"{want:.3g}" and math.isfinite(want)
    assert lines[4].split()[-2:] == ["-", "-"]


def test_tied_counts_are_binned_together():
    """Norms that grow with the token id but not with the count: 100 tokens seen twice, 900
    once. Binning tie groups by id would show a trend that is not there."""
    norms = np.linspace(1.0, 2.0, 1000)
    counts = np.r_[np.full(100, 2.0), np.ones(900)]
    f = frequency_stats(norms, counts)
    assert [b["tokens"] for b in f.bins] == [100, 900]
    assert [b["ranks"] for b in f.bins] == [[1, 100], [101, 1000]]
    assert [(b["count_max"], b["count_min"]) for b in f.bins] == [(2, 2), (1, 1)]
    # each bin's median is its whole tie group's, not a slice of it ordered by id
    assert [b["median_norm"] for b in f.bins] == [np.median(norms[:100]), np.median(norms[100:])]


def test_zero_rows_are_left_out():
    norms = np.array([1.0, 0.0, 2.0, 3.0, 0.0, 4.0])
    f = frequency_stats(norms, np.array([5, 9, 4, 3, 0, 2.0]))
    assert f.rows == 4 and f.unseen == 0 and 0.0 not in f.ranked_norms
    assert abs(f.spearman + 1.0) < 1e-12  # among nonzero rows, more counts, smaller norm


def test_probe_with_token_counts(tmp_path):
    """Rows whose norm grows with the token's count: rho = 1 in the report, the JSON and the
    plot; a missing counts file fails before any work."""
    from superkern import probe

    n, m = 300, 24
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(n, m, generator=gen)
    counts = np.arange(n, 0, -1, dtype=float) ** 1.1      # token 0 the most frequent
    W *= torch.linspace(2.0, 0.5, n)[:, None] / W.norm(dim=1, keepdim=True)
    path = save_token_counts(tmp_path / "c.json", counts[:280], "tok", "corpus")
    rep = probe(W, token_counts=path, progress=False, splits=False)
    f = rep.frequency
    assert f.rows == 280 and f.padded == 20 and abs(f.spearman - 1.0) < 1e-12
    # the centred norms: those of W minus its column mean, from the probe's centred pass
    Wc = W.double() - W.double().mean(0)
    want = stats.spearmanr(Wc.norm(dim=1).numpy()[:280], counts[:280])[0]
    assert abs(f.spearman_centred - want) < 1e-9
    assert [b["median_norm"] for b in f.bins] == sorted(b["median_norm"] for b in f.bins)[::-1]
    d = json.loads(rep.to_json())
    assert d["frequency"]["rows"] == 280 and "Row norm vs token frequency" in rep.format_table()
    written = rep.save(plots_dir=tmp_path / "plots", markdown_path=tmp_path / "r.md")
    assert str(tmp_path / "plots" / "norm_vs_frequency.png") in written
    assert "## Row norm vs token frequency" in (tmp_path / "r.md").read_text()
    assert "frequency" not in json.loads(probe(W, progress=False, splits=False).to_json())
    with pytest.raises(ValueError, match="cover 301 ids .* but the head has 300 rows"):
        probe(W, token_counts=np.ones(301), progress=False)
    with pytest.raises(ValueError, match="only 2 token id"):  # before the head is loaded
        probe(tmp_path / "no" / "such" / "head.npy", token_counts=np.r_[1.0, 0, 1.0],
              progress=False)
    rows = np.zeros(n)
    rows[[0, 1, 2]] = 5  # three counted ids, but two of them excluded: fails after the norms
    with pytest.raises(ValueError, match="only 1 analysed nonzero row"):
        probe(W, token_counts=rows, exclude="0-1", progress=False)
    plain = probe(W, token_counts=path, progress=False, splits=False, centred=False)
    assert "centred" not in "\n".join(format_frequency(plain.to_dict()["frequency"]))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        probe(W, token_counts=tmp_path / "missing.json", progress=False)
    np.save(tmp_path / "W.npy", W.numpy())
    assert main(["probe", str(tmp_path / "W.npy"), "--token-counts",
                 str(tmp_path / "missing.json")]) == 2


def test_head_tokenizer_spec(tmp_path):
    from superkern.analysis.tokens import head_tokenizer_spec

    assert head_tokenizer_spec("SmolLM2") == "smollm2" and head_tokenizer_spec("minilm") == "minilm"
    assert head_tokenizer_spec(tmp_path / "h.gguf") == tmp_path / "h.gguf"
    with pytest.raises(ValueError, match="no tokenizer.json in"):
        head_tokenizer_spec(tmp_path / "model.safetensors")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert head_tokenizer_spec(tmp_path / "model.safetensors") == tmp_path / "tokenizer.json"
    assert head_tokenizer_spec(tmp_path) == tmp_path / "tokenizer.json"
    with pytest.raises(ValueError, match="Tensor has no tokenizer of its own"):
        head_tokenizer_spec(torch.zeros(3, 2))


def test_probe_counts_a_corpus_with_the_heads_own_tokenizer(tokenizer_file, tmp_path):
    """A safetensors head with a tokenizer.json beside it: ``corpus=`` alone is enough, and
    gives the same frequency block as counts saved by 'fit zipf --tokenizer'."""
    from safetensors.torch import save_file

    from superkern import probe

    W = torch.randn(len(VOCAB), 6, generator=torch.Generator().manual_seed(3))
    head = tokenizer_file.parent / "model.safetensors"
    save_file({"lm_head.weight": W}, str(head))
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat\na cat\n")
    rep = probe(str(head), corpus=corpus, progress=False, splits=False)
    assert rep.frequency.tokens_counted == 6 + 3 + 2 and rep.frequency.rows == 7
    assert rep.frequency.source == f"{tokenizer_file.parent.name} tokens of c.txt"
    out = tmp_path / "counts.json"
    assert main(["fit", "zipf", str(corpus), "--tokenizer", str(tokenizer_file),
                 "--save-counts", str(out)]) == 0
    saved = probe(str(head), token_counts=out, progress=False, splits=False).frequency
    assert saved.to_dict()["bins"] == rep.frequency.to_dict()["bins"]
    with pytest.raises(ValueError, match="not both"):
        probe(str(head), corpus=corpus, token_counts=out, progress=False)
    with pytest.raises(ValueError, match="only with a corpus"):
        probe(str(head), tokenizer=tokenizer_file, progress=False)
    with pytest.raises(FileNotFoundError, match="no such corpus file"):
        probe(str(head), corpus=tmp_path / "none.txt", progress=False)
    assert main(["probe", str(head), "--corpus", str(corpus), "--no-splits",
                 "--no-progress"]) == 0


def test_compare_with_a_corpus(tokenizer_file, tmp_path, capsys):
    """compare --corpus: each head counts the corpus with its own tokenizer; the rows carry
    the same numbers as probe(corpus=...) alone, and the third figure draws them."""
    import shutil

    from safetensors.torch import save_file

    import superkern
    from superkern import probe
    from superkern.probe.plots import frequency_overlaps_figure

    heads = []
    for k, m in enumerate((6, 8)):
        folder = tmp_path / f"h{k}"
        folder.mkdir()
        shutil.copy(tokenizer_file, folder / "tokenizer.json")
        W = torch.randn(len(VOCAB), m, generator=torch.Generator().manual_seed(k))
        save_file({"lm_head.weight": W}, str(folder / "model.safetensors"))
        heads.append(folder)
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat\na cat\nthe cat\n")
    cmp = superkern.compare(heads, names=["a", "b"], corpus=corpus, progress=False, exact=True)
    for row, folder in zip(cmp.rows, heads):
        f = probe(folder, corpus=corpus, progress=False, splits=False, sample=0).frequency
        assert row["freq_rows_seen"] == f.rows == 7 and row["freq_spearman"] == f.spearman
        assert row["freq_m_mean_sq_centred"].count(";") == len(f.bins) - 1
    fig = frequency_overlaps_figure([(r["name"], rep["rows"]["m"], rep["frequency"])
                                     for r, rep in zip(cmp.rows, cmp.reports)])
    for line, rep in zip(fig.axes[0].get_lines(), cmp.reports):
        m = rep["rows"]["m"]
        want = [m * b["mean_sq_centred"] for b in rep["frequency"]["bins"]
                if b["mean_sq_centred"] is not None and b["mean_sq_centred"] > 0]
        assert np.allclose(line.get_ydata(), want, rtol=1e-12)
    assert "m<c^2> centred by bin" in cmp.format_table()
    # the bins line up across heads whatever the widths of their numbers
    cmp.rows[0]["freq_m_mean_sq_centred"] = "1.02;0.5;12.3"
    cmp.rows[1]["freq_m_mean_sq_centred"] = "0.998;11.25;-"
    table = cmp.format_table().splitlines()
    top = table.index(next(s for s in table if "m<c^2> centred by bin" in s))
    ends = [[mt.end() for mt in re.finditer(r"\S+", row)][-3:]
            for row in table[top + 1:top + 3]]
    assert ends[0] == ends[1], table[top:top + 3]
    assert "frequency_overlaps.png" in cmp.plots()
    assert main(["compare", str(heads[0]), str(heads[1]), "--corpus", str(corpus),
                 "--no-progress"]) == 0
    assert "Token frequency" in capsys.readouterr().out
    with pytest.raises(ValueError, match="has no tokenizer of its own"):
        superkern.compare([torch.randn(9, 4)], corpus=corpus, progress=False)
    (tmp_path / "bare").mkdir()  # no tokenizer.json beside it
    np.save(tmp_path / "bare" / "bare.npy", np.ones((9, 4), dtype=np.float32))
    calls = []
    import superkern.probe.core as core

    real = core.probe
    core.probe = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:  # the second head has no tokenizer: refused before the first is probed
        with pytest.raises(ValueError, match="each head's own tokenizer: .*bare.npy.*beside "
                           "it .* or probe that head alone with --tokenizer"):
            superkern.compare([heads[0], tmp_path / "bare" / "bare.npy"], corpus=corpus,
                              progress=False)
    finally:
        core.probe = real
    assert calls == []
    # probe alone has a --tokenizer, and says so
    with pytest.raises(ValueError, match=r"no tokenizer.json in .*bare; pass the tokenizer "
                       r"to count the corpus with \(--tokenizer"):
        superkern.probe(tmp_path / "bare" / "bare.npy", corpus=corpus, progress=False)
    with pytest.raises(FileNotFoundError, match="no such corpus file"):
        superkern.compare(heads, corpus=tmp_path / "none.txt", progress=False)
    assert superkern.compare(heads, progress=False).rows[0]["freq_spearman"] is None
