"""compare --corpus parses each GGUF file once: the parse that builds a head's tokenizer also
leaves what loading the head needs, so the probe does not parse the file again. At most one
parsed file is alive at a time, and a bad later head still fails before any probe."""
from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_gguf_tokenizers import _gguf_with_tokenizer

CORPUS = "ab ab 10\nab b\n"


def _split_gguf(folder: Path) -> Path:
    """A GGUF model split into two files (one tensor each); the tokenizer is in the first."""
    gguf = pytest.importorskip("gguf")
    folder.mkdir()
    w = gguf.GGUFWriter(str(folder / "s.gguf"), "llama", split_max_tensors=1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(["a", "b", "Ġ", "0", "1", "ab", "Ġab", "10", "Ċ"])
    w.add_token_merges(["a b", "Ġ ab", "1 0"])
    for k, name in enumerate(("token_embd.weight", "output.weight")):
        w.add_tensor(name, np.random.default_rng(k).normal(size=(9, 4)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return folder / "s-00001-of-00002.gguf"


def _safetensors_head(folder: Path) -> Path:
    """A non-GGUF head: model.safetensors with a word-level tokenizer.json beside it."""
    tokenizers = pytest.importorskip("tokenizers")
    from safetensors.torch import save_file
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["[UNK]", "ab", "b", "10"]
    folder.mkdir()
    tok = tokenizers.Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    W = torch.randn(len(words), 3, generator=torch.Generator().manual_seed(0))
    save_file({"lm_head.weight": W}, str(folder / "model.safetensors"))
    return folder


@pytest.fixture
def watch(monkeypatch):
    """Records every GGUF parse (file name) and, at each parse and each probe, how many parsed
    files are still alive; ``probes`` names the heads probed."""
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("tokenizers")
    import superkern.probe.core as core

    log = {"opened": [], "alive_at_parse": [], "alive_at_probe": [], "probes": []}
    readers: list[weakref.ref] = []
    real_reader, real_probe = gguf.GGUFReader, core.probe

    def alive() -> int:
        gc.collect()
        return sum(r() is not None for r in readers)

    def reader(path, *a, **k):
        log["alive_at_parse"].append(alive())
        log["opened"].append(Path(path).name)
        r = real_reader(path, *a, **k)
        readers.append(weakref.ref(r))
        return r

    def probe(src, *a, **k):
        log["probes"].append(src)
        log["alive_at_probe"].append(alive())
        return real_probe(src, *a, **k)

    monkeypatch.setattr(gguf, "GGUFReader", reader)
    monkeypatch.setattr(core, "probe", probe)
    log["alive"] = alive
    return log


def _check_rows(cmp, heads, corpus):
    """Each row carries its own head's count and rows, as a probe of that head alone does."""
    from superkern import probe

    for rep, head in zip(cmp.reports, heads):
        alone = probe(head, corpus=corpus, progress=False, splits=False, sample=0)
        assert rep["frequency"]["tokens_counted"] == alone.frequency.tokens_counted
        assert rep["rows"]["analysed"] == alone.n and rep["head"]["tensor"] == alone.head.tensor


# the files of each kind of head: the first holds the tokenizer
FILES = {"digits": ["digits.gguf"], "whole": ["whole.gguf"], "st": [],
         "split": ["s-00001-of-00002.gguf", "s-00002-of-00002.gguf"]}


def _head(tmp_path: Path, kind: str) -> str:
    if kind in ("digits", "whole"):  # smollm splits '10' into '1', '0'; gpt-2 does not
        _gguf_with_tokenizer(tmp_path / f"{kind}.gguf", pre="smollm" if kind == "digits"
                             else "gpt-2")
        return str(tmp_path / f"{kind}.gguf")
    return str(_split_gguf(tmp_path / kind) if kind == "split"
               else _safetensors_head(tmp_path / kind))


@pytest.mark.parametrize("kinds", [("digits", "whole"), ("digits", "whole", "split"),
                                   ("split", "st", "whole", "digits")])
def test_compare_corpus_parses_each_gguf_file_once(tmp_path, watch, kinds):
    """2 and 3 GGUF heads (one split into two files), with a safetensors head mixed in: every
    file is parsed once, with no other parsed file alive, and every probe starts with none
    alive. The tokenizers' files are parsed in head order before any probe; a split model's
    second file holds no tokenizer and is parsed when its head is loaded."""
    import superkern
    from superkern.probe import gguf_loader

    heads = [_head(tmp_path, k) for k in kinds]
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS)
    cmp = superkern.compare(heads, corpus=corpus, progress=False, exact=True)
    counted = [FILES[k][0] for k in kinds if FILES[k]]
    assert watch["opened"] == counted + [f for k in kinds for f in FILES[k][1:]]
    assert watch["alive_at_parse"] == [0] * len(watch["opened"])
    assert watch["alive_at_probe"] == [0] * len(heads) and watch["probes"] == heads
    assert gguf_loader._SHARED is None and gguf_loader._KEPT is None and watch["alive"]() == 0
    _check_rows(cmp, heads, corpus)
    if "split" in kinds:
        assert cmp.reports[kinds.index("split")]["head"]["tensor"] == "output.weight"


def test_compare_a_file_named_twice_is_parsed_and_probed_once(tmp_path, watch):
    """The same file twice: one count, one parse and one probe; the second row is the first's
    under its own name, and equals what probing the file again gives."""
    import superkern

    _gguf_with_tokenizer(tmp_path / "d.gguf", pre="smollm")
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS)
    heads = [str(tmp_path / "d.gguf")] * 2
    cmp = superkern.compare(heads, corpus=corpus, progress=False, names=["x", "y"])
    assert watch["opened"] == ["d.gguf"] and watch["probes"] == heads[:1]
    assert [r["name"] for r in cmp.rows] == ["x", "y"]
    assert [r["head"]["name"] for r in cmp.reports] == ["x", "y"]
    again = superkern.compare(heads[:1], corpus=corpus, progress=False, names=["y"])
    timed = ("seconds",)  # the one field that differs between two probes
    strip = [{k: v for k, v in r.items() if k not in timed} for r in (cmp.rows[1], again.rows[0])]
    assert strip[0] == strip[1]
    np.testing.assert_array_equal(cmp.norms[1], again.norms[0])
    cmp.rows[0]["n"] = -1  # the rows are copies, not one object twice
    assert cmp.rows[1]["n"] == again.rows[0]["n"]


def test_compare_a_failing_file_named_twice_fails_twice_once(tmp_path, watch):
    """keep_going: a bad file named twice (between two good heads) is read once and both of
    its entries are in ``failed`` with the same error, under their own index and name."""
    import superkern

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(36))
    _gguf_with_tokenizer(tmp_path / "d.gguf", pre="smollm")
    heads = [str(tmp_path / "d.gguf"), str(bad), str(bad), str(tmp_path / "d.gguf")]
    cmp = superkern.compare(heads, progress=False, keep_going=True, exact=True)
    assert watch["probes"] == heads[:2]
    assert [f["index"] for f in cmp.failed] == [1, 2]
    assert cmp.failed[0]["error"] == cmp.failed[1]["error"] and cmp.failed[0]["error"]
    assert [f["head"] for f in cmp.failed] == [str(bad)] * 2
    assert len(cmp.rows) == 2 and cmp.rows[0]["mean_sq"] == cmp.rows[1]["mean_sq"]


def _no_tokenizer(path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("token_embd.weight", np.ones((9, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _corrupt(path: Path) -> None:
    _gguf_with_tokenizer(path, pre="gpt-2")
    path.write_bytes(path.read_bytes()[:40])  # the header, then nothing


def _few_ids(path: Path) -> None:
    """A vocabulary of 'a', 'b' and 'ab' only: the corpus shows two ids ('ab', 'b')."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(["a", "b", "ab"])
    w.add_token_merges(["a b"])
    w.add_tensor("token_embd.weight", np.ones((3, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("make, match", [
    (_no_tokenizer, "bad.gguf: the GGUF file stores no tokenizer"),
    (_corrupt, "bad.gguf: not a readable GGUF file"),
    (_few_ids, "bad.gguf: bad tokens of c.txt: only 2 token id"),
])
def test_compare_corpus_bad_later_head_fails_before_any_probe(tmp_path, watch, make, match):
    """The last of three GGUF heads (a safetensors head mixed in) has no tokenizer, is
    corrupt, or sees too few ids: refused before any probe, every file parsed at most once,
    and nothing left alive."""
    import superkern
    from superkern.probe import gguf_loader

    _gguf_with_tokenizer(tmp_path / "digits.gguf", pre="smollm")
    _gguf_with_tokenizer(tmp_path / "whole.gguf", pre="gpt-2")
    make(tmp_path / "bad.gguf")
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS)
    heads = [tmp_path / "digits.gguf", _safetensors_head(tmp_path / "st"),
             tmp_path / "whole.gguf", tmp_path / "bad.gguf"]
    with pytest.raises(ValueError, match=f"each head's own tokenizer: .*{match}"):
        superkern.compare(heads, corpus=corpus, progress=False)
    assert watch["probes"] == [] and watch["opened"] == ["digits.gguf", "whole.gguf", "bad.gguf"]
    assert watch["alive_at_parse"] == [0, 0, 0]
    assert gguf_loader._SHARED is None and watch["alive"]() == 0


def test_compare_corpus_json_names_each_heads_count(tmp_path, watch, capsys):
    """The command line: one parse per file there too, and each head's own count."""
    from superkern.cli import main

    _gguf_with_tokenizer(tmp_path / "digits.gguf", pre="smollm")  # '10' -> '1', '0'
    _gguf_with_tokenizer(tmp_path / "whole.gguf", pre="gpt-2")    # '10' stays one token
    corpus = tmp_path / "c.txt"
    corpus.write_text("ab ab 10\nab\n")
    assert main(["compare", str(tmp_path / "digits.gguf"), str(tmp_path / "whole.gguf"),
                 "--corpus", str(corpus), "--exact", "--json", "-", "--no-progress"]) == 0
    reports = json.loads(capsys.readouterr().out)["reports"]
    assert [r["frequency"]["tokens_counted"] for r in reports] == [8, 7]
    assert watch["opened"] == ["digits.gguf", "whole.gguf"]
