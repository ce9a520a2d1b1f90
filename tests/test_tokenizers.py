"""Tokenizers on `tokenizers` and `sentencepiece`, without TensorFlow."""

import io

import numpy as np
import pytest

import keras_lm


def test_bpe_round_trip_and_batches(gpt2_tokenizer):
    ids = gpt2_tokenizer("the quick brown fox")
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert gpt2_tokenizer.detokenize(ids) == "the quick brown fox"
    batch = gpt2_tokenizer.tokenize(["the fox", "a dog"])
    assert isinstance(batch, list) and len(batch) == 2
    assert gpt2_tokenizer.detokenize(batch) == ["the fox", "a dog"]
    assert gpt2_tokenizer.tokenize(np.array(["the fox"]))[0].tolist() == batch[0].tolist()


def test_special_tokens_are_never_split(gpt2_tokenizer):
    ids = gpt2_tokenizer("the<|endoftext|>fox").tolist()
    assert gpt2_tokenizer.end_token_id in ids
    assert gpt2_tokenizer.end_token_id == gpt2_tokenizer.token_to_id("<|endoftext|>")
    assert gpt2_tokenizer.special_token_ids == [gpt2_tokenizer.end_token_id]


def test_vocabulary_lookups(gpt2_tokenizer):
    token_id = gpt2_tokenizer.token_to_id("Ġquick")
    assert gpt2_tokenizer.id_to_token(token_id) == "Ġquick"
    assert gpt2_tokenizer.vocabulary_size() == len(gpt2_tokenizer.get_vocabulary())
    with pytest.raises(ValueError, match="`id`"):
        gpt2_tokenizer.id_to_token(10**7)


def test_seed_example_vocabulary():
    vocab = {"<|endoftext|>": 0, "a": 4, "Ġquick": 5, "Ġfox": 6}
    merges = ["Ġ q", "u i", "c k", "ui ck", "Ġq uick", "Ġ f", "o x", "Ġf ox"]
    tok = keras_lm.models.GPT2Tokenizer(vocabulary=vocab, merges=merges)
    assert tok("a quick fox").tolist() == [4, 5, 6]
    assert tok.detokenize([4, 5, 6]) == "a quick fox"
    assert tok.vocabulary_size() == 4 and tok.id_limit() == 7  # sparse ids: 0, 4, 5, 6


def test_add_prefix_space_and_sequence_length(bpe_assets):
    vocab, merges = bpe_assets
    plain = keras_lm.tokenizers.BytePairTokenizer(vocab, merges)
    prefixed = keras_lm.tokenizers.BytePairTokenizer(vocab, merges, add_prefix_space=True)
    assert prefixed("fox").tolist() == plain(" fox").tolist() != plain("fox").tolist()
    padded = keras_lm.tokenizers.BytePairTokenizer(vocab, merges, sequence_length=6)
    out = padded(["the fox", "a"])
    assert out.shape == (2, 6)


def test_bpe_config_round_trip(gpt2_tokenizer):
    clone = type(gpt2_tokenizer).from_config(gpt2_tokenizer.get_config())
    assert clone("the lazy dog").tolist() == gpt2_tokenizer("the lazy dog").tolist()


def test_bpe_bad_input(bpe_assets):
    vocab, merges = bpe_assets
    with pytest.raises(ValueError, match="merge rule"):
        keras_lm.tokenizers.BytePairTokenizer(vocab, ["abc"])
    with pytest.raises(ValueError, match="vocabulary"):
        keras_lm.tokenizers.BytePairTokenizer("/no/such/vocab.json", merges)
    with pytest.raises(ValueError, match="Special token .* is not in the vocabulary"):
        keras_lm.models.GPT2Tokenizer(vocabulary={"a": 0}, merges=[])
    tok = keras_lm.tokenizers.BytePairTokenizer(vocab, merges)
    with pytest.raises(TypeError, match="string"):
        tok.tokenize(42)


@pytest.fixture(scope="module")
def spm_proto():
    import sentencepiece

    sentences = ["the quick brown fox jumps over the lazy dog"] * 5 + [
        "keras is a deep learning library", "i want to say hello", "where are you going"]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=40,
        model_type="unigram", bos_id=1, eos_id=2, pad_id=0, unk_id=3,
    )
    return model.getvalue()


def test_sentencepiece_from_bytes_and_path(spm_proto, tmp_path):
    tok = keras_lm.tokenizers.SentencePieceTokenizer(proto=spm_proto)
    ids = tok("the quick fox")
    assert tok.detokenize(ids) == "the quick fox"
    path = tmp_path / "m.spm"
    path.write_bytes(spm_proto)
    from_path = keras_lm.tokenizers.SentencePieceTokenizer(proto=str(path))
    assert from_path("the quick fox").tolist() == ids.tolist()
    assert tok.vocabulary_size() == 40
    piece = tok.id_to_token(5)
    assert tok.token_to_id(piece) == 5
    assert tok.token_to_id("no-such-piece-xyz") is None
    clone = keras_lm.tokenizers.SentencePieceTokenizer.from_config(tok.get_config())
    assert clone("where are you").tolist() == tok("where are you").tolist()


def test_sentencepiece_rejects_bad_proto():
    with pytest.raises(ValueError, match="SentencePiece"):
        keras_lm.tokenizers.SentencePieceTokenizer(proto=b"not a model")


# -- parity with `transformers`' tokenizers ------------------------------------------------------
PARITY_TEXTS = [
    "the quick brown fox", " leading space", "trailing space ", "two  spaces\tand\ttabs",
    "new\nlines\n\n", "Keras is a deep-learning library!", "numbers 12345 and 3.14",
    "unicode: café, naïve, 東京, emoji 🦊", "the<|endoftext|>fox", "<|endoftext|>", "",
    "it's we've I'm they'll", "   ",
]


def test_byte_level_bpe_matches_transformers_gpt2(bpe_assets, tmp_path):
    import json

    import transformers

    vocab, merges = bpe_assets
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                         encoding="utf-8")
    reference = transformers.GPT2Tokenizer.from_pretrained(str(tmp_path))
    ours = keras_lm.models.GPT2Tokenizer(vocabulary=vocab, merges=merges)
    for text in PARITY_TEXTS:
        ids = ours(text).tolist()
        assert ids == reference(text, add_special_tokens=False)["input_ids"], text
        assert ours.detokenize(ids) == reference.decode(ids), text
    assert len(ours("the<|endoftext|>fox")) == 3  # the special token is one id


SPECIAL_PIECES = ("<start_of_turn>", "<end_of_turn>")
SPM_TEXTS = ["the quick brown fox", "trailing space ", "two  spaces\tand\ttabs",
             "new\nlines\n\n", "Keras is a deep-learning library!", "numbers 12345 and 3.14",
             "unicode: café, naïve, 東京, emoji 🦊", "x<end_of_turn>\n<start_of_turn>model\n"]


def _train_sentencepiece(folder, add_dummy_prefix):
    """A BPE SentencePiece model trained like Llama's and Gemma's: byte fallback, identity
    normalization, digits split, user-defined special pieces."""
    import sentencepiece

    sentences = ["the quick brown fox jumps over the lazy dog"] * 5 + [
        "keras is a deep learning library", "i want to say hello", "where are you going",
        "numbers 12345 and more", "café naïve"]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=400,
        model_type="bpe", byte_fallback=True, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        user_defined_symbols=",".join(SPECIAL_PIECES), hard_vocab_limit=False,
        character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=add_dummy_prefix,
        allow_whitespace_only_pieces=True, split_digits=True, minloglevel=2,
    )
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    return str(folder / "tokenizer.model")


@pytest.mark.parametrize("style", ["gemma", "llama"])
def test_sentencepiece_bpe_with_byte_fallback_matches_transformers(style, tmp_path):
    import transformers

    proto = _train_sentencepiece(tmp_path / style, add_dummy_prefix=style == "llama")
    reference_cls = transformers.GemmaTokenizer if style == "gemma" else transformers.LlamaTokenizer
    reference = reference_cls.from_pretrained(str(tmp_path / style))
    ours = keras_lm.tokenizers.SentencePieceTokenizer(proto=proto)
    texts = SPM_TEXTS + (["<start_of_turn>user\nhi<end_of_turn>", " leading space", "   "]
                         if style == "gemma" else [])
    # (With a dummy prefix, transformers 5 drops SentencePiece's extra "▁" before a leading
    # space or special piece, so those texts are compared for the Gemma style only.)
    byte_pieces = 0
    for text in texts:
        ids = ours(text).tolist()
        assert ids == reference(text, add_special_tokens=False)["input_ids"], text
        assert ours.detokenize(ids) == reference.decode(ids), text
        byte_pieces += sum(ours.id_to_token(i).startswith("<0x") for i in ids)
    assert byte_pieces > 0  # the byte fallback was exercised
    assert ours("x<start_of_turn>").tolist()[-1] == ours.token_to_id("<start_of_turn>")
