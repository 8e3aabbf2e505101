"""Heads by Hugging Face Hub repo id (``ORG/NAME[@REV][/FILE]``), from a fake cache in
huggingface_hub's own layout, offline: only the head's shard is needed, revisions, tying,
vocabularies, and one-line errors. No test touches the network (HF_HUB_OFFLINE=1; the online
error paths run against stand-ins for hf_hub_download / list_repo_files)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import superkern
from superkern.cli import main as cli_main
from superkern.probe.hub import parse_repo_ref

huggingface_hub = pytest.importorskip("huggingface_hub")
safetensors_torch = pytest.importorskip("safetensors.torch")
from huggingface_hub import constants  # noqa: E402

N, M = 300, 16


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _commit(tag: str) -> str:
    return hashlib.sha1(tag.encode()).hexdigest()


def _bytes(data) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        return safetensors_torch.save({k: v.contiguous() for k, v in data.items()})
    return json.dumps(data).encode() if isinstance(data, (dict, list)) else str(data).encode()


def _snapshot(cache: Path, repo_id: str, commit: str, files: dict, refs=("main",)) -> Path:
    """One revision of a repo in huggingface_hub's cache layout: blobs/<sha256>,
    snapshots/<commit>/<file> (a relative symlink to the blob), refs/<name> = commit."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        raw = _bytes(data)
        blob = root / "blobs" / hashlib.sha256(raw).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(raw)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # no symlinks here: huggingface_hub then stores copies too
            link.write_bytes(raw)
    for ref in refs:
        (root / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return root / "snapshots" / commit


def _tokenizer_json(n: int) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(n)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok.to_str()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hub cache in tmp_path, offline; huggingface_hub reads its settings at import,
    so its constants are patched as well as the environment."""
    home = tmp_path / "hf_home"
    hub = home / "hub"
    hub.mkdir(parents=True)
    for var, value in (("HF_HOME", str(home)), ("HF_HUB_CACHE", str(hub)),
                       ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # should a code path ever bypass the offline switch: a local port nothing listens on
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)  # relative names such as org/name are not local paths
    return hub


def _sharded(cache, W):
    """org/sharded: embedding + a layer in shard 1 (absent from the cache), lm_head in shard 2."""
    weight_map = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                  "model.layers.0.mlp.weight": "model-00001-of-00002.safetensors",
                  "model.norm.weight": "model-00002-of-00002.safetensors",
                  "lm_head.weight": "model-00002-of-00002.safetensors"}
    return _snapshot(cache, "org/sharded", _commit("sharded"), {
        "model.safetensors.index.json": {"metadata": {}, "weight_map": weight_map},
        "model-00002-of-00002.safetensors": {"lm_head.weight": W, "model.norm.weight":
                                             torch.ones(M)},
        "config.json": {"tie_word_embeddings": False},
        "tokenizer.json": _tokenizer_json(N)})


def _numbers(rep) -> dict:
    """The report's numbers: without the head's description, run details (times, backend)
    and token strings."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if k not in ("seconds", "backend", "tokens", "max_tokens")}
        return [strip(v) for v in x] if isinstance(x, list) else x
    d = rep.to_dict()
    d.pop("head"), d.pop("run")
    return strip(d)


def _probe(src, **kw):
    return superkern.probe(src, device="cpu", progress=False, **kw)


def test_fake_cache_is_huggingface_hubs_layout(cache):
    snap = _snapshot(cache, "org/single", _commit("single"), {"config.json": {"a": 1}})
    got = huggingface_hub.hf_hub_download("org/single", "config.json", local_files_only=True)
    assert Path(got) == snap / "config.json" and json.loads(Path(got).read_text()) == {"a": 1}
    assert huggingface_hub.try_to_load_from_cache("org/single", "config.json") == got
    info = huggingface_hub.scan_cache_dir(cache)
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == "org/single" and [r.refs for r in repo.revisions] == [{"main"}]


def test_parse_repo_ref():
    r = parse_repo_ref("Qwen/Qwen2.5-72B")
    assert (r.repo_id, r.revision, r.filename) == ("Qwen/Qwen2.5-72B", None, None)
    r = parse_repo_ref("org/name@v1.0/sub/q8.gguf")
    assert (r.repo_id, r.revision, r.filename) == ("org/name", "v1.0", "sub/q8.gguf")
    assert parse_repo_ref("org/name@refs/pr/3").revision == "refs/pr/3"
    for not_repo in ("minilm", "./org/name", "/abs/x", "org/name/notes", "dir/x.safetensors",
                     "org/name@", "a--b/c", "C:/models/x", Path("org/name")):
        assert parse_repo_ref(not_repo) is None, not_repo


def test_a_mistyped_local_path_is_not_a_repo_id(cache, tmp_path, capsys):
    """'runs/exp1' with a local 'runs' folder is a missing local path: no Hub lookup, and
    compare refuses it before the first probe."""
    (tmp_path / "runs").mkdir()
    for typo in ("runs/exp1", "runs/exp1/model.safetensors", "runs/exp1@v2"):
        assert parse_repo_ref(typo) is None, typo
    with pytest.raises(FileNotFoundError, match="runs/exp1: no such file or directory"):
        superkern.load_head("runs/exp1")
    np.save(tmp_path / "a.npy", _rand(N, M, seed=3).numpy())
    assert cli_main(["compare", "a.npy", "runs/exp1/model.safetensors", "--no-progress"]) == 2
    assert "runs/exp1/model.safetensors: no such file or directory" in capsys.readouterr().err


def test_shard_names_must_stay_inside_the_repo(cache):
    for bad in ("../other/model.safetensors", "/etc/x.safetensors", "a//b.safetensors",
                "sub\\x.safetensors"):
        _snapshot(cache, "org/evil", _commit(bad), {"model.safetensors.index.json": {
            "weight_map": {"lm_head.weight": bad}}})
        with pytest.raises(ValueError, match="not a plain file name inside the repo"):
            superkern.load_head(f"org/evil@{_commit(bad)}")


def test_sharded_checkpoint_needs_only_the_heads_shard(cache, tmp_path):
    W = _rand(N, M, seed=1)
    snap = _sharded(cache, W)
    assert not (snap / "model-00001-of-00002.safetensors").exists()
    head = superkern.load_head("org/sharded")
    assert torch.equal(head.matrix, W) and head.tensor == "lm_head.weight"
    assert head.format == "safetensors-sharded" and head.tied is False
    assert head.name == "org/sharded" and head.vocab[:2] == ["t0", "t1"]
    assert head.source.startswith(f"org/sharded@main:model-00002-of-00002.safetensors (commit "
                                  f"{_commit('sharded')}; ")
    assert head.source.endswith(str(snap / "model-00002-of-00002.safetensors") + ")")
    assert head.extra["hub"] == {
        "repo_id": "org/sharded", "revision": "main", "commit": _commit("sharded"),
        "files": ["config.json", "model-00002-of-00002.safetensors",
                  "model.safetensors.index.json", "tokenizer.json"]}
    local = tmp_path / "local"
    local.mkdir()
    safetensors_torch.save_file({"lm_head.weight": W}, str(local / "model.safetensors"))
    assert _numbers(_probe("org/sharded")) == _numbers(_probe(local / "model.safetensors"))
    # the embedding lives in the shard that is not cached: offline, that is the error
    with pytest.raises(FileNotFoundError, match=r"org/sharded@main: the shard holding "
                       r"'model.embed_tokens.weight' \(model-00001-of-00002.safetensors\) is "
                       r"not in the local Hugging Face Hub cache, .*HF_HUB_OFFLINE=1"):
        superkern.load_head("org/sharded", tensor="model.embed_tokens.weight")


def test_cli_and_compare_take_repo_ids(cache, tmp_path, capsys):
    _sharded(cache, _rand(N, M, seed=1))
    _snapshot(cache, "org/single", _commit("single"),
              {"model.safetensors": {"lm_head.weight": _rand(N, M, seed=2)}})
    out = tmp_path / "r.json"
    assert cli_main(["probe", "org/sharded", "--json", str(out), "--no-progress"]) == 0
    head = json.loads(out.read_text())["head"]
    assert head["source"].startswith("org/sharded@main:") and head["hub"]["commit"]
    assert "superkern probe: org/sharded" in capsys.readouterr().out
    cmp = superkern.compare(["org/sharded", "org/single"], progress=False, device="cpu")
    assert [r["name"] for r in cmp.rows] == ["org/sharded", "org/single"]
    corpus = tmp_path / "c.txt"
    corpus.write_text("t1 t2 t3 t3 t4 t4 t4\nt5 t6 t7\n" * 5)
    rep = _probe("org/sharded", corpus=corpus)
    assert rep.frequency is not None and rep.frequency.source.startswith("org/sharded tokens")


def test_single_file_and_tied_embedding(cache, tmp_path):
    W = _rand(N, M, seed=3)
    _snapshot(cache, "org/single", _commit("single"), {
        "model.safetensors": {"lm_head.weight": W, "model.embed_tokens.weight": -W,
                              "model.norm.weight": torch.ones(M)},
        "vocab.txt": "\n".join(f"w{i}" for i in range(N)) + "\n"})
    head = superkern.load_head("org/single")
    assert torch.equal(head.matrix, W) and head.tied is False and head.format == "safetensors"
    assert head.vocab[5] == "w5" and head.extra["hub"]["files"] == ["model.safetensors",
                                                                     "vocab.txt"]
    np_path = tmp_path / "w.npy"
    import numpy as np
    np.save(np_path, W.numpy())
    assert _numbers(_probe("org/single")) == _numbers(_probe(np_path))

    E = _rand(N, M, seed=4)
    _snapshot(cache, "org/tied", _commit("tied"), {
        "model.safetensors": {"model.embed_tokens.weight": E,
                              "model.layers.0.mlp.weight": _rand(M, M)},
        "config.json": {"tie_word_embeddings": True}})
    head = superkern.load_head("org/tied")
    assert torch.equal(head.matrix, E) and head.tensor == "model.embed_tokens.weight"
    assert head.tied is True and "tie_word_embeddings=true" in head.tied_reason


def test_pytorch_bin_shards(cache, tmp_path):
    import io

    W = _rand(N, M, seed=9)
    buf = io.BytesIO()
    torch.save({"lm_head.weight": W}, buf)
    _snapshot(cache, "org/bin", _commit("bin"), {
        "pytorch_model.bin.index.json": {"weight_map": {
            "model.embed_tokens.weight": "pytorch_model-00001-of-00002.bin",
            "lm_head.weight": "pytorch_model-00002-of-00002.bin"}},
        "pytorch_model-00002-of-00002.bin": buf.getvalue()})
    head = superkern.load_head("org/bin")
    assert torch.equal(head.matrix, W) and head.format == "torch-sharded"
    assert head.source.startswith("org/bin@main:pytorch_model-00002-of-00002.bin (commit ")


def test_revision_selects_a_snapshot(cache):
    W1, W2 = _rand(N, M, seed=5), _rand(N, M, seed=6)
    _snapshot(cache, "org/rev", _commit("one"), {"model.safetensors": {"lm_head.weight": W1}})
    _snapshot(cache, "org/rev", _commit("two"), {"model.safetensors": {"lm_head.weight": W2}},
              refs=("v2",))
    assert torch.equal(superkern.load_head("org/rev").matrix, W1)
    for spelled in (f"org/rev@{_commit('two')}", "org/rev@v2", "org/rev@v2/model.safetensors"):
        head = superkern.load_head(spelled)
        assert torch.equal(head.matrix, W2), spelled
        assert head.extra["hub"]["commit"] == _commit("two")
    assert superkern.load_head("org/rev@v2").source.startswith("org/rev@v2:model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"org/rev@v3: the weights \(any of model"):
        superkern.load_head("org/rev@v3")


def test_not_cached_while_offline_is_one_line(cache, tmp_path, capsys):
    with pytest.raises(FileNotFoundError) as err:
        superkern.load_head("nobody/nothing")
    msg = str(err.value)
    assert msg.startswith("nobody/nothing@main: the weights (any of model.safetensors.index."
                          "json, model.safetensors, pytorch_model.bin.index.json, pytorch_model"
                          ".bin) are not in the local Hugging Face Hub cache")
    assert "HF_HUB_OFFLINE=0" in msg and "pass a local path" in msg and "\n" not in msg
    assert cli_main(["probe", "nobody/nothing", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("superkern probe: error: nobody/nothing@main: the weights")
    import numpy as np
    np.save(tmp_path / "w.npy", _rand(N, M).numpy())
    assert cli_main(["compare", "nobody/nothing", "w.npy", "--no-progress"]) == 1  # left out
    assert "nobody/nothing@main: the weights" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="nor a Hub repo id"):  # not a repo id either
        superkern.load_head("no/such/folder")


def test_gguf_repo_needs_a_file_named(cache):
    _snapshot(cache, "org/gguf", _commit("gguf"), {"m-Q4_K_M.gguf": b"GGUF", "m-Q8_0.gguf":
                                                   b"GGUF", "README.md": "quantised"})
    with pytest.raises(ValueError, match=r"org/gguf@main: a GGUF repo .*name the file, e\.g\. "
                       r"org/gguf/m-Q4_K_M\.gguf; \.gguf files in the cache: m-Q4_K_M\.gguf, "
                       r"m-Q8_0\.gguf"):
        superkern.load_head("org/gguf")
    _snapshot(cache, "org/split", _commit("split"), {"m-00001-of-00002.gguf": b"GGUF"})
    with pytest.raises(FileNotFoundError, match=r"org/split@main: part 2 of the split GGUF "
                       r"model \(m-00002-of-00002\.gguf\) is not in the local"):
        superkern.load_head("org/split/m-00001-of-00002.gguf")


def test_named_gguf_file(cache):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    W = _rand(N, M, seed=7).numpy()
    snap = cache / "tmp.gguf"
    w = gguf.GGUFWriter(str(snap), "llama")
    w.add_token_list([f"g{i}" for i in range(N)])
    w.add_tensor("token_embd.weight", W)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _snapshot(cache, "org/gguf", _commit("gguf"), {"m-F32.gguf": snap.read_bytes()})
    head = superkern.load_head("org/gguf/m-F32.gguf")
    assert np.array_equal(head.matrix.numpy(), W) and head.vocab[3] == "g3"
    assert head.source.startswith("org/gguf@main:m-F32.gguf (commit ") and head.tied is True


def test_a_local_folder_named_like_a_repo_wins(cache, tmp_path):
    _sharded(cache, _rand(N, M, seed=1))
    L = _rand(N, M, seed=8)
    (tmp_path / "org" / "sharded").mkdir(parents=True)
    safetensors_torch.save_file({"lm_head.weight": L},
                                str(tmp_path / "org" / "sharded" / "model.safetensors"))
    head = superkern.load_head("org/sharded")
    assert torch.equal(head.matrix, L) and "hub" not in head.extra
    assert head.source == os.path.join("org", "sharded", "model.safetensors")
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        superkern.load_head("org/sharded/other.safetensors")  # a missing file in that folder


def test_index_without_a_head_names_the_repo(cache):
    _snapshot(cache, "org/nohead", _commit("nohead"), {"model.safetensors.index.json": {
        "weight_map": {"model.layers.0.mlp.weight": "model-00001-of-00001.safetensors"}}})
    with pytest.raises(ValueError, match=r"org/nohead@main: model.safetensors.index.json: no LM "
                       r"head or token embedding among 1 tensors"):
        superkern.load_head("org/nohead")


def _hub_error(cls, msg="stand-in"):
    exc = cls.__new__(cls)
    Exception.__init__(exc, msg)
    return exc


@pytest.fixture
def online(cache, monkeypatch):
    """Online as far as superkern can tell, with the Hub replaced by stand-ins (no network):
    ``state["download"]`` maps a file name to an exception to raise (else: not cached /
    not found), ``state["files"]`` is the listing."""
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    state = {"download": {}, "files": [], "calls": []}

    def download(repo_id, filename, *, revision=None, local_files_only=False, **kw):
        state["calls"].append((filename, local_files_only))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        raise state["download"].get(filename, _hub_error(EntryNotFoundError, "404"))

    def listing(repo_id, revision=None, **kw):
        if isinstance(state["files"], BaseException):
            raise state["files"]
        return list(state["files"])

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", listing)
    return state


def test_online_errors_are_one_line(online, capsys):
    from huggingface_hub.utils import (GatedRepoError, LocalEntryNotFoundError,
                                       RepositoryNotFoundError, RevisionNotFoundError)

    online["files"] = ["config.json", "model.safetensors"]
    online["download"]["model.safetensors"] = _hub_error(GatedRepoError)
    with pytest.raises(PermissionError, match=r"meta/llama: a gated Hugging Face Hub repo.*"
                       r"hf auth login.*HF_TOKEN"):
        superkern.load_head("meta/llama")
    online["download"]["model.safetensors"] = _hub_error(LocalEntryNotFoundError, "no net")
    with pytest.raises(OSError, match=r"meta/llama@main: cannot reach the Hugging Face Hub"):
        superkern.load_head("meta/llama")
    online["files"] = _hub_error(RepositoryNotFoundError)
    with pytest.raises(FileNotFoundError, match=r"^nobody/x: no such Hugging Face Hub repo"):
        superkern.load_head("nobody/x")
    online["files"] = _hub_error(RevisionNotFoundError)
    with pytest.raises(FileNotFoundError, match=r"no revision 'v9' \(branch, tag or commit\)"):
        superkern.load_head("org/x@v9")
    online["files"] = ["a-Q4_0.gguf", "a-Q8_0.gguf"]
    with pytest.raises(ValueError, match=r"name the file, e\.g\. org/g/a-Q4_0\.gguf; \.gguf "
                       r"files: a-Q4_0\.gguf, a-Q8_0\.gguf"):
        superkern.load_head("org/g")
    online["files"] = ["README.md", "consolidated.safetensors"]
    with pytest.raises(ValueError, match=r"no model.safetensors.index.json, .*weight files: "
                       r"\['consolidated.safetensors'\]"):
        superkern.load_head("org/odd")
    online["files"] = _hub_error(GatedRepoError)
    assert cli_main(["probe", "meta/llama", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gated" in err and "Traceback" not in err


def test_online_fetches_only_the_heads_shard(cache, monkeypatch):
    """Online (a stand-in for the Hub that writes into the cache as hf_hub_download does):
    the index, the head's shard and the small files are requested, never the other shard;
    a second load requests nothing."""
    from huggingface_hub.utils import EntryNotFoundError

    W = _rand(N, M, seed=11)
    remote = {"model.safetensors.index.json": {"weight_map": {
                  "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                  "lm_head.weight": "model-00002-of-00002.safetensors"}},
              "model-00001-of-00002.safetensors": {"model.embed_tokens.weight": W},
              "model-00002-of-00002.safetensors": {"lm_head.weight": W},
              "config.json": {"tie_word_embeddings": False}}
    commit, asked = _commit("remote"), []
    real = huggingface_hub.hf_hub_download

    def download(repo_id, filename, *, revision=None, local_files_only=False, **kw):
        if local_files_only:
            return real(repo_id, filename, revision=revision, local_files_only=True, **kw)
        asked.append(filename)
        if filename not in remote:  # recorded in the cache, as huggingface_hub does
            marker = cache / f"models--{repo_id.replace('/', '--')}" / ".no_exist" / commit
            marker.mkdir(parents=True, exist_ok=True)
            (marker / filename).touch()
            raise _hub_error(EntryNotFoundError, "404")
        return str(_snapshot(cache, repo_id, commit, {filename: remote[filename]}) / filename)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files",
                        lambda repo_id, revision=None, **kw: sorted(remote))
    head = superkern.load_head("org/remote")
    assert torch.equal(head.matrix, W)
    assert "model-00001-of-00002.safetensors" not in asked
    assert {"model.safetensors.index.json", "model-00002-of-00002.safetensors",
            "config.json"} <= set(asked)
    asked.clear()
    assert torch.equal(superkern.load_head("org/remote").matrix, W) and asked == []

