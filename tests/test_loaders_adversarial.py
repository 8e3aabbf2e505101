"""Loaders on inputs built to break them: big-endian GGUF, malformed tokenizer files, packed
4-bit dtypes, files whose suffix lies about their format, meta tensors, nested training
checkpoints and multimodal tensor names. Each must load right or fail with a clear error."""
from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch

import superkern
from superkern.cli import main as cli_main
from superkern.probe.vocab import MAX_TOKEN_ID, vocab_from_folder
from tests.test_loaders import _Evil, _rand, _save_st, gguf, needs_gguf


def _gold_mean_sq(W: torch.Tensor) -> float:
    U = torch.nn.functional.normalize(W.double(), dim=1)
    G = U @ U.T
    n = W.shape[0]
    return float(((G ** 2).sum() - n) / (n * (n - 1)))


@needs_gguf
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_big_endian_gguf_reads_the_same_head_as_little_endian(tmp_path, dtype):
    W = (_rand(64, 24, seed=3) * 0.02).numpy().astype(dtype)
    heads = {}
    for order in ("LITTLE", "BIG"):
        path = tmp_path / f"{order}.gguf"
        w = gguf.GGUFWriter(str(path), "llama", endianess=getattr(gguf.GGUFEndian, order))
        w.add_tensor("output.weight", W)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        heads[order] = superkern.load_head(path)
    assert torch.equal(heads["BIG"].matrix, heads["LITTLE"].matrix)
    assert torch.equal(heads["BIG"].matrix.float(), torch.from_numpy(W.astype(np.float32)))
    got = superkern.overlap_stats(heads["BIG"].matrix, backend="torch")
    assert got.mean_sq == pytest.approx(_gold_mean_sq(torch.from_numpy(W)), rel=1e-5)


@pytest.mark.parametrize("tokenizer", [
    {"added_tokens": 5},                                       # not a list
    {"added_tokens": [{"id": -1, "content": "x"}]},            # negative id
    {"added_tokens": [{"id": 10 ** 12, "content": "x"}]},      # would allocate 10^12 slots
    {"model": {"vocab": {"a": 0, "b": 10 ** 12}}},
    {"model": {"vocab": {"a": True}}},                         # a bool is not an id
    [1, 2, 3],                                                 # not an object at all
])
def test_a_malformed_tokenizer_json_never_stops_the_probe(tmp_path, tokenizer):
    _save_st(tmp_path / "model.safetensors", {"lm_head.weight": _rand(20, 6)})
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    vocab, _ = vocab_from_folder(tmp_path)
    assert vocab is None or len(vocab) <= MAX_TOKEN_ID
    head = superkern.load_head(tmp_path)
    assert head.n == 20 and (head.vocab is None or "x" not in head.vocab)
    out = tmp_path / "report.json"
    assert cli_main(["probe", str(tmp_path), "--backend", "torch", "--no-progress",
                     "--json", str(out)]) == 0
    assert json.loads(out.read_text())["head"]["shape"] == [20, 6]


def _raw_safetensors(path, name, dtype, shape, nbytes):
    header = json.dumps({name: {"dtype": dtype, "shape": shape,
                                "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(range(256)) * (nbytes // 256))


def test_packed_4bit_head_is_refused_naming_its_unpacked_shape(tmp_path):
    if not hasattr(torch, "float4_e2m1fn_x2"):
        pytest.skip("this torch has no packed 4-bit dtype")
    path = tmp_path / "fp4.safetensors"
    _raw_safetensors(path, "lm_head.weight", "F4", [32, 16], 256)
    with pytest.raises(ValueError, match=r"float4_e2m1fn_x2.*\[32, 8\] stands for 32 x 16"):
        superkern.load_head(path)


def test_the_content_decides_the_format_not_the_suffix(tmp_path):
    W = _rand(12, 5)
    _save_st(tmp_path / "real.safetensors", {"lm_head.weight": W})
    raw = (tmp_path / "real.safetensors").read_bytes()
    for name in ("as.bin", "as.pt"):  # safetensors under a torch suffix: read as safetensors
        (tmp_path / name).write_bytes(raw)
        assert torch.equal(superkern.load_head(tmp_path / name).matrix, W)
    (tmp_path / "text.bin").write_text("hello world, not a checkpoint\n" * 20)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint") as err:
        superkern.load_head(tmp_path / "text.bin")
    assert "refused" not in str(err.value)
    with open(tmp_path / "evil.pt", "wb") as f:  # a real code-running pickle stays refused
        pickle.dump({"lm_head.weight": _Evil()}, f, protocol=2)
    with pytest.raises(ValueError, match="refused"):
        superkern.load_head(tmp_path / "evil.pt")
    torch.save(torch.nn.Linear(5, 12), tmp_path / "module.pt")
    with pytest.raises(ValueError, match="refused"):
        superkern.load_head(tmp_path / "module.pt")


@pytest.mark.parametrize("shard", ["s.SAFETENSORS", "s.bin"])
def test_index_shards_are_read_by_content(tmp_path, shard):
    W = _rand(10, 4)
    _save_st(tmp_path / shard, {"lm_head.weight": W})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": shard}}))
    assert torch.equal(superkern.load_head(tmp_path).matrix, W)


@needs_gguf
def test_an_index_naming_a_gguf_shard_says_so(tmp_path):
    from tests.test_loaders import _write_gguf

    _write_gguf(tmp_path / "s.gguf", {"output.weight": _rand(10, 4).numpy()})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "s.gguf"}}))
    with pytest.raises(ValueError, match="shard 's.gguf' is a gguf file"):
        superkern.load_head(tmp_path)


def test_meta_tensors_are_a_clear_error():
    meta = torch.empty(50, 8, device="meta")
    with pytest.raises(ValueError, match=r"meta device: shape \(50, 8\)"):
        superkern.load_head(meta)
    with torch.device("meta"):
        lin = torch.nn.Linear(8, 50)
    lin.get_output_embeddings = lambda: lin
    with pytest.raises(ValueError, match="Linear.*meta device"):
        superkern.load_head(lin)
    with pytest.raises(ValueError, match=r"meta device: shape \(50, 8\)"):
        superkern.overlap_stats(meta)


def test_nested_checkpoints_search_the_model_first_and_name_the_copy(tmp_path):
    """The top level and the usual wrappers (model, state_dict, ema, ...) come first; other
    nested dicts only when those hold nothing. An embedding chosen while another dict holds
    an LM head is not called tied (it names the head instead)."""
    E, H, H2 = _rand(30, 6, seed=1), _rand(30, 6, seed=2), _rand(30, 6, seed=3)
    torch.save({"model.embed_tokens.weight": E, "extra": {"lm_head.weight": H}},
               tmp_path / "a.pt")
    h = superkern.load_head(tmp_path / "a.pt")
    assert h.tensor == "model.embed_tokens.weight" and torch.equal(h.matrix, E)
    assert h.tied is None and "'extra.lm_head.weight' elsewhere" in h.tied_reason
    h = superkern.load_head(tmp_path / "a.pt", tensor="extra.lm_head.weight")
    assert h.tied is False and torch.equal(h.matrix, H)
    torch.save({"model": {"transformer.wte.weight": E},  # two heads in an auxiliary dict
                "heads": {"a.lm_head.weight": H, "b.lm_head.weight": H2}}, tmp_path / "c.pt")
    h = superkern.load_head(tmp_path / "c.pt")
    assert h.tensor == "model.transformer.wte.weight" and h.tied is None
    torch.save({"student": {"transformer.wte.weight": E}, "teacher": {"lm_head.weight": H}},
               tmp_path / "d.pt")  # no model dict: a head beats an embedding, named
    assert superkern.load_head(tmp_path / "d.pt").tensor == "teacher.lm_head.weight"
    torch.save({"model": {"lm_head.weight": H}, "ema": {"lm_head.weight": H2}}, tmp_path / "b.pt")
    h = superkern.load_head(tmp_path / "b.pt")
    assert h.tensor == "model.lm_head.weight" and torch.equal(h.matrix, H)
    h = superkern.load_head(tmp_path / "b.pt", tensor="ema.lm_head.weight")
    assert h.tensor == "ema.lm_head.weight" and torch.equal(h.matrix, H2)


def test_multimodal_wrapper_embedding_is_found_and_tied_by_config(tmp_path):
    W = _rand(40, 8)
    _save_st(tmp_path / "model.safetensors", {
        "model.language_model.embed_tokens.weight": W,
        "model.vision_tower.patch_embedding.weight": _rand(16, 8, seed=4)})
    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": True}))
    h = superkern.load_head(tmp_path)
    assert h.tensor == "model.language_model.embed_tokens.weight" and h.tied is True
    assert torch.equal(h.matrix, W)
