"""KerasHub preset folders, both ways, against fixtures the real `keras-hub` package wrote
(scripts/make_keras_hub_fixtures.py): its files, and the logits, greedy tokens and token ids
KerasHub computed on them."""

import json
import os
import shutil

import h5py
import keras
import numpy as np
import pytest

import keras_lm

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "keras_hub")
NAMES = ["gpt2", "opt", "llama", "llama3", "mistral", "gemma", "gemma3", "qwen", "qwen3",
         "gpt2_int8", "llama_int8", "gemma_int8", "llama_sharded"]


def expected(name):
    return np.load(os.path.join(FIXTURES, f"{name}.npz"))


def logits_of(lm, arrays):
    return keras.ops.convert_to_numpy(
        lm({"token_ids": arrays["token_ids"], "padding_mask": arrays["padding_mask"]}))


def assert_keras_hub_logits(lm, name):
    arrays = expected(name)
    mask = arrays["padding_mask"]
    np.testing.assert_allclose(logits_of(lm, arrays)[mask], arrays["logits"][mask],
                               atol=1e-4, rtol=1e-4)


def h5_datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda key, item: out.__setitem__(key, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_keras_hub_preset_loads_with_keras_hub_logits_and_tokens(name):
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, name))
    family = json.load(open(os.path.join(FIXTURES, f"{name}.json")))
    assert type(lm).__name__.lower().startswith(family["family"].replace("_", ""))
    assert_keras_hub_logits(lm, name)
    arrays = expected(name)
    # KerasHub's greedy continuation of the first row's 4 tokens (int8 decoding runs our fused
    # kernels, which round activations differently from Keras' path; its logits are checked).
    if "greedy" in arrays and "int8" not in name:
        lm.preprocessor, preprocessor = None, lm.preprocessor
        lm.compile(sampler="greedy")
        prompt = {"token_ids": np.pad(arrays["token_ids"][:1, :4], ((0, 0), (0, 6))),
                  "padding_mask": np.pad(arrays["padding_mask"][:1, :4], ((0, 0), (0, 6)))}
        out = lm.generate(prompt, stop_token_ids=None)
        np.testing.assert_array_equal(np.asarray(out["token_ids"]), arrays["greedy"])
        lm.preprocessor = preprocessor
    ids = [np.asarray(lm.preprocessor.tokenizer(text)).tolist() for text in family["texts"]]
    if family["family"] == "llama3":
        # KerasHub's Llama 3 tokenizer ignores tokenizer.json's `ignore_merges` (a word in the
        # vocabulary is one token even when no merge path reaches it); ours follows
        # `transformers` (tests/test_family_tokenizers.py), so only decoding is compared.
        assert [lm.preprocessor.tokenizer.detokenize(i) for i in ids] == family["texts"]
    else:
        assert ids == family["token_ids"]


@pytest.mark.parametrize("name", ["gpt2", "opt", "llama3", "mistral", "gemma", "gemma3",
                                  "qwen", "qwen3", "gpt2_int8", "llama_int8", "gemma_int8"])
def test_save_to_preset_writes_keras_hub_layout(name, tmp_path):
    source = os.path.join(FIXTURES, name)
    lm = keras_lm.models.CausalLM.from_preset(source)
    lm.save_to_preset(str(tmp_path / name))
    theirs = h5_datasets(os.path.join(source, "model.weights.h5"))
    ours = h5_datasets(str(tmp_path / name / "model.weights.h5"))
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        np.testing.assert_array_equal(ours[key], value, err_msg=key)
    for file in ("config.json", "task.json", "preprocessor.json", "tokenizer.json"):
        mine = json.load(open(tmp_path / name / file))
        kh = json.load(open(os.path.join(source, file)))
        assert mine["registered_name"] == kh["registered_name"]
        assert mine["module"] == kh["module"]
    config = json.load(open(tmp_path / name / "config.json"))["config"]
    kh_config = json.load(open(os.path.join(source, "config.json")))["config"]
    assert set(config) <= set(kh_config) | {"tie_word_embeddings"}
    if "int8" in name:
        assert sorted(config["dtype"]["config"]["policy_map"]) == \
            sorted(kh_config["dtype"]["config"]["policy_map"])
    assert sorted(os.listdir(tmp_path / name / "assets" / "tokenizer")) == \
        sorted(os.listdir(os.path.join(source, "assets", "tokenizer")))
    assert_keras_hub_logits(keras_lm.models.CausalLM.from_preset(str(tmp_path / name)), name)


def test_sharded_weights_with_a_missing_shard_are_named(tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(os.path.join(FIXTURES, "llama_sharded"), folder)
    os.remove(folder / "model_00002.weights.h5")
    with pytest.raises(ValueError, match="model_00002.weights.h5"):
        keras_lm.models.CausalLM.from_preset(str(folder))


def test_keras_hub_gemma3_with_a_vision_encoder_is_refused(tmp_path):
    folder = tmp_path / "gemma3"
    shutil.copytree(os.path.join(FIXTURES, "gemma3"), folder)
    config = json.load(open(folder / "config.json"))
    config["config"]["vision_encoder"] = {"class_name": "Gemma3VisionEncoder", "config": {}}
    json.dump(config, open(folder / "config.json", "w"))
    with pytest.raises(ValueError, match="text-only"):
        keras_lm.models.CausalLM.from_preset(str(folder))


def test_a_float_model_cannot_take_int8_weights(tmp_path):
    folder = tmp_path / "llama"
    shutil.copytree(os.path.join(FIXTURES, "llama"), folder)
    shutil.copy(os.path.join(FIXTURES, "llama_int8", "model.weights.h5"), folder)
    with pytest.raises(ValueError, match="model.weights.h5"):
        keras_lm.models.CausalLM.from_preset(str(folder))


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_keras_hub_weights_are_named(damage, tmp_path):
    folder = tmp_path / "llama"
    shutil.copytree(os.path.join(FIXTURES, "llama"), folder)
    weights = folder / "model.weights.h5"
    if damage == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    else:
        weights.unlink()
    with pytest.raises(ValueError, match="model.weights.h5"):
        keras_lm.models.CausalLM.from_preset(str(folder))


def test_presets_saved_by_version_0_1_still_load(tmp_path):
    """Before KerasHub's layout, presets held our own class names and Keras' weight paths."""
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, "gemma"))
    folder = tmp_path / "old"
    lm.save_to_preset(str(folder))
    for name in ("config.json", "task.json", "preprocessor.json", "tokenizer.json"):
        path = folder / name
        path.write_text(path.read_text().replace('"keras_hub>', '"keras_lm>'))
    os.remove(folder / "model.weights.h5")
    lm.backbone.save_weights(str(folder / "model.weights.h5"))  # Keras' own layout
    assert "layers/decoder_block" in "".join(h5_datasets(str(folder / "model.weights.h5")))
    assert_keras_hub_logits(keras_lm.models.CausalLM.from_preset(str(folder)), "gemma")


def test_a_users_own_decoder_class_saves_in_keras_layout(tmp_path):
    """A backbone class KerasHub does not have keeps Keras' own weight layout."""
    from dataclasses import dataclass

    from keras_lm.models.decoder import LLAMA_LAYOUT, DecoderBackbone, decoder_options

    @dataclass(frozen=True)
    class TinyArguments:
        vocabulary_size: int
        hidden_dim: int = 8

        def decoder_options(self):
            return decoder_options(LLAMA_LAYOUT, self.vocabulary_size, 1, 2, 1, self.hidden_dim,
                                   16, None)

    @keras.saving.register_keras_serializable(package="my_models")
    class TinyDecoder(DecoderBackbone):
        arguments = TinyArguments

    backbone = TinyDecoder(vocabulary_size=11)
    backbone.save_to_preset(str(tmp_path / "tiny"))
    keys = h5_datasets(str(tmp_path / "tiny" / "model.weights.h5"))
    assert any(key.startswith("layers/decoder_block/") for key in keys)  # Keras' own paths
    config = json.load(open(tmp_path / "tiny" / "config.json"))
    assert config["registered_name"] == "my_models>TinyDecoder"
    again = keras_lm.models.Backbone.from_preset(str(tmp_path / "tiny"))
    inputs = {"token_ids": np.array([[1, 2, 3]]), "padding_mask": np.ones((1, 3), bool)}
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(inputs)),
                               keras.ops.convert_to_numpy(backbone(inputs)), atol=1e-6)
