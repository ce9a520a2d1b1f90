"""Preset loading and saving: class inference, handles, and clear errors on bad input."""

import os

import numpy as np
import pytest

import keras_lm
from keras_lm.presets.resolve import PresetUnavailableError


def test_every_class_loads_from_a_preset(gpt2_preset):
    lm = keras_lm.models.CausalLM.from_preset(gpt2_preset)
    assert isinstance(lm, keras_lm.models.GPT2CausalLM)
    assert isinstance(keras_lm.models.Backbone.from_preset(gpt2_preset),
                      keras_lm.models.GPT2Backbone)
    assert isinstance(keras_lm.models.Tokenizer.from_preset(gpt2_preset),
                      keras_lm.models.GPT2Tokenizer)
    pre = keras_lm.models.Preprocessor.from_preset(gpt2_preset)
    assert isinstance(pre, keras_lm.models.GPT2CausalLMPreprocessor)
    assert pre.sequence_length == 64
    assert isinstance(keras_lm.models.GPT2CausalLMPreprocessor.from_preset(
        gpt2_preset, sequence_length=8), keras_lm.models.GPT2CausalLMPreprocessor)
    assert keras_lm.tokenizers.Tokenizer.from_preset(gpt2_preset)("the").tolist()


def test_load_weights_false_gives_fresh_weights(gpt2_preset):
    trained = keras_lm.models.GPT2Backbone.from_preset(gpt2_preset)
    fresh = keras_lm.models.GPT2Backbone.from_preset(gpt2_preset, load_weights=False)
    assert not np.allclose(trained.get_weights()[0], fresh.get_weights()[0])


@pytest.mark.parametrize("source", ["native", "hugging_face"])
def test_from_preset_builds_without_random_draws(source, gpt2_preset, hf_gpt2, monkeypatch):
    """The variables a checkpoint is about to fill are not drawn at random first (for a
    270M model that cost seconds and a buffer larger than the weights)."""
    import keras

    from keras_lm.presets import loader

    path = gpt2_preset if source == "native" else hf_gpt2[0]
    reader_cls = type(loader.reader_for(path))
    load = reader_cls.load_weights
    varied_before_loading = []

    def spy(reader, backbone):
        varied_before_loading.extend(
            v.path for v in backbone.weights
            if np.unique(keras.ops.convert_to_numpy(v.value)).size > 1)
        load(reader, backbone)

    monkeypatch.setattr(reader_cls, "load_weights", spy)
    lm = keras_lm.models.CausalLM.from_preset(path)
    assert varied_before_loading == []
    embedding = keras.ops.convert_to_numpy(lm.backbone.token_embedding.embeddings)
    assert np.unique(embedding).size > embedding.size // 2  # loaded, not left at zero


def test_presets_lists_builtin_names():
    names = keras_lm.models.GPT2CausalLM.presets.keys()
    assert "gpt2_base_en" in names
    assert "gpt2_base_en" in keras_lm.models.CausalLM.presets


def test_builtin_name_offline_gives_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "kagglehub", None)
    with pytest.raises(PresetUnavailableError, match="gpt2_base_en"):
        keras_lm.models.CausalLM.from_preset("gpt2_base_en")


def test_hf_handle_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="hf://someone/missing-model"):
        keras_lm.models.CausalLM.from_preset("hf://someone/missing-model")


def test_missing_path_and_unknown_name():
    with pytest.raises(ValueError, match="does not exist"):
        keras_lm.models.CausalLM.from_preset("./no/such/preset")
    with pytest.raises(ValueError, match="Unknown preset"):
        keras_lm.models.CausalLM.from_preset("gpt7_base_en")


def copy_preset(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def test_missing_and_corrupt_files_are_named(gpt2_preset, tmp_path):
    broken = copy_preset(gpt2_preset, tmp_path / "a")
    os.remove(os.path.join(broken, "model.weights.h5"))
    with pytest.raises(ValueError, match="model.weights.h5"):
        keras_lm.models.CausalLM.from_preset(broken)
    corrupt = copy_preset(gpt2_preset, tmp_path / "b")
    with open(os.path.join(corrupt, "model.weights.h5"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        keras_lm.models.CausalLM.from_preset(corrupt)
    bad_json = copy_preset(gpt2_preset, tmp_path / "c")
    with open(os.path.join(bad_json, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="config.json"):
        keras_lm.models.CausalLM.from_preset(bad_json)
    # The tokenizer asset is required whenever the preset has a tokenizer.
    no_vocab = copy_preset(gpt2_preset, tmp_path / "d")
    os.remove(os.path.join(no_vocab, "assets", "tokenizer", "vocabulary.json"))
    with pytest.raises(ValueError, match="vocabulary"):
        keras_lm.models.CausalLM.from_preset(no_vocab)


def test_wrong_family_class_is_rejected(gpt2_preset):
    class OtherBackbone(keras_lm.models.Backbone):
        pass

    class OtherCausalLM(keras_lm.models.CausalLM):
        backbone_cls = OtherBackbone

    with pytest.raises(ValueError, match="GPT2Backbone"):
        OtherCausalLM.from_preset(gpt2_preset)


def test_failed_save_leaves_no_partial_folder(gpt2_lm, tmp_path, monkeypatch):
    target = tmp_path / "out"

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("keras_lm.presets.native.save_keras_hub_weights", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        gpt2_lm.save_to_preset(str(target))
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_the_previous_preset(gpt2_lm, tmp_path, monkeypatch):
    target = tmp_path / "out"
    gpt2_lm.save_to_preset(str(target))
    before = sorted(os.listdir(target))
    monkeypatch.setattr("keras_lm.presets.native.save_keras_hub_weights",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        gpt2_lm.save_to_preset(str(target))
    assert sorted(os.listdir(target)) == before
    assert keras_lm.models.CausalLM.from_preset(str(target)) is not None


def test_hf_checkpoint_with_unknown_architecture_key_fails(tmp_path, bpe_assets):
    import json

    from tests.conftest import save_hf_gpt2

    vocab, merges = bpe_assets
    save_hf_gpt2(tmp_path, vocab, merges, scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        keras_lm.models.CausalLM.from_preset(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "bert"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        keras_lm.models.CausalLM.from_preset(str(tmp_path))


def test_hf_checkpoint_with_extra_tensor_fails(tmp_path, hf_gpt2):
    import shutil

    from keras_lm.presets.safetensors_io import SafetensorsFile, save_file

    path, _ = hf_gpt2
    shutil.copytree(path, tmp_path / "m")
    file = SafetensorsFile(str(tmp_path / "m" / "model.safetensors"))
    tensors = {k: np.array(file.get(k)) for k in file.keys()}
    tensors["transformer.extra.weight"] = np.zeros((2,), np.float32)
    save_file(tensors, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ValueError, match="not used"):
        keras_lm.models.CausalLM.from_preset(str(tmp_path / "m"))
