"""Tokenizers of the byte-level BPE families from the files a checkpoint folder holds
(`tokenizer.json`, or `vocab.json` + `merges.txt`), against `transformers` on the same files."""

import json

import numpy as np
import pytest

import keras_lm
from tests.conftest import SPM_SENTENCES

HARD_STRINGS = [
    "the quick brown fox", "  two leading spaces", "trailing   ", "tabs\tand\nnewlines\n\n",
    "digits 1234567890 and 3.14159", "東京 and 😀 emoji", "naïve café", "Ǆ ﬁ Å vs Å",
    "it's we'll THEY'RE", "x" * 30, " ", "", "a  b   c    d", "\u200b zero width",
    "<|eot_id|> special <|im_end|> in text",
]
CORPUS = SPM_SENTENCES * 4 + ["digits 0123456789 spaces  and\ttabs\n", "it's we'll they're"]


def _train_tokenizer_json(path, pattern, special, normalizer=None, ignore_merges=False):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer == "NFC":
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=
                                  pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.add_special_tokens(special)
    tokenizer.save(str(path / "tokenizer.json"))
    return tokenizer


def _save_model(path, kind, vocab_size, **config):
    import transformers

    classes = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}
    config_cls, model_cls = classes[kind]
    model_cls(config_cls(vocab_size=vocab_size, hidden_size=16, intermediate_size=24,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         **config)).save_pretrained(str(path))


def _assert_same_ids(ours, reference):
    for text in HARD_STRINGS:
        expected = reference(text, add_special_tokens=False)["input_ids"]
        assert ours(text).tolist() == expected, text
        assert ours.detokenize(expected) == reference.decode(expected), text


def test_llama3_folder_with_only_tokenizer_json(tmp_path):
    import transformers

    from keras_lm.models.llama3 import LLAMA3_SPLIT_PATTERN

    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>"]
    tokenizer = _train_tokenizer_json(tmp_path, LLAMA3_SPLIT_PATTERN, special,
                                      ignore_merges=True)
    _save_model(tmp_path, "llama", tokenizer.get_vocab_size(), tie_word_embeddings=True)
    lm = keras_lm.models.CausalLM.from_preset(str(tmp_path))
    assert isinstance(lm, keras_lm.models.Llama3CausalLM)
    reference = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path /
                                                                        "tokenizer.json"))
    ours = lm.preprocessor.tokenizer
    _assert_same_ids(ours, reference)
    begin, end, eot = (tokenizer.token_to_id(t) for t in special[:3])
    assert lm.preprocessor.prompt_rows(["hi"])[0][0] == begin
    assert {end, eot} <= set(ours.generation_stop_ids())
    # Tied heads survive a save and a reload.
    lm.save_to_preset(str(tmp_path / "saved"))
    again = keras_lm.models.CausalLM.from_preset(str(tmp_path / "saved"))
    assert again.backbone.tie_word_embeddings
    ids = np.array([[begin, 5, 6, 7]], "int32")
    batch = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    np.testing.assert_array_equal(np.asarray(lm.predict(batch, verbose=0)),
                                  np.asarray(again.predict(batch, verbose=0)))
    _assert_same_ids(again.preprocessor.tokenizer, reference)


def test_qwen_tokenizer_json_with_nfc_and_single_digits(tmp_path):
    import transformers

    from keras_lm.models.qwen import QWEN_SPLIT_PATTERN

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = _train_tokenizer_json(tmp_path, QWEN_SPLIT_PATTERN, special, normalizer="NFC")
    _save_model(tmp_path, "qwen2", tokenizer.get_vocab_size())
    lm = keras_lm.models.CausalLM.from_preset(str(tmp_path))
    assert isinstance(lm, keras_lm.models.QwenCausalLM)
    reference = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path /
                                                                        "tokenizer.json"))
    _assert_same_ids(lm.preprocessor.tokenizer, reference)
    assert lm.preprocessor.prompt_rows(["hi"])[0].tolist() == \
        reference("hi", add_special_tokens=False)["input_ids"]  # no start token
    stops = set(lm.preprocessor.tokenizer.generation_stop_ids())
    assert {tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")} == stops


def test_opt_vocab_and_merges(tmp_path):
    import transformers

    from keras_lm.demo import DEMO_WORDS, byte_level_vocabulary

    vocab, merges = byte_level_vocabulary(DEMO_WORDS)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3,
             **{t: i + 4 for t, i in vocab.items() if t != "<|endoftext|>"}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    transformers.OPTForCausalLM(transformers.OPTConfig(
        vocab_size=max(vocab.values()) + 1, hidden_size=16, ffn_dim=24, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=16,
    )).save_pretrained(str(tmp_path))
    lm = keras_lm.models.CausalLM.from_preset(str(tmp_path))
    assert isinstance(lm, keras_lm.models.OPTCausalLM)
    reference = transformers.GPT2Tokenizer(
        vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt"),
        bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    ours = lm.preprocessor.tokenizer
    for text in HARD_STRINGS[:-1]:
        assert ours(text).tolist() == reference(text, add_special_tokens=False)["input_ids"]
    assert (ours.start_token_id, ours.end_token_id, ours.pad_token_id) == (2, 2, 1)
    assert lm.preprocessor.prompt_rows(["the fox"])[0][0] == 2  # OPT starts with </s>


@pytest.mark.parametrize("pattern", ["(unclosed", "[z-a]"])
def test_a_bad_split_pattern_is_a_clear_error(pattern):
    with pytest.raises(ValueError, match="split_pattern"):
        keras_lm.models.Llama3Tokenizer(vocabulary={"a": 0, "<|begin_of_text|>": 1,
                                                    "<|end_of_text|>": 2},
                                        merges=[], split_pattern=pattern)


def test_gemma3_folder_with_only_tokenizer_json(tmp_path):
    """A SentencePiece-family folder that ships `tokenizer.json` alone (and one that ships
    both, where `tokenizer.json` is preferred) gives `transformers`' ids."""
    import transformers

    from tests.test_gemma3_parity import save_hf_gemma3
    from tests.test_gguf import HARD_STRINGS as SP_HARD_STRINGS
    from tests.test_gguf import sentencepiece_bpe_proto

    (tmp_path / "spm.model").write_bytes(sentencepiece_bpe_proto())
    converted = transformers.GemmaTokenizer(vocab_file=str(tmp_path / "spm.model"))
    converted.save_pretrained(str(tmp_path / "hf"))
    assert not (tmp_path / "hf" / "tokenizer.model").exists()
    save_hf_gemma3(tmp_path / "hf", vocab_size=converted.vocab_size)
    lm = keras_lm.models.CausalLM.from_preset(str(tmp_path / "hf"))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ours = lm.preprocessor.tokenizer
    for text in SP_HARD_STRINGS:
        assert ours(text).tolist() == reference(text, add_special_tokens=False)["input_ids"]
    assert lm.preprocessor.prompt_rows(["hi"])[0][0] == ours.start_token_id  # Gemma's <bos>
    lm.save_to_preset(str(tmp_path / "saved"))  # the JSON travels as an asset
    again = keras_lm.models.CausalLM.from_preset(str(tmp_path / "saved"))
    assert again.preprocessor.tokenizer("hello world").tolist() == ours("hello world").tolist()


def test_generation_config_stop_ids_are_honoured_and_saved(tmp_path):
    from keras_lm.models.qwen import QWEN_SPLIT_PATTERN

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|custom_stop|>"]
    tokenizer = _train_tokenizer_json(tmp_path, QWEN_SPLIT_PATTERN, special)
    _save_model(tmp_path, "qwen2", tokenizer.get_vocab_size())
    custom = tokenizer.token_to_id("<|custom_stop|>")
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [custom]}))
    lm = keras_lm.models.CausalLM.from_preset(str(tmp_path))
    assert custom in lm.preprocessor.tokenizer.generation_stop_ids()
    lm.save_to_preset(str(tmp_path / "saved"))
    again = keras_lm.models.CausalLM.from_preset(str(tmp_path / "saved"))
    assert custom in again.preprocessor.tokenizer.generation_stop_ids()
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": "x"}))
    with pytest.raises(ValueError, match="eos_token_id"):
        keras_lm.models.CausalLM.from_preset(str(tmp_path))


SP_CORPUS = SPM_SENTENCES * 4 + ["digits 0123456789 spaces  and\ttabs\n", "hello, world!"]


def _bpe_proto(pad, bos, eos, dummy_prefix, user_defined=()):
    """A SentencePiece BPE model with byte fallback, like Llama's, Mistral's and Gemma's."""
    import io

    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SP_CORPUS), model_writer=out, vocab_size=340, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece=pad, bos_piece=bos, eos_piece=eos,
        unk_piece="<unk>", byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", add_dummy_prefix=dummy_prefix,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        user_defined_symbols=list(user_defined), minloglevel=2)
    return out.getvalue()


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma"])
def test_sentencepiece_folder_with_only_tokenizer_model(family, tmp_path):
    """A Hugging Face folder whose tokenizer is `tokenizer.model` alone (older Llama 2 and
    Mistral repos): ours, loaded from the folder, gives `AutoTokenizer`'s ids, special tokens
    written in the text included (`special_tokens_in_strings=True`)."""
    import transformers

    gemma = family == "gemma"
    proto = _bpe_proto("<pad>", "<bos>" if gemma else "<s>", "<eos>" if gemma else "</s>",
                       dummy_prefix=not gemma,
                       user_defined=["<start_of_turn>", "<end_of_turn>"] if gemma else ())
    tokenizer_cls = {"llama": keras_lm.models.LlamaTokenizer,
                     "mistral": keras_lm.models.MistralTokenizer,
                     "gemma": keras_lm.models.GemmaTokenizer}[family]
    tokenizer_cls(proto=proto).export_to_transformers(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": family}))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("tokenizer")) == \
        ["tokenizer.model", "tokenizer_config.json"]
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = tokenizer_cls.from_preset(str(tmp_path), special_tokens_in_strings=True)
    start, end = ("<bos>", "<eos>") if gemma else ("<s>", "</s>")
    llama = family == "llama"
    strings = [s for s in HARD_STRINGS if not (llama and s.startswith(" "))] + [
        f"{start} after the start", f"before the end {end}", "x\n y  z",
        "<start_of_turn>user\nhi<end_of_turn>" if gemma else "[INST] hi [/INST]"]
    for text in strings:
        expected = reference(text, add_special_tokens=False)["input_ids"]
        assert ours(text).tolist() == expected, text
    # Llama text that starts with a space: sentencepiece (and KerasHub) add the dummy prefix
    # before it ("▁▁leading"); transformers 5's Llama conversion of a bare tokenizer.model
    # folds that space into the prefix ("▁leading"). Ours follows the model file.
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
    assert ours(" leading").tolist() == processor.encode(" leading")
