"""GGUF SentencePiece tokenizers (Gemma, Llama 2) rebuilt as a sentencepiece ModelProto:
token by token against trained SentencePiece models stored in GGUF as llama.cpp's converter
stores them, and the files that cannot be rebuilt."""
from __future__ import annotations

import numpy as np
import pytest


def _spm_gguf(tmp_path, add_dummy_prefix: bool, unk_as_control: bool = False,
              remove_ws: bool = False):
    """Train a small SentencePiece BPE model, then store it in a GGUF file the way llama.cpp's
    converter does: pieces, scores and SentencePiece's unknown/control/byte types, the
    user-defined pieces typed user-defined with their spaces written as ' ' (the converter
    does this for the added tokens that tokenizer_config.json lists, as Gemma's lists all of
    its), and add_space_prefix (plus remove_extra_whitespaces when it is on: the converter
    writes that key only for other tokenizer kinds, but a file that has it is honoured).
    Returns ``(original processor, path)``."""
    spm = pytest.importorskip("sentencepiece")
    gguf = pytest.importorskip("gguf")
    import io
    import random

    from sentencepiece import sentencepiece_model_pb2 as pb

    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "mat", "über", "naïve", "2024", "x**2", "hello",
             "world", "café", "token", "tokens", "superposition", "scaling", "width"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
             + rng.choice(["", ".", "  !", "   ?"]) for _ in range(3000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="bpe", vocab_size=450,
        hard_vocab_limit=False,
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        user_defined_symbols=["\u2581\u2581", "\u2581\u2581\u2581", "<b>", "\n\n"],
        add_dummy_prefix=add_dummy_prefix, remove_extra_whitespaces=remove_ws, minloglevel=2)
    proto = pb.ModelProto()
    proto.ParseFromString(buf.getvalue())
    tokens = [p.piece.replace("\u2581", " ") if p.type == 4 else p.piece for p in proto.pieces]
    types = [p.type for p in proto.pieces]
    unk = types.index(2)
    if unk_as_control:  # converters that start from tokenizer.json (Gemma 3's GGUF)
        types[unk] = 3
    path = tmp_path / f"spm{int(add_dummy_prefix)}{int(unk_as_control)}{int(remove_ws)}.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([p.score for p in proto.pieces])
    w.add_token_types(types)
    w.add_unk_token_id(unk)
    w.add_add_space_prefix(add_dummy_prefix)
    if remove_ws:
        w.add_remove_extra_whitespaces(True)
    w.add_tensor("token_embd.weight", np.ones((len(tokens), 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return spm.SentencePieceProcessor(model_proto=buf.getvalue()), path


@pytest.mark.parametrize("add_dummy_prefix, unk_as_control, remove_ws",
                         [(True, False, False), (False, True, False), (True, False, True)])
def test_gguf_sentencepiece_matches_the_original_model(tmp_path, add_dummy_prefix,
                                                       unk_as_control, remove_ws):
    """Token by token against the SentencePiece model the GGUF file was written from: seen
    and unseen words, runs of spaces (user-defined pieces), blank lines, byte fallback."""
    from superkern.analysis.tokens import count_tokens, load_tokenizer

    original, path = _spm_gguf(tmp_path, add_dummy_prefix, unk_as_control, remove_ws)
    tok, name = load_tokenizer(path)
    assert name == path.stem and tok.get_vocab_size() == original.get_piece_size()
    rng = np.random.default_rng(1)
    alphabet = list("the cat sat über naïve 2024 x**2 ") + ["  ", "   ", "\n", "\n\n", "<b>",
                                                            "😀", "ß", "\t", "漢字", "Ω"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(1, 60))) for _ in range(400)]
    texts += ["the  cat   sat\n\nüber 😀 <b>x</b>", "  leading", "trailing  ", "\n", "Q"]
    for text in texts:
        want = original.encode(text)
        assert tok.encode(text).ids == want, (text, tok.encode(text).tokens)
        assert tok.decode(want) == original.decode(want)
    assert any(original.id_to_piece(i).startswith("<0x") for i in original.encode("😀"))
    lines = [t + "\n" for t in texts]
    want = np.bincount([i for t in lines for i in original.encode(t)],
                       minlength=original.get_piece_size())
    assert count_tokens(lines, tok, chunk_chars=1).tolist() == want.tolist()


def test_gguf_sentencepiece_unknown_id_over_a_normal_piece(tmp_path):
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("sentencepiece")
    from superkern.analysis.tokens import load_tokenizer

    w = gguf.GGUFWriter(str(tmp_path / "u.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "a", "b", "ab"])
    w.add_token_scores([0.0, -1.0, -2.0, -3.0])
    w.add_token_types([1, 1, 1, 1])  # nothing typed unknown, and id 0 is normal
    w.add_unk_token_id(0)
    w.add_tensor("token_embd.weight", np.ones((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"unknown_token_id 0 \('<unk>'\) has type 1, not"):
        load_tokenizer(tmp_path / "u.gguf")


def test_gguf_sentencepiece_refuses_broken_files(tmp_path):
    pytest.importorskip("sentencepiece")
    from superkern.analysis.gguf_spm import model_proto

    toks = ["<unk>", "a", "b", "ab"]
    ok = dict(add_dummy_prefix=True)
    with pytest.raises(ValueError, match="4 pieces, 3 scores and 4 types"):
        model_proto(toks, np.zeros(3), np.array([2, 1, 1, 1]), **ok)
    sc = -np.arange(4.0)
    with pytest.raises(ValueError, match=r"piece 2 \('b'\) has token type 9"):
        model_proto(toks, sc, np.array([2, 1, 9, 1]), **ok)
    with pytest.raises(ValueError, match="exactly one unknown piece, this one has 0"):
        model_proto(toks, sc, np.array([3, 1, 1, 1]), **ok)
    with pytest.raises(ValueError, match="1 repeated piece strings"):
        model_proto(["<unk>", "a", "a", "ab"], sc, np.array([2, 1, 1, 1]), **ok)
    with pytest.raises(ValueError, match="2 byte pieces; byte fallback needs"):
        model_proto(toks + ["<0x00>", "<0x01>"], -np.arange(6.0), np.array([2, 1, 1, 1, 6, 6]),
                    **ok)
    with pytest.raises(ValueError, match="all 3 normal pieces have the score -1000"):
        model_proto(toks, np.full(4, -1000.0), np.array([2, 1, 1, 1]), **ok)  # no SPM model
    assert isinstance(model_proto(toks, sc, np.array([2, 1, 0, 1]), **ok), bytes)  # 0: normal
