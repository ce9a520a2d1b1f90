"""GGUF files: tiny models written at test time the way llama.cpp writes them, loaded by us and
by `transformers` (`gguf_file=`, float32) as the reference."""

import os

import numpy as np
import pytest
import torch

import keras_lm
from tests.conftest import assert_greedy_matches_transformers, random_ids, sentencepiece_proto
from tests.gguf_files import (
    gemma3_gguf_tensors,
    gpt2_gguf_tensors,
    llama_gguf_tensors,
    sentencepiece_metadata,
    write_gguf,
)

pytest.importorskip("gguf")
pytest.importorskip("accelerate")  # transformers needs it to read GGUF files

VOCAB = 64


def _sp_proto():
    return sentencepiece_proto(vocab_size=40, eos="<eos>", bos="<bos>",
                               user_defined=("<start_of_turn>", "<end_of_turn>"))


def _reference(path):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()


def _assert_logits_match(lm, reference, vocab, atol=1e-4, length=20):
    ids = random_ids(2, length, vocab)
    ours = np.asarray(lm.predict({"token_ids": ids, "padding_mask": np.ones_like(ids)},
                                 verbose=0))
    with torch.no_grad():
        expected = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, expected, atol=atol)


def write_gemma3(path, types=None, tie=True, seed=0):
    import transformers

    torch.manual_seed(seed)
    # head_dim 256: transformers reads no query scale from GGUF and assumes 256.
    config = transformers.Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=256, num_hidden_layers=6,
        num_attention_heads=2, num_key_value_heads=1, head_dim=256, sliding_window=4,
        max_position_embeddings=128, tie_word_embeddings=tie)
    model = transformers.Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.normal_(0.0, 0.5)
    metadata = {
        "context_length": 128, "embedding_length": 256, "block_count": 6,
        "feed_forward_length": 256, "attention.head_count": 2, "attention.head_count_kv": 1,
        "attention.key_length": 256, "attention.value_length": 256,
        "attention.layer_norm_rms_epsilon": 1e-6, "rope.freq_base": 1_000_000.0,
        "attention.sliding_window": 4, **sentencepiece_metadata(_sp_proto(), size=VOCAB),
    }
    write_gguf(path, "gemma3", metadata, gemma3_gguf_tensors(model), types)
    return model


MIXED_GEMMA3_TYPES = {
    "token_embd.weight": "Q8_0", "blk.0.attn_q.weight": "Q4_K", "blk.0.attn_k.weight": "Q5_K",
    "blk.0.attn_v.weight": "Q6_K", "blk.0.attn_output.weight": "Q5_0",
    "blk.0.ffn_gate.weight": "Q4_0", "blk.0.ffn_up.weight": "F16",
    "blk.0.ffn_down.weight": "BF16", "blk.1.attn_q.weight": "Q8_0",
    "blk.5.ffn_down.weight": "Q6_K",
}


@pytest.mark.parametrize("types", [None, MIXED_GEMMA3_TYPES], ids=["f32", "quantized"])
def test_gemma3_gguf_matches_transformers(tmp_path, types):
    path = tmp_path / "tiny-gemma3.gguf"
    write_gemma3(path, types)
    reference = _reference(path)
    lm = keras_lm.models.CausalLM.from_preset(str(path))
    assert isinstance(lm, keras_lm.models.Gemma3CausalLM)
    assert lm.backbone.tie_word_embeddings and lm.backbone.num_layers == 6
    _assert_logits_match(lm, reference, VOCAB)
    prompts = [random_ids(1, n, VOCAB, seed=n)[0] for n in (3, 7)]  # past the window of 4
    assert_greedy_matches_transformers(lm, reference, prompts, width=12)


def test_gemma3_gguf_tokenizer_matches_transformers(tmp_path):
    import sentencepiece
    import transformers

    proto = sentencepiece_bpe_proto()
    path = tmp_path / "tok.gguf"
    metadata = {"context_length": 128, "embedding_length": 256, "block_count": 1,
                "feed_forward_length": 256, "attention.head_count": 1,
                "attention.key_length": 256, "attention.layer_norm_rms_epsilon": 1e-6,
                **sentencepiece_metadata(proto)}
    size = len(metadata["tokenizer.ggml.tokens"])
    write_gguf(path, "gemma3", metadata, {"token_embd.weight": np.zeros((size, 256))})
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    original = sentencepiece.SentencePieceProcessor()
    original.LoadFromSerializedProto(proto)
    ours = keras_lm.models.Gemma3Tokenizer.from_preset(str(path))
    for text in HARD_STRINGS:
        expected = reference(text, add_special_tokens=False)["input_ids"]
        assert ours(text).tolist() == expected == original.EncodeAsIds(text), text
        assert ours.detokenize(expected) == reference.decode(expected)
    preprocessor = keras_lm.models.Gemma3CausalLMPreprocessor.from_preset(str(path))
    assert preprocessor.add_start_token  # tokenizer.ggml.add_bos_token


HARD_STRINGS = [
    "the quick brown fox", "  two leading spaces", "trailing   ", "tabs\tand\nnewlines\n\n",
    "digits 1234567890", "東京 and 😀 emoji", "naïve café", "<start_of_turn>user hi",
    "x" * 30, " ", "", "a  b   c    d", "\u200b zero width", "\x00",
]


def sentencepiece_bpe_proto() -> bytes:
    """A tiny SentencePiece BPE model with byte fallback and user-defined pieces, like
    Gemma's (which is what GGUF's 'llama' tokenizer model describes)."""
    import io

    import sentencepiece

    from tests.conftest import SPM_SENTENCES

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_SENTENCES * 4 + ["digits 0123456789 spaces"]),
        model_writer=model, vocab_size=340, model_type="bpe", byte_fallback=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", split_digits=True,
        user_defined_symbols="<start_of_turn>,<end_of_turn>", add_dummy_prefix=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
    )
    return model.getvalue()


@pytest.mark.parametrize("tie", [False, True])
def test_llama_gguf_undoes_the_qk_permutation(tmp_path, tie):
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=tie, rope_theta=10000.0)
    model = transformers.LlamaForCausalLM(config).eval()
    proto = sentencepiece_proto(vocab_size=40)
    metadata = {"context_length": 128, "embedding_length": 64, "block_count": 2,
                "feed_forward_length": 96, "attention.head_count": 4,
                "attention.head_count_kv": 2, "rope.dimension_count": 16,
                "attention.layer_norm_rms_epsilon": 1e-6, "rope.freq_base": 10000.0,
                **sentencepiece_metadata(proto, add_space_prefix=True, size=VOCAB)}
    path = tmp_path / "tiny-llama.gguf"
    write_gguf(path, "llama", metadata, llama_gguf_tensors(model),
               {"blk.0.attn_q.weight": "Q8_0", "blk.1.attn_k.weight": "Q8_0"})
    lm = keras_lm.models.CausalLM.from_preset(str(path))
    assert isinstance(lm, keras_lm.models.LlamaCausalLM)
    assert lm.backbone.tie_word_embeddings == tie
    _assert_logits_match(lm, _reference(path), VOCAB)


def test_gpt2_gguf_matches_transformers(tmp_path):
    import transformers

    from keras_lm.demo import DEMO_WORDS, byte_level_vocabulary

    vocab, merges = byte_level_vocabulary(DEMO_WORDS)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(vocab), n_positions=1024, n_embd=32, n_layer=2, n_head=4)).eval()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    metadata = {"context_length": 1024, "embedding_length": 32, "block_count": 2,
                "feed_forward_length": 128, "attention.head_count": 4,
                "attention.layer_norm_epsilon": 1e-5, "tokenizer.ggml.model": "gpt2",
                "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": merges,
                "tokenizer.ggml.token_type": [3] + [1] * (len(tokens) - 1),
                "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 0}
    path = tmp_path / "tiny-gpt2.gguf"
    write_gguf(path, "gpt2", metadata, gpt2_gguf_tensors(model))
    lm = keras_lm.models.CausalLM.from_preset(str(path))
    assert isinstance(lm, keras_lm.models.GPT2CausalLM)
    _assert_logits_match(lm, _reference(path), len(vocab))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for text in ("the quick brown fox", "keras  is\na deep-learning library!", " ü"):
        expected = reference(text, add_special_tokens=False)["input_ids"]
        assert lm.preprocessor.tokenizer(text).tolist() == expected


def test_a_folder_holding_one_gguf_and_save_round_trip(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    write_gemma3(folder / "m.gguf", {"token_embd.weight": "Q8_0"})
    lm = keras_lm.models.CausalLM.from_preset(str(folder))
    lm.save_to_preset(str(tmp_path / "native"))
    again = keras_lm.models.CausalLM.from_preset(str(tmp_path / "native"))
    ids = random_ids(1, 9, VOCAB)
    batch = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    np.testing.assert_array_equal(np.asarray(lm.predict(batch, verbose=0)),
                                  np.asarray(again.predict(batch, verbose=0)))
    assert again.preprocessor.tokenizer("hello world").tolist() == \
        lm.preprocessor.tokenizer("hello world").tolist()


# -- bad files: one clear error naming the file, before any model is returned --------------

def _tiny(tmp_path, name="m.gguf", **kwargs):
    path = tmp_path / name
    write_gemma3(path, **kwargs)
    return path


@pytest.mark.parametrize("cut", [6, 200, -100])
def test_truncated_gguf_is_refused(tmp_path, cut):
    path = _tiny(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="truncated|not a GGUF") as error:
        keras_lm.models.CausalLM.from_preset(str(path))
    assert str(path) in str(error.value)


def test_not_a_gguf_file_is_refused(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"PK\x03\x04 definitely not gguf" * 4)
    with pytest.raises(ValueError, match="not a GGUF file"):
        keras_lm.models.CausalLM.from_preset(str(path))


def test_unknown_architecture_is_refused(tmp_path):
    path = tmp_path / "mamba.gguf"
    write_gguf(path, "mamba", {"block_count": 1}, {"token_embd.weight": np.zeros((4, 32))})
    with pytest.raises(ValueError, match="architecture 'mamba' is not supported"):
        keras_lm.models.CausalLM.from_preset(str(path))


def test_unsupported_tensor_type_is_named(tmp_path):
    import gguf

    path = tmp_path / "q2k.gguf"
    kind = gguf.GGMLQuantizationType.Q2_K  # written raw: a block type we do not load
    block, size = gguf.GGML_QUANT_SIZES[kind]
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_uint32("gemma3.block_count", 1)
    writer.add_tensor("token_embd.weight", np.zeros((VOCAB, 256 // block * size), np.uint8),
                      raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="Q2_K"):
        keras_lm.models.CausalLM.from_preset(str(path))


def test_missing_metadata_is_named(tmp_path):
    path = tmp_path / "m.gguf"
    metadata = {"block_count": 1, **sentencepiece_metadata(_sp_proto(), size=VOCAB)}
    write_gguf(path, "gemma3", metadata, {"token_embd.weight": np.zeros((VOCAB, 32))})
    with pytest.raises(ValueError, match="gemma3.attention.head_count"):
        keras_lm.models.CausalLM.from_preset(str(path))


def test_two_gguf_files_in_a_folder_are_ambiguous(tmp_path):
    _tiny(tmp_path, "a.gguf")
    _tiny(tmp_path, "b.gguf")
    with pytest.raises(ValueError, match="several GGUF files"):
        keras_lm.models.CausalLM.from_preset(str(tmp_path))


# -- the other architectures GGUF writers emit among ours --------------------------------
# Written in float32 and compared with the transformers model they were written from (the
# GGUF loader of transformers has no Gemma 1 support), so every transform is checked exactly.

def _family_case(kind, vocab_size):
    import transformers

    from tests.gguf_files import GEMMA2_NAMES, LLAMA_NAMES, QK_NORM_NAMES

    llama_like = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=48,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128)
    metadata = {"context_length": 128, "embedding_length": 32, "block_count": 2,
                "feed_forward_length": 48, "attention.head_count": 4,
                "attention.head_count_kv": 2, "attention.layer_norm_rms_epsilon": 1e-6}
    if kind == "gemma":
        config = transformers.GemmaConfig(**llama_like, head_dim=16)
        model_cls, names, offset = transformers.GemmaForCausalLM, LLAMA_NAMES, 1.0
        metadata.update({"attention.key_length": 16, "rope.freq_base": 10000.0})
    elif kind == "gemma2":
        config = transformers.Gemma2Config(**llama_like, head_dim=16, sliding_window=4,
                                           query_pre_attn_scalar=16,
                                           attn_logit_softcapping=2.0,
                                           final_logit_softcapping=3.0)
        model_cls, names, offset = transformers.Gemma2ForCausalLM, GEMMA2_NAMES, 1.0
        metadata.update({"attention.key_length": 16, "attention.sliding_window": 4,
                         "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0,
                         "rope.freq_base": 10000.0})
    elif kind == "qwen2":
        config = transformers.Qwen2Config(**llama_like, tie_word_embeddings=False,
                                          rope_theta=1e6)
        model_cls, names, offset = transformers.Qwen2ForCausalLM, LLAMA_NAMES, 0.0
        metadata.update({"rope.freq_base": 1e6})
    else:
        config = transformers.Qwen3Config(**llama_like, head_dim=16, tie_word_embeddings=True,
                                          rope_theta=1e6)
        model_cls, names, offset = (transformers.Qwen3ForCausalLM,
                                    {**LLAMA_NAMES, **QK_NORM_NAMES}, 0.0)
        metadata.update({"attention.key_length": 16, "rope.freq_base": 1e6})
    torch.manual_seed(0)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name or "bias" in name:
                parameter.normal_(0.0, 0.5)
    return model, names, offset, metadata


@pytest.mark.parametrize("kind,expected", [
    ("gemma", "GemmaCausalLM"), ("gemma2", "GemmaCausalLM"), ("qwen2", "QwenCausalLM"),
    ("qwen3", "Qwen3CausalLM")])
def test_other_architectures_load_from_gguf(tmp_path, kind, expected):
    from tests.gguf_files import llama_layout_gguf_tensors

    if kind.startswith("gemma"):
        vocab_size, tokenizer = VOCAB, sentencepiece_metadata(_sp_proto(), size=VOCAB)
    else:
        from keras_lm.demo import DEMO_WORDS, byte_level_vocabulary

        vocab, merges = byte_level_vocabulary(DEMO_WORDS, ascii_only=True)
        tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        tokens[0] = "<|endoftext|>"
        tokens.append("<|im_end|>")
        vocab_size = len(tokens)
        tokenizer = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2",
                     "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": merges,
                     "tokenizer.ggml.token_type": [3] + [1] * (len(tokens) - 2) + [3]}
    model, names, offset, metadata = _family_case(kind, vocab_size)
    metadata.update(tokenizer)
    path = tmp_path / f"tiny-{kind}.gguf"
    write_gguf(path, kind, metadata, llama_layout_gguf_tensors(model, names, offset))
    lm = keras_lm.models.CausalLM.from_preset(str(path))
    assert type(lm).__name__ == expected
    _assert_logits_match(lm, model, vocab_size)
    if not kind.startswith("gemma"):
        ids = lm.preprocessor.tokenizer("the quick fox").tolist()
        assert ids[0] == vocab["the"] and vocab["quick"] in ids
        assert lm.preprocessor.tokenizer.detokenize(ids) == "the quick fox"
        assert vocab_size - 1 in lm.preprocessor.tokenizer.generation_stop_ids()
    prompts = [random_ids(1, n, VOCAB, seed=n)[0] for n in (3, 7)]
    assert_greedy_matches_transformers(lm, model, prompts, width=12)


def test_llama3_gguf_gets_the_llama3_classes_and_llama31_rope_freqs(tmp_path):
    import transformers

    from keras_lm.demo import DEMO_WORDS, byte_level_vocabulary

    vocab, merges = byte_level_vocabulary(DEMO_WORDS, ascii_only=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    tokens += ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    size = len(tokens)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=size, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        rope_theta=500000.0)).eval()
    metadata = {"context_length": 128, "embedding_length": 32, "block_count": 1,
                "feed_forward_length": 48, "attention.head_count": 4,
                "attention.head_count_kv": 2, "rope.dimension_count": 8,
                "attention.layer_norm_rms_epsilon": 1e-6, "rope.freq_base": 500000.0,
                "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe",
                "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": merges,
                "tokenizer.ggml.token_type": [1] * (size - 3) + [3, 3, 3],
                "tokenizer.ggml.bos_token_id": size - 3, "tokenizer.ggml.eos_token_id": size - 2}
    metadata["tokenizer.chat_template"] = "{% for m in messages %}[{{ m.content }}]{% endfor %}"
    tensors = llama_gguf_tensors(model)
    write_gguf(tmp_path / "llama3.gguf", "llama", metadata, tensors)
    lm = keras_lm.models.CausalLM.from_preset(str(tmp_path / "llama3.gguf"))
    assert isinstance(lm, keras_lm.models.Llama3CausalLM)
    assert lm.preprocessor.apply_chat_template([{"role": "user", "content": "hi"}]) == "[hi]"
    _assert_logits_match(lm, model, size)
    assert lm.preprocessor.prompt_rows(["the fox"])[0][0] == size - 3
    assert size - 1 in lm.preprocessor.tokenizer.generation_stop_ids()  # <|eot_id|>

    # Llama 3.1+: llama.cpp stores the RoPE scaling as one divisor per frequency.
    from keras_lm.layers.rotary import rope_inverse_frequencies

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    torch.manual_seed(1)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=size, hidden_size=64, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
        rope_theta=10000.0, rope_scaling=scaling, max_position_embeddings=256)).eval()
    metadata.update({"embedding_length": 64, "attention.head_count": 2,
                     "attention.head_count_kv": 2, "rope.dimension_count": 32,
                     "rope.freq_base": 10000.0, "rope.scaling.original_context_length": 64})
    tensors = llama_gguf_tensors(model)
    divisors = rope_inverse_frequencies(32, 10000.0) / rope_inverse_frequencies(
        32, 10000.0, llama3_scaling=scaling)
    assert len(set(np.round(divisors, 3))) > 2  # scaled, unscaled and blended bands
    tensors["rope_freqs.weight"] = divisors.astype(np.float32)
    write_gguf(tmp_path / "llama31.gguf", "llama", metadata, tensors)
    lm = keras_lm.models.CausalLM.from_preset(str(tmp_path / "llama31.gguf"))
    assert lm.backbone.rope_frequency_adjustment_factor == 8.0
    _assert_logits_match(lm, model, size, length=200)
    tensors["rope_freqs.weight"] = np.linspace(1, 3, 16).astype(np.float32)
    write_gguf(tmp_path / "odd.gguf", "llama", metadata, tensors)
    with pytest.raises(ValueError, match="rope_freqs"):
        keras_lm.models.CausalLM.from_preset(str(tmp_path / "odd.gguf"))
