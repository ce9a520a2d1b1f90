"""`export_to_transformers`: ours -> Hugging Face folder -> `transformers` gives our logits and
token ids, for every family (the models are the KerasHub fixtures: random weights in every
tensor, each family's tokenizer), and the folder loads back into ours."""

import json
import os

import keras
import numpy as np
import pytest

import keras_lm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "keras_hub")
FAMILIES = ["gpt2", "opt", "llama", "llama3", "mistral", "gemma", "gemma3", "qwen", "qwen3"]
ADDS_START = {"opt", "llama", "llama3", "mistral", "gemma", "gemma3"}


def our_logits(lm, ids):
    return keras.ops.convert_to_numpy(
        lm({"token_ids": ids, "padding_mask": np.ones_like(ids, dtype=bool)}))


def their_logits(folder, ids):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor(ids.astype("int64"))).logits.numpy()


@pytest.mark.parametrize("name", FAMILIES)
def test_export_round_trips_through_transformers(name, tmp_path):
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, name))
    folder = str(tmp_path / "hf")
    lm.export_to_transformers(folder)
    ids = np.load(os.path.join(FIXTURES, f"{name}.npz"))["token_ids"][:, :6]
    ours = our_logits(lm, ids)
    np.testing.assert_allclose(their_logits(folder, ids), ours, atol=1e-4, rtol=1e-4)

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    start = [lm.preprocessor.tokenizer.start_token_id] if name in ADDS_START else []
    texts = json.load(open(os.path.join(FIXTURES, f"{name}.json")))["texts"]
    for text in texts + ["keras  is\n\na library", "where are you going"]:
        mine = np.asarray(lm.preprocessor.tokenizer(text)).tolist()
        assert tokenizer(text)["input_ids"] == start + mine, text

    back = keras_lm.models.CausalLM.from_preset(folder)  # and the import map reads it back
    np.testing.assert_allclose(our_logits(back, ids), ours, atol=1e-5, rtol=1e-5)


def test_export_merges_lora_and_writes_stop_ids(tmp_path):
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, "llama3"))
    lm.backbone.enable_lora(2)
    rng = np.random.default_rng(0)
    for variable in lm.backbone.lora_variables():
        variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))
    folder = str(tmp_path / "hf")
    lm.export_to_transformers(folder)
    ids = np.arange(4, 10)[None]
    np.testing.assert_allclose(their_logits(folder, ids), our_logits(lm, ids), atol=1e-4)
    generation = json.load(open(os.path.join(folder, "generation_config.json")))
    end = lm.preprocessor.tokenizer.end_token_id
    eos = generation["eos_token_id"]
    assert end in (eos if isinstance(eos, list) else [eos])


def test_export_refuses_quantized_models_and_used_folders(tmp_path):
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, "gpt2_int8"))
    with pytest.raises(ValueError, match="quantized"):
        lm.export_to_transformers(str(tmp_path / "q"))
    assert not os.path.exists(tmp_path / "q")
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    float_lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, "gpt2"))
    with pytest.raises(ValueError, match="new or empty folder"):
        float_lm.export_to_transformers(str(used))
    assert os.listdir(used) == ["notes.txt"]


def test_tokenizer_and_backbone_export_alone(tmp_path):
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, "qwen"))
    lm.preprocessor.tokenizer.export_to_transformers(str(tmp_path / "tok"))
    assert sorted(os.listdir(tmp_path / "tok")) == ["tokenizer.json", "tokenizer_config.json"]
    lm.backbone.export_to_transformers(str(tmp_path / "body"))
    assert sorted(os.listdir(tmp_path / "body")) == ["config.json", "generation_config.json",
                                                    "model.safetensors"]
    ids = np.arange(3, 9)[None]
    np.testing.assert_allclose(their_logits(str(tmp_path / "body"), ids), our_logits(lm, ids),
                               atol=1e-4)


def test_sharded_bfloat16_checkpoints_from_transformers_load(tmp_path):
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, "qwen3"))
    lm.export_to_transformers(str(tmp_path / "hf"))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"),
                                                              dtype=torch.bfloat16)
    model.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
    transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf")).save_pretrained(
        str(tmp_path / "sharded"))
    assert os.path.isfile(tmp_path / "sharded" / "model.safetensors.index.json")
    back = keras_lm.models.CausalLM.from_preset(str(tmp_path / "sharded"))
    ids = np.arange(3, 9)[None]
    with torch.no_grad():
        theirs = model.float()(torch.tensor(ids)).logits.numpy()  # bf16 weights, fp32 math
    np.testing.assert_allclose(our_logits(back, ids), theirs, atol=1e-4, rtol=1e-4)


def test_pickle_weights_are_refused_without_unpickling(tmp_path):
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, "llama"))
    folder = tmp_path / "hf"
    lm.export_to_transformers(str(folder))
    os.remove(folder / "model.safetensors")
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle; never opened")
    with pytest.raises(ValueError, match="pytorch_model.bin.*never loads"):
        keras_lm.models.CausalLM.from_preset(str(folder))
