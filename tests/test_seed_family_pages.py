"""The OPT, Llama and Gemma seed pages' examples through the keras_hub alias, on tiny local
presets built here (each page's preset name is replaced by one; the model vocabularies are
as large as the pages' literal token ids need).

Where a page's example cannot run in any implementation, the smallest fix is applied and
named: the OPT and Gemma pages refer to variables they never define (`backbone`, `gemma`),
the OPT custom-vocabulary example omits OPT's own `</s>` and `<pad>` tokens, and the Gemma
custom-backbone example passes GPT-2's arguments (`num_heads`, `max_sequence_length`) to
`GemmaBackbone`, which takes KerasHub's (`num_query_heads`, `num_key_value_heads`,
`head_dim`).
"""

import numpy as np
import pytest

import keras_lm as keras_hub
from tests.conftest import sentencepiece_proto
from tests.test_seed_examples import _embedding_gradients

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    from keras_lm.demo import DEMO_WORDS, byte_level_vocabulary

    root = tmp_path_factory.mktemp("family_presets")
    vocab, merges = byte_level_vocabulary(DEMO_WORDS)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, **{t: i + 3 for t, i in vocab.items()}}
    opt = keras_hub.models.OPTCausalLM(
        backbone=keras_hub.models.OPTBackbone(50272, 2, 2, 16, 32, max_sequence_length=64),
        preprocessor=keras_hub.models.OPTCausalLMPreprocessor(
            keras_hub.models.OPTTokenizer(vocabulary=vocab, merges=merges),
            sequence_length=32))
    opt.save_to_preset(str(root / "opt"))
    llama = keras_hub.models.LlamaCausalLM(
        backbone=keras_hub.models.LlamaBackbone(64, 2, 4, 16, 24, 2),
        preprocessor=keras_hub.models.LlamaCausalLMPreprocessor(
            keras_hub.models.LlamaTokenizer(proto=sentencepiece_proto(vocab_size=40)),
            sequence_length=32))
    llama.save_to_preset(str(root / "llama"))
    gemma_proto = sentencepiece_proto(vocab_size=40, eos="<eos>", bos="<bos>")
    gemma = keras_hub.models.GemmaCausalLM(
        backbone=keras_hub.models.GemmaBackbone(256000, 2, 2, 1, 8, 16, 4),
        preprocessor=keras_hub.models.GemmaCausalLMPreprocessor(
            keras_hub.models.GemmaTokenizer(proto=gemma_proto), sequence_length=32))
    gemma.save_to_preset(str(root / "gemma"))
    (root / "proto.spm").write_bytes(gemma_proto)
    return {name: str(root / name) for name in ("opt", "llama", "gemma")} | {
        "proto": str(root / "proto.spm")}


# -- OPT page -----------------------------------------------------------------------------

def test_opt_page(presets):
    opt_125m_en = opt_base_en = presets["opt"]
    opt_lm = keras_hub.models.OPTCausalLM.from_preset(opt_125m_en)
    assert opt_lm.generate("I want to say", max_length=30).startswith("I want to say")
    assert len(opt_lm.generate(["This is a", "Where are you"], max_length=30)) == 2

    opt_lm = keras_hub.models.OPTCausalLM.from_preset(opt_125m_en)
    opt_lm.compile(sampler="greedy")
    opt_lm.generate("I want to say", max_length=30)
    opt_lm.compile(sampler=keras_hub.samplers.BeamSampler(num_beams=2))
    opt_lm.generate("I want to say", max_length=30)

    prompt = {
        "token_ids": np.array([[5338, 318, 0, 0, 0]] * 2),
        "padding_mask": np.array([[1, 1, 0, 0, 0]] * 2),
    }
    opt_lm = keras_hub.models.OPTCausalLM.from_preset(opt_125m_en, preprocessor=None)
    out = opt_lm.generate(prompt)
    assert (np.asarray(out["token_ids"])[:, :2] == [5338, 318]).all()

    features = ["The quick brown fox jumped.", "I forgot my homework."]
    opt_lm = keras_hub.models.OPTCausalLM.from_preset(opt_125m_en)
    opt_lm.fit(x=features, batch_size=2)

    x = {
        "token_ids": np.array([[1, 2, 3, 4, 5]] * 2),
        "padding_mask": np.array([[1, 1, 1, 1, 1]] * 2),
    }
    y = np.array([[2, 3, 4, 5, 0]] * 2)
    sw = np.array([[1, 1, 1, 1, 1]] * 2)
    opt_lm = keras_hub.models.OPTCausalLM.from_preset(opt_base_en, preprocessor=None)
    opt_lm.fit(x=x, y=y, sample_weight=sw, batch_size=2)


def test_opt_page_custom_backbone_and_vocabulary():
    features = ["a quick fox.", "a fox quick."]
    vocab = {"<|endoftext|>": 0, "</s>": 1, "<pad>": 2, "a": 4, "Ġquick": 5, "Ġfox": 6}
    merges = ["Ġ q", "u i", "c k", "ui ck", "Ġq uick"]
    merges += ["Ġ f", "o x", "Ġf ox"]
    tokenizer = keras_hub.models.OPTTokenizer(vocabulary=vocab, merges=merges)
    preprocessor = keras_hub.models.OPTCausalLMPreprocessor(
        tokenizer=tokenizer, sequence_length=128)
    model = keras_hub.models.OPTBackbone(
        vocabulary_size=50265, num_layers=4, num_heads=4, hidden_dim=256,
        intermediate_dim=512, max_sequence_length=128)
    backbone = model
    opt_lm = keras_hub.models.OPTCausalLM(backbone=backbone, preprocessor=preprocessor)
    history = opt_lm.fit(x=features, batch_size=2)
    assert np.isfinite(history.history["loss"]).all()


# -- Llama page (its examples are the shared CausalLM ones) -------------------------------

def test_llama_page(presets):
    causal_lm = keras_hub.models.CausalLM.from_preset(presets["llama"])
    assert isinstance(causal_lm, keras_hub.models.LlamaCausalLM)
    assert isinstance(keras_hub.models.LlamaCausalLM.from_preset(presets["llama"]).backbone,
                      keras_hub.models.LlamaBackbone)
    out = causal_lm.generate("the quick", max_length=12, stop_token_ids="auto",
                             strip_prompt=False)
    assert out.startswith("the quick")
    assert isinstance(causal_lm.preprocessor, keras_hub.models.LlamaCausalLMPreprocessor)
    assert "llama2_7b_en" in keras_hub.models.LlamaCausalLM.presets


# -- Gemma page ---------------------------------------------------------------------------

def test_gemma_page(presets):
    gemma_2b_en = presets["gemma"]
    gemma_lm = keras_hub.models.GemmaCausalLM.from_preset(gemma_2b_en)
    gemma_lm.generate("I want to say", max_length=30)
    gemma_lm.generate(["This is a", "Where are you"], max_length=30)

    gemma_lm = keras_hub.models.GemmaCausalLM.from_preset(gemma_2b_en)
    gemma_lm.compile(sampler="top_k")
    gemma_lm.generate("I want to say", max_length=30)
    gemma_lm.compile(sampler=keras_hub.samplers.BeamSampler(num_beams=2))
    gemma_lm.generate("I want to say", max_length=30)

    prompt = {
        "token_ids": np.array([[2, 214064, 603, 0, 0, 0, 0]] * 2),
        "padding_mask": np.array([[1, 1, 1, 0, 0, 0, 0]] * 2),
    }
    gemma_lm = keras_hub.models.GemmaCausalLM.from_preset(gemma_2b_en, preprocessor=None)
    out = gemma_lm.generate(prompt)
    assert (np.asarray(out["token_ids"])[:, :3] == [2, 214064, 603]).all()

    features = ["The quick brown fox jumped.", "I forgot my homework."]
    gemma_lm = keras_hub.models.GemmaCausalLM.from_preset(gemma_2b_en)
    gemma_lm.fit(x=features, batch_size=2)

    gemma_lm = keras_hub.models.GemmaCausalLM.from_preset(gemma_2b_en)
    gemma = gemma_lm
    gemma.backbone.enable_lora(rank=4)
    before = [v.numpy().copy() for v in gemma_lm.backbone.lora_variables()]
    gemma_lm.fit(x=features, batch_size=2)
    after = [v.numpy() for v in gemma_lm.backbone.lora_variables()]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))

    x = {
        "token_ids": np.array([[2, 214064, 603, 5271, 6044, 9581, 1, 0]] * 2),
        "padding_mask": np.array([[1, 1, 1, 1, 1, 1, 1, 0]] * 2),
    }
    y = np.array([[214064, 603, 5271, 6044, 9581, 3, 0, 0]] * 2)
    sw = np.array([[1, 1, 1, 1, 1, 1, 0, 0]] * 2)
    gemma_lm = keras_hub.models.GemmaCausalLM.from_preset(gemma_2b_en, preprocessor=None)
    gemma_lm.fit(x=x, y=y, sample_weight=sw, batch_size=2)


def test_gemma_page_custom_backbone(presets, monkeypatch, tmp_path):
    features = ["The quick brown fox jumped.", "I forgot my homework."]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "proto.spm").write_bytes(open(presets["proto"], "rb").read())
    tokenizer = keras_hub.models.GemmaTokenizer(proto="proto.spm")
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(
        tokenizer=tokenizer, sequence_length=128)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=30552, num_layers=4, num_query_heads=4, num_key_value_heads=4,
        hidden_dim=256, intermediate_dim=512, head_dim=64)
    gemma_lm = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)
    history = gemma_lm.fit(x=features, batch_size=2)
    assert np.isfinite(history.history["loss"]).all()


def test_gemma_page_score_with_gradients_through_the_intercept(presets):
    import keras

    gemma_lm = keras_hub.models.GemmaCausalLM.from_preset(presets["gemma"])
    generations = gemma_lm.generate(["This is a", "Where are you"], max_length=30)
    preprocessed = gemma_lm.preprocessor.generate_preprocess(generations)
    generation_ids = preprocessed["token_ids"]
    padding_mask = preprocessed["padding_mask"]
    target_ids = keras.ops.roll(generation_ids, shift=-1, axis=1)
    losses, grads = _embedding_gradients(gemma_lm, generation_ids, padding_mask, target_ids)
    assert keras.ops.convert_to_numpy(losses).shape == generation_ids.shape
    grads = keras.ops.convert_to_numpy(grads)
    assert grads.shape == generation_ids.shape + (8,) and np.abs(grads).max() > 0
    # `layer_intercept_fn` may replace activations: zeroing every block's output changes
    # the scores.
    logits = keras.ops.convert_to_numpy(gemma_lm.score(generation_ids, padding_mask))
    zeroed = keras.ops.convert_to_numpy(gemma_lm.score(
        generation_ids, padding_mask,
        layer_intercept_fn=lambda x, i: x * 0.0 if i >= 0 else x))
    assert not np.allclose(logits, zeroed)
