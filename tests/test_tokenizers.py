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
