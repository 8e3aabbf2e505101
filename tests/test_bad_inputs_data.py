"""Bad or extreme data (from an adversarial audit): fp64 heads near the limits of its range,
sparse heads, damaged weights files, malformed results rows, width-law CSVs that cannot be
fitted, counts files of the wrong kind, a tokenizer that fails on the text, non-UTF-8 files,
an unreadable config.json. Each gets the right answer or a clear error, never a crash."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

import superkern


@pytest.mark.parametrize("scale", [1e160, 1e-200])
def test_fp64_heads_near_the_range_limits(scale):
    """Squares of 1e160 overflow fp64 and those of 1e-200 underflow: the probe's exact moments
    and norm spread must still be those of the unscaled rows."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(50, 8, generator=g, dtype=torch.float64)
    want = superkern.probe(W, progress=False, splits=False)
    got = superkern.probe(W * scale, progress=False, splits=False)
    for key, blk in want.blocks.items():
        other = got.blocks[key]
        assert other.exact["n_used"] == blk.exact["n_used"] == 50, key
        assert other.mean_sq == pytest.approx(blk.mean_sq, rel=1e-12), key
    assert got.norms.std == pytest.approx(want.norms.std * scale, rel=1e-12)
    assert got.verdict["label"] == want.verdict["label"]


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_heads_are_read_densely(tmp_path, layout):
    g = torch.Generator().manual_seed(1)
    W = torch.randn(40, 6, generator=g)
    want = superkern.overlap_stats(W, bins=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "sparse CSR support is in beta"
        S = W.to_sparse() if layout == "coo" else W.to_sparse_csr()
        assert superkern.overlap_stats(S, bins=8).mean_sq == want.mean_sq
        torch.save(S, tmp_path / "s.pt")
        head = superkern.load_head(tmp_path / "s.pt")
    assert head.matrix.layout == torch.strided and torch.equal(head.matrix, W)


def test_damaged_and_non_finite_weights_leave_figures_drawable(results_file, tmp_path):
    """One truncated and one NaN weights file: the figures that read weights leave those
    runs out with a warning naming the file, and the others still draw."""
    from safetensors.torch import load_file, save_file

    from superkern.analysis.figures import make_figures
    from superkern.analysis.tables import load_results

    folder = tmp_path / "copy"
    shutil.copytree(results_file.parent, folder)
    files = [r.weights for r in load_results(folder).runs if r.weights is not None]
    strong = [f for f in files if f.is_file()][:2]
    strong[0].write_bytes(strong[0].read_bytes()[:60])
    t = load_file(strong[1])
    t["W"][0, 0] = float("nan")
    save_file(t, strong[1])
    with pytest.warns(UserWarning) as rec:
        report = make_figures(folder, tmp_path / "figs", n_boot=0)
    said = " ".join(str(w.message) for w in rec)
    assert "unreadable weights" in said and "non-finite value" in said
    assert {"fig15", "fig16", "fig5b"} <= set(report.written), report.text()


def _row(width, loss, **cfg_over):
    from superkern.toy import ToyConfig

    cfg = ToyConfig(n=512, m=width, gamma=-1.0, dist="exponential", steps=10,
                    batch=8).to_dict()
    cfg.update(cfg_over)
    return {"run_id": f"r{width}-{sorted(cfg_over.items())}", "config": cfg,
            "final_loss": loss, "final_loss_std": 0.0, "phi_half": 1.0, "phi_1": 0.5}


def test_malformed_results_rows_are_left_out(tmp_path):
    from superkern.analysis.tables import load_results

    good = [_row(m, 2.0 / m) for m in (8, 16, 32)]
    bad = [_row(64, 0.1, m="x"), _row(128, 0.1, n=None), _row(256, 0.1, gamma="steep"),
           _row(512, 0.0), _row(8, 0.1, seed=1.5), dict(_row(16, 0.1, seed=2), geometry=[1]),
           dict(_row(32, 0.1, seed=3), weights=7), _row(64, 0.1, gamma=None, seed=4),
           # these three aborted fit and figures (a traceback-free error, but every good
           # row lost with them): a geometry value that is text, an unknown distribution,
           # an explicit p that does not sum to E
           dict(_row(16, 0.1, seed=5), geometry={"mean_sq_strong": "x"}),
           _row(32, 0.1, seed=6, dist="zipf"),
           _row(4, 0.1, seed=7, n=4, dist=[0.4, 0.2, 0.1, 0.1])]
    del bad[1]["config"]["m"]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good + bad))
    with pytest.warns(UserWarning, match=r"left out 11 row.s. .*not > 0, or malformed"):
        res = load_results(path)
    assert sorted(r.m for r in res.runs) == [8, 16, 32]
    from superkern.analysis import fit_report

    rep = fit_report(res, "all", n_boot=0)
    assert rep.cells[0].fit.alpha_m == pytest.approx(1.0)


@pytest.mark.parametrize("rows, match", [
    ("a,w,256,3.5\na,w,512,3.2\na,w,1024,3.0\nb,w,256,3.6\nb,w,512,-3.2\nb,w,1024,3.1\n",
     r"point 5 \(b, w\) has m = 512, loss = -3.2"),
    ("a,w,256,3.5\na,w,256,3.2\na,w,512,3.0\nb,w,512,3.6\n", "needs >= 3 distinct widths, got 2"),
    ("a,w,256,3.5\na,w,512,3.2\na,w,1024,100\na,w,2048,2.9\nb,w,256,3.6\nb,w,512,3.3\n"
     "b,w,1024,3.1\n", "has no finite optimum"),
])
def test_width_law_fits_that_cannot_work_are_errors(tmp_path, rows, match):
    from superkern.analysis.fits import fit_width_law
    from superkern.analysis.tables import load_width_csv

    path = tmp_path / "w.csv"
    path.write_text("family,dataset,m,loss\n" + rows)
    with pytest.raises(ValueError, match=match):
        fit_width_law(*load_width_csv(path))


@pytest.mark.parametrize("text, match", [
    ("5\n-3\n2\n1\n", r"1 of 4 lines do not end in a count \(lines 2\)"),
    ("nan\n", "no line ends in a count"),
    ("[3, 2, 1\n", "not valid JSON .*; pass --mode text"),
    ("7\n", "need at least 2 positive counts, got 1"),  # one count, read as a counts file
])
def test_zipf_input_detection(tmp_path, text, match):
    from superkern.analysis.zipf import load_counts, zipf_fit

    path = tmp_path / "c.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        zipf_fit(load_counts(path)[0])
    path.write_text("hello world\n")
    with pytest.raises(ValueError, match="no line ends in a count"):
        load_counts(path, mode="counts")


def test_a_tokenizer_that_fails_on_the_text_is_named(tmp_path):
    tok = pytest.importorskip("tokenizers")
    from superkern.analysis.tokens import corpus_counts

    t = tok.Tokenizer(tok.models.WordLevel({"a": 0, "b": 1}, unk_token="[UNK]"))
    t.pre_tokenizer = tok.pre_tokenizers.Whitespace()
    t.save(str(tmp_path / "word.json"))
    (tmp_path / "c.txt").write_text("a b c\n")
    with pytest.raises(ValueError, match=r"word tokenizer, .*c.txt: the tokenizer failed on "
                                         r"the text: .*Missing \[UNK\]"):
        corpus_counts(tmp_path / "c.txt", tmp_path / "word.json")


def test_non_utf8_files_are_named(tmp_path):
    from superkern.analysis.tables import load_width_csv
    from superkern.sweep.grid import load_experiment
    from superkern.sweep.store import ResultsWarning, read_jsonl

    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x93NUMPY\xff\xfe\x00\x01\n")
    with pytest.raises(ValueError, match=r"blob.bin: not valid TOML \(UTF-8 text\)"):
        load_experiment(str(blob))
    with pytest.raises(ValueError, match=r"blob.bin: not a UTF-8 text CSV"):
        load_width_csv(blob)
    with pytest.warns(ResultsWarning, match=r"blob.bin:1: skipping an unreadable line"):
        assert read_jsonl(blob) == []


def test_an_unreadable_config_json_is_reported(tmp_path):
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.randn(30, 4)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text('{"tie_word_embeddings": tru')
    head = superkern.load_head(tmp_path)
    assert "config.json is unreadable: JSONDecodeError" in head.tied_reason
    (tmp_path / "config.json").write_text("[1, 2]")
    assert "a JSON list, not an object" in superkern.load_head(tmp_path).tied_reason
    (tmp_path / "config.json").unlink()
    assert "does not set tie_word_embeddings" in superkern.load_head(tmp_path).tied_reason


def test_row_norm_plot_of_a_head_near_1e160_does_not_overflow():
    from superkern.probe.plots import row_norms_png

    norms = np.abs(np.random.default_rng(2).standard_normal(200)) * 1e160 + 1e159
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert row_norms_png(["big"], [norms])[:4] == b"\x89PNG"


@pytest.mark.parametrize("heads", [1, 2, 3])
def test_row_norm_plot_title_fits_the_figure(heads):
    """compare --plots row_norms.png: the title was one line wider than the figure of two
    heads and was cut at both ends."""
    from superkern.probe.plots import row_norms_figure

    rng = np.random.default_rng(0)
    fig = row_norms_figure([f"head {k}" for k in range(heads)],
                           [np.abs(rng.standard_normal(100)) + 1 for _ in range(heads)])
    fig.tight_layout()
    fig.canvas.draw()
    box = fig.axes[0].title.get_window_extent()
    assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (box, fig.bbox)


def test_nested_meta_and_flipped_inputs(tmp_path):
    """A nested tensor, a meta tensor saved in a file and a masked array with masked entries are
    clear errors (torch's internal error, a traceback, a mask ignored); a flipped numpy array
    with a length-1 axis, which numpy calls contiguous with a negative stride, is read (torch
    refused it)."""
    with warnings.catch_warnings():  # torch's "nested tensors are a prototype" warning
        warnings.simplefilter("ignore")
        nested = torch.nested.nested_tensor([torch.ones(3, 2), torch.ones(2, 2)])
        torch.save({"lm_head.weight": torch.nested.nested_tensor([torch.ones(3),
                                                                  torch.ones(2)])},
                   tmp_path / "nested.pt")
    with pytest.raises(ValueError, match="W is a nested tensor"):
        superkern.overlap_stats(nested)
    torch.save({"lm_head.weight": torch.empty(3, 4, device="meta")}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match=r"meta.pt: tensor 'lm_head.weight' is on the meta "
                                         r"device: shape \[3, 4\]"):
        superkern.load_head(tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="nested.pt.*nested tensor"):
        superkern.load_head(tmp_path / "nested.pt")
    masked = np.ma.masked_array(np.ones((4, 3)), mask=np.eye(4, 3, dtype=bool))
    with pytest.raises(ValueError, match="W is a masked array with 3 masked entries"):
        superkern.overlap_stats(masked)  # its mask was dropped silently
    assert superkern.overlap_stats(np.ma.masked_array(np.eye(3))).mean_sq == 0.0
    col = np.arange(1, 6, dtype=np.float32).reshape(5, 1)[:, ::-1]
    assert col.strides[1] < 0 and col.flags.c_contiguous
    st = superkern.overlap_stats(col, topk=1)
    assert st.n_pairs == 10 and st.mean_cos == 1.0
    assert superkern.overlap_moments_exact(col)["mean_sq"] == 1.0


def test_norm_histogram_and_mean_of_norms_near_the_fp64_maximum():
    """histc's (x - min) * bins and the mean's sum overflowed: all rows landed in bin 0 and
    the mean of 1e308 and 1.7e308 was inf."""
    st = superkern.row_norm_stats(np.array([[1.0, 0], [5e305, 0], [1e306, 0]]), bins=1000)
    assert np.nonzero(st.hist.numpy())[0].tolist() == [0, 500, 999]
    assert st.mean == pytest.approx((1 + 5e305 + 1e306) / 3, rel=1e-15)
    top = superkern.row_norm_stats(np.array([[1e308, 0], [1.7e308, 0]]))
    assert top.mean == pytest.approx(1.35e308, rel=1e-15) and int(top.hist.sum()) == 2
