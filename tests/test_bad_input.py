"""A catalogue of bad inputs, per public entry point: each gets a clear `ValueError` or
`TypeError` that names the problem, raised before anything changes: afterwards the model's
weights are the same and it still generates the same text."""

import math

import keras
import numpy as np
import pytest
from families import tiny_gpt2_backbone

import keras_lm

NAN = float("nan")


@pytest.fixture(scope="module")
def lm(gpt2_tokenizer):
    keras.utils.set_random_seed(3)
    backbone = tiny_gpt2_backbone(gpt2_tokenizer.vocabulary_size())
    preprocessor = keras_lm.models.GPT2CausalLMPreprocessor(gpt2_tokenizer, sequence_length=16)
    model = keras_lm.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    model.compile(sampler="greedy")
    return model


@pytest.fixture(scope="module")
def baseline(lm):
    return lm.generate(["the quick", "keras is"], max_length=10)


def _weights(model):
    return [keras.ops.convert_to_numpy(v.value).copy() for v in model.backbone.weights]


def assert_unchanged(model, baseline, weights):
    for before, variable in zip(weights, model.backbone.weights, strict=True):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(variable.value))
    assert model.generate(["the quick", "keras is"], max_length=10) == baseline


def _ids(vocab_offset=0):
    return {"token_ids": np.array([[0, 5, 6 + vocab_offset]], "int32"),
            "padding_mask": np.ones((1, 3), bool)}


VOCAB = 421  # tiny_bpe_vocabulary size; checked below

GENERATE_CASES = [
    # (id, inputs, keyword arguments, error type, words the message must hold)
    ("max_length zero", "the", dict(max_length=0), ValueError, "max_length"),
    ("max_length string", "the", dict(max_length="10"), ValueError, "max_length"),
    ("max_new_tokens negative", "the", dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    ("max_length below prompt", "the quick brown fox", dict(max_length=2), ValueError,
     "max_length"),
    ("lone surrogate", "bad \ud800 text", {}, ValueError, "inputs"),
    ("invalid utf-8 bytes", [b"ok", b"\xff\xfe"], {}, ValueError, "UTF-8"),
    ("non-string item", ["ok", 3], {}, TypeError, "inputs"),
    ("empty batch", [], {}, ValueError, "at least one"),
    ("unsupported inputs", 3.5, {}, TypeError, "inputs"),
    ("logit_bias string key", "the", dict(logit_bias={"a": 1.0}), TypeError, "logit_bias"),
    ("logit_bias NaN", "the", dict(logit_bias={5: NAN}), ValueError, "logit_bias"),
    ("logit_bias id outside", "the", dict(logit_bias={10**6: 1.0}), ValueError, "vocabulary"),
    ("logit_bias not a dict", "the", dict(logit_bias=[1, 2]), TypeError, "logit_bias"),
    ("stop id outside", "the", dict(stop_token_ids=[10**6]), ValueError, "stop_token_ids"),
    ("stop id negative", "the", dict(stop_token_ids=[-3]), ValueError, "stop_token_ids"),
    ("stop ids word", "the", dict(stop_token_ids="end"), ValueError, "stop_token_ids"),
    ("stop ids float", "the", dict(stop_token_ids=[1.5]), TypeError, "stop_token_ids"),
    ("empty stop string", "the", dict(stop_strings=[""]), ValueError, "stop_strings"),
    ("min_p NaN", "the", dict(min_p=NAN), ValueError, "min_p"),
    ("min_p above one", "the", dict(min_p=2.0), ValueError, "min_p"),
    ("repetition_penalty zero", "the", dict(repetition_penalty=0.0), ValueError,
     "repetition_penalty"),
    ("repetition_penalty NaN", "the", dict(repetition_penalty=NAN), ValueError,
     "repetition_penalty"),
    ("frequency_penalty NaN", "the", dict(frequency_penalty=NAN), ValueError,
     "frequency_penalty"),
    ("presence_penalty string", "the", dict(presence_penalty="x"), TypeError,
     "presence_penalty"),
    ("processor not callable", "the", dict(logits_processors=[1]), TypeError,
     "logits_processors"),
    ("unknown sampler", "the", dict(sampler="nucleus"), ValueError, "sampler"),
    ("contrastive k above vocabulary", "the",
     dict(sampler=keras_lm.samplers.ContrastiveSampler(k=10**5)), ValueError, "vocabulary"),
    ("beams above vocabulary", "the",
     dict(sampler=keras_lm.samplers.BeamSampler(num_beams=10**5)), ValueError, "num_beams"),
    ("token ids outside", _ids(10**6), {}, ValueError, "token_ids"),
    ("token ids negative", {"token_ids": np.array([[0, -1]]), "padding_mask": np.ones((1, 2))},
     {}, ValueError, "token_ids"),
    ("token ids float", {"token_ids": np.array([[0.5, 1.0]]), "padding_mask": np.ones((1, 2))},
     {}, ValueError, "token_ids"),
    ("mask of another shape", {"token_ids": np.array([[0, 5, 6]]),
                               "padding_mask": np.ones((1, 2))}, {}, ValueError, "padding_mask"),
    ("empty row", {"token_ids": np.array([[0, 5]]), "padding_mask": np.zeros((1, 2))}, {},
     ValueError, "at least one token"),
    ("no token_ids", {"ids": np.array([[0]])}, {}, ValueError, "token_ids"),
]


def test_the_catalogue_uses_the_real_vocabulary(lm):
    assert lm.backbone.vocabulary_size == VOCAB


@pytest.mark.tensorflow
@pytest.mark.parametrize("case", GENERATE_CASES, ids=[c[0] for c in GENERATE_CASES])
def test_generate_rejects(lm, baseline, case):
    _, inputs, kwargs, error, words = case
    weights = _weights(lm)
    with pytest.raises(error, match=words):
        lm.generate(inputs, **kwargs)
    assert_unchanged(lm, baseline, weights)


SAMPLER_CASES = [
    (lambda: keras_lm.samplers.TopKSampler(temperature=NAN), ValueError, "temperature"),
    (lambda: keras_lm.samplers.TopKSampler(temperature=-1.0), ValueError, "temperature"),
    (lambda: keras_lm.samplers.RandomSampler(temperature=math.inf), ValueError, "temperature"),
    (lambda: keras_lm.samplers.TopKSampler(temperature="hot"), TypeError, "temperature"),
    (lambda: keras_lm.samplers.TopKSampler(k=0), ValueError, "`k`"),
    (lambda: keras_lm.samplers.TopKSampler(k=2.5), ValueError, "`k`"),
    (lambda: keras_lm.samplers.TopPSampler(p=1.5), ValueError, "`p`"),
    (lambda: keras_lm.samplers.TopPSampler(p=NAN), ValueError, "`p`"),
    (lambda: keras_lm.samplers.TopPSampler(p=0.5, k=-1), ValueError, "`k`"),
    (lambda: keras_lm.samplers.BeamSampler(num_beams=0), ValueError, "num_beams"),
    (lambda: keras_lm.samplers.ContrastiveSampler(alpha=2.0), ValueError, "alpha"),
    (lambda: keras_lm.samplers.ContrastiveSampler(alpha=NAN), ValueError, "alpha"),
    (lambda: keras_lm.samplers.get(42), TypeError, "sampler"),
]


@pytest.mark.parametrize("case", SAMPLER_CASES, ids=range(len(SAMPLER_CASES)))
def test_samplers_reject(case):
    make, error, words = case
    with pytest.raises(error, match=words):
        make()


def test_compile_with_a_bad_sampler_keeps_the_old_one(lm, baseline):
    weights = _weights(lm)
    old = lm.sampler
    with pytest.raises(ValueError, match="sampler"):
        lm.compile(sampler="nucleus")
    assert lm.sampler is old
    assert_unchanged(lm, baseline, weights)


TRAINING_CASES = [
    ("bare array", np.arange(10), TypeError, "dict with `token_ids`"),
    ("empty list", [], ValueError, "empty"),
    ("ids outside", {"token_ids": np.array([[0, 10**6]]), "padding_mask": np.ones((1, 2))},
     ValueError, "outside the vocabulary"),
    ("mask of another shape", {"token_ids": np.array([[0, 5]]), "padding_mask": np.ones((1, 3))},
     ValueError, "padding_mask"),
    ("1-D ids", {"token_ids": np.array([0, 5]), "padding_mask": np.ones(2)}, ValueError,
     "2-D"),
    ("lone surrogate", ["fine", "bad \udc80"], ValueError, "UTF-8|Unicode"),
]


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
@pytest.mark.parametrize("case", TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES])
def test_training_entry_points_reject(lm, baseline, method, case):
    _, x, error, words = case
    weights = _weights(lm)
    with pytest.raises(error, match=words):
        getattr(lm, method)(x, verbose=0)
    assert_unchanged(lm, baseline, weights)
    if method == "fit":  # a failed call leaves training usable
        lm.fit(["the quick brown fox"], epochs=1, verbose=0)
        lm.backbone.set_weights(weights)


def test_fit_with_a_dict_needs_labels(lm, baseline):
    with pytest.raises(ValueError, match="`y` is missing"):
        lm.fit(_ids(), verbose=0)
    assert_unchanged(lm, baseline, _weights(lm))


SCORE_CASES = [
    (dict(token_ids=np.array([[0, 10**6]])), ValueError, "token_ids"),
    (dict(token_ids=np.array([0, 5])), ValueError, "2-D"),
    (dict(token_ids=np.array([[0, 5]]), scoring_mode="probs"), ValueError, "scoring_mode"),
    (dict(token_ids=np.array([[0, 5]]), scoring_mode="loss"), ValueError, "target_ids"),
    (dict(token_ids=np.array([[0, 5]]), scoring_mode="loss", target_ids=np.array([[5, -2]])),
     ValueError, "target_ids"),
]


@pytest.mark.parametrize("case", SCORE_CASES, ids=range(len(SCORE_CASES)))
def test_score_rejects(lm, baseline, case):
    kwargs, error, words = case
    weights = _weights(lm)
    with pytest.raises(error, match=words):
        lm.score(**kwargs)
    assert_unchanged(lm, baseline, weights)


def test_a_tokenizer_larger_than_the_model_is_refused(gpt2_tokenizer):
    backbone = tiny_gpt2_backbone(gpt2_tokenizer.vocabulary_size() - 1)
    preprocessor = keras_lm.models.GPT2CausalLMPreprocessor(gpt2_tokenizer)
    with pytest.raises(ValueError, match="tokenizer has 421 tokens"):
        keras_lm.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


def test_a_smaller_tokenizer_never_sees_ids_it_cannot_decode(gpt2_tokenizer):
    keras.utils.set_random_seed(0)
    size = gpt2_tokenizer.vocabulary_size()
    backbone = tiny_gpt2_backbone(size + 64)  # padded like real checkpoints
    favour_padding = {size + 5: 100.0}  # would make a padding id the certain next token
    bare = keras_lm.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    bare.compile(sampler="greedy")
    raw = bare.generate(_ids(), max_new_tokens=4, stop_token_ids=None, logit_bias=favour_padding)
    assert (raw["token_ids"][0, 3:] == size + 5).all()
    preprocessor = keras_lm.models.GPT2CausalLMPreprocessor(gpt2_tokenizer, sequence_length=16)
    lm = keras_lm.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    lm.compile(sampler="greedy")
    out = lm.generate(_ids(), max_new_tokens=4, stop_token_ids=None, logit_bias=favour_padding)
    assert (out["token_ids"][0, 3:] < size).all()
    text = lm.generate("the quick", max_new_tokens=4, stop_token_ids=None,
                       logit_bias=favour_padding, strip_prompt=True)
    assert text  # real tokens, so real text


@pytest.mark.parametrize("make", [
    lambda b: tiny_gpt2_backbone(100, num_heads=3),  # 16 is not a multiple of 3
    lambda b: tiny_gpt2_backbone(-5),
    lambda b: tiny_gpt2_backbone(100, num_layers=0),
    lambda b: tiny_gpt2_backbone(100, max_sequence_length=0),
    lambda b: keras_lm.models.LlamaBackbone(vocabulary_size=50, num_layers=1, num_query_heads=4,
                                           num_key_value_heads=3, hidden_dim=16,
                                           intermediate_dim=32),
], ids=["heads do not divide width", "negative vocabulary", "no layers", "no positions",
        "kv heads do not divide query heads"])
def test_backbone_arguments_are_checked(make):
    with pytest.raises(ValueError, match="must"):
        make(None)


# -- loading: every bad file is named ---------------------------------------------------------
def _json_edit(path, edit):
    import json

    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    data = edit(data) or data
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _drop_key(key):
    return lambda data: data.pop(key) and None


def _set(key, value):
    return lambda data: data.__setitem__(key, value)


def _native_config(key, value):
    return lambda data: data["config"].__setitem__(key, value)


def _write_nan_weights(folder):
    import h5py

    with h5py.File(os.path.join(folder, "model.weights.h5"), "r+") as f:
        dataset = f["layers/reversible_embedding/vars/0"]
        values = dataset[...]
        values[3, 1] = np.nan
        dataset[...] = values


def _nan_safetensors(folder):
    from keras_lm.presets.safetensors_io import SafetensorsFile, save_file

    file = SafetensorsFile(os.path.join(folder, "model.safetensors"))
    tensors = {k: np.array(file.get(k)) for k in file.keys()}
    tensors["transformer.h.0.ln_1.weight"][0] = np.inf
    save_file(tensors, os.path.join(folder, "model.safetensors"))


def _list_header(folder):
    import struct

    body = b"[1, 2, 3]"
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(body)) + body)


def _index_without_weight_map(folder):
    os.rename(os.path.join(folder, "model.safetensors"),
              os.path.join(folder, "model-00001-of-00001.safetensors"))
    _write(os.path.join(folder, "model.safetensors.index.json"), '{"metadata": {}}')


import os  # noqa: E402

NATIVE_CASES = [
    # (id, change to a copy of the native preset, error words)
    ("config missing a key", lambda d: _json_edit(f"{d}/config.json",
                                                  lambda c: c["config"].pop("hidden_dim") and None),
     r"config.json.*lacks \['hidden_dim'\]"),
    ("config heads do not divide", lambda d: _json_edit(f"{d}/config.json",
                                                        _native_config("num_heads", 3)),
     "config.json.*divisible"),
    ("config negative size", lambda d: _json_edit(f"{d}/config.json",
                                                  _native_config("intermediate_dim", -4)),
     "config.json.*intermediate_dim"),
    ("config is a list", lambda d: _write(f"{d}/config.json", "[1, 2]"),
     "config.json must hold a JSON object"),
    ("fewer layers than the weights", lambda d: _json_edit(f"{d}/config.json",
                                                           _native_config("num_layers", 1)),
     "model.weights.h5 holds weights this model has no place for"),
    ("NaN weights", _write_nan_weights, "model.weights.h5.*NaN.*token_embedding"),
    ("tokenizer.json not JSON", lambda d: _write(f"{d}/tokenizer.json", "{oops"),
     "tokenizer.json"),
    ("vocabulary not JSON", lambda d: _write(f"{d}/assets/tokenizer/vocabulary.json", "nope"),
     "vocabulary.json"),
    ("vocabulary larger than the model", lambda d: _json_edit(
        f"{d}/assets/tokenizer/vocabulary.json", lambda v: v.__setitem__("extra", len(v))),
     "tokenizer has 422 tokens"),
]


@pytest.mark.parametrize("case", NATIVE_CASES, ids=[c[0] for c in NATIVE_CASES])
def test_native_preset_problems_are_named(gpt2_preset, tmp_path, case):
    import shutil

    _, change, words = case
    folder = str(tmp_path / "preset")
    shutil.copytree(gpt2_preset, folder)
    change(folder)
    before = {n: open(os.path.join(r, n), "rb").read()
              for r, _, files in os.walk(folder) for n in files}
    with pytest.raises(ValueError, match=words):
        keras_lm.models.CausalLM.from_preset(folder)
    after = {n: open(os.path.join(r, n), "rb").read()
             for r, _, files in os.walk(folder) for n in files}
    assert after == before  # loading reads, never writes


HF_CASES = [
    ("config missing a key", lambda d: _json_edit(f"{d}/config.json", _drop_key("n_embd")),
     "config.json lacks the key 'n_embd'"),
    ("heads do not divide the width", lambda d: _json_edit(f"{d}/config.json", _set("n_head", 5)),
     "config.json.*divisible"),
    ("negative layer count", lambda d: _json_edit(f"{d}/config.json", _set("n_layer", -1)),
     "config.json.*num_layers"),
    ("safetensors header is a list", _list_header, "model.safetensors.*JSON object"),
    ("index without weight_map", _index_without_weight_map,
     r"index.json lacks the key\(s\) \['weight_map'\]"),
    ("vocab.json not JSON", lambda d: _write(f"{d}/vocab.json", "not json"), "vocab.json"),
    ("infinite weights", _nan_safetensors, "transformer.h.0.ln_1.weight.*NaN or infinite"),
]


@pytest.mark.parametrize("case", HF_CASES, ids=[c[0] for c in HF_CASES])
def test_hugging_face_problems_are_named(hf_gpt2, tmp_path, case):
    import shutil

    _, change, words = case
    folder = str(tmp_path / "hf")
    shutil.copytree(hf_gpt2[0], folder)
    change(folder)
    with pytest.raises(ValueError, match=words):
        keras_lm.models.CausalLM.from_preset(folder)


def test_a_tokenizer_json_that_is_not_json_is_named(hf_gpt2, tmp_path):
    import shutil

    folder = str(tmp_path / "hf")
    shutil.copytree(hf_gpt2[0], folder)
    os.remove(os.path.join(folder, "vocab.json"))
    _write(os.path.join(folder, "tokenizer.json"), "{broken")
    with pytest.raises(ValueError, match="tokenizer.json"):
        keras_lm.models.CausalLM.from_preset(folder)


def test_detokenize_rejects_ids_outside_the_vocabulary(gpt2_tokenizer):
    with pytest.raises(ValueError, match="token id 421, outside the vocabulary"):
        gpt2_tokenizer.detokenize([5, 421])
    with pytest.raises(ValueError, match="token id -1"):
        gpt2_tokenizer.detokenize([[5, -1]])
    assert gpt2_tokenizer.detokenize([5, 6]) == gpt2_tokenizer.detokenize(np.array([5, 6]))


def test_finiteness_check_of_loaded_tensors():
    import ml_dtypes

    from keras_lm.presets.conversion import _all_finite

    big = np.full(1000, 3e38, np.float32)  # finite values whose sum overflows
    assert _all_finite(big) and _all_finite(np.full(100, 60000, np.float16))
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones((4, 5), np.float32)
        x[2, 3] = bad
        assert not _all_finite(x)
        assert not _all_finite(x.astype(ml_dtypes.bfloat16))
        big[7] = bad
        assert not _all_finite(big)
        big[7] = 3e38
    assert _all_finite(np.arange(10))
