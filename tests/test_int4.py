"""int4 weights: Keras' layouts on every layer (the head included), presets that reload, LoRA on
a quantized base, and the backend's 4-bit kernel against Keras' own int4 path."""

import warnings

import keras
import numpy as np
import pytest

import keras_lm
from keras_lm.backend import ops as fast_ops

GROUPED = keras.quantizers.Int4QuantizationConfig(block_size=32)
PER_ROW = keras.quantizers.Int4QuantizationConfig(block_size=-1)


def _quantize(model, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns for layers without weights to quantize
        model.quantize("int4", config=config)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("config", [GROUPED, PER_ROW], ids=["grouped", "per_row"])
def test_head_and_table_match_keras_reversible_embedding(tie, config):
    """Keras' own `ReversibleEmbedding` quantized the same way is the reference for the
    embedding lookup and the logits."""
    rng = np.random.default_rng(0)
    ours = keras_lm.layers.ReversibleEmbedding(304, 64, tie_weights=tie)
    theirs = keras.layers.ReversibleEmbedding(304, 64, tie_weights=tie)
    for layer in (ours, theirs):
        layer.build()
    for a, b in zip(ours.weights, theirs.weights, strict=True):
        value = rng.normal(size=a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    ids = np.array([[0, 5, 303, 17]]) if config is PER_ROW else np.arange(304)[None]
    hidden = rng.normal(size=(2, 3, 64)).astype("float32")
    float_rows = keras.ops.convert_to_numpy(ours(ids))
    float_logits = keras.ops.convert_to_numpy(ours(hidden, reverse=True))
    for layer in (ours, theirs):
        layer.quantize("int4", type_check=False, config=config)
    rows = keras.ops.convert_to_numpy(ours(ids))
    expected = keras.ops.convert_to_numpy(theirs(hidden, reverse=True))
    logits = keras.ops.convert_to_numpy(ours(hidden, reverse=True))
    if config is PER_ROW:  # Keras' own rounding: the same numbers
        np.testing.assert_allclose(rows, keras.ops.convert_to_numpy(theirs(ids)), rtol=1e-5,
                                   atol=1e-5)
        # Keras' head quantizes the hidden states to int8 first; ours keeps them in float.
        assert np.abs(logits - expected).max() < 0.02 * np.abs(expected).max()
        return
    # Groups: our least-squares fit in Keras' layout, closer to the float weights than Keras'
    # min/max groups with integer zero points.
    def rms(a):
        return float(np.sqrt(np.mean(np.square(a))))

    keras_rows = keras.ops.convert_to_numpy(theirs(ids))
    assert rms(rows - float_rows) < 0.95 * rms(keras_rows - float_rows)
    assert rms(rows - float_rows) < 0.1 * rms(float_rows)
    assert rms(logits - float_logits) < rms(expected - float_logits)
    assert rms(logits - float_logits) < 0.1 * rms(float_logits)


def _llama(seed, tie, vocab=304, hidden=64):
    keras.utils.set_random_seed(seed)
    backbone = keras_lm.models.LlamaBackbone(
        vocabulary_size=vocab, num_layers=2, num_query_heads=4, hidden_dim=hidden,
        intermediate_dim=96, num_key_value_heads=2, tie_word_embeddings=tie)
    lm = keras_lm.models.LlamaCausalLM(backbone=backbone)
    if not tie:  # a separate head starts near zero; give its logits a real spread
        head = backbone.token_embedding.reverse_embeddings
        head.assign(keras.random.normal(head.shape, stddev=0.5, seed=seed))
    return lm


@pytest.mark.tensorflow
@pytest.mark.parametrize("tie", [True, False])
def test_int4_keeps_scores_close_and_reloads_from_a_preset(tie, tmp_path):
    lm = _llama(1, tie)
    ids = np.array([[1, 5, 6, 7, 8, 250]], dtype="int32")
    before = keras.ops.convert_to_numpy(lm.score(ids))
    _quantize(lm, GROUPED)
    dtypes = {v.path: keras.backend.standardize_dtype(v.dtype) for v in lm.backbone.variables}
    head = "embeddings" if tie else "reverse_embeddings"
    assert dtypes[f"token_embedding/{head}"] == "int8"  # two int4 values a byte
    assert dtypes["transformer_layer_0/attention/query/kernel"] == "int8"
    shapes = {v.path: tuple(v.shape) for v in lm.backbone.variables}
    assert shapes["transformer_layer_0/feedforward/gate/kernel"] == (64, 48)  # packed
    after = keras.ops.convert_to_numpy(lm.score(ids))
    assert not np.array_equal(after, before)
    assert np.corrcoef(after.ravel(), before.ravel())[0, 1] > 0.97  # 4 bits, random weights

    lm.save_to_preset(str(tmp_path / "int4"))
    restored = keras_lm.models.CausalLM.from_preset(str(tmp_path / "int4"))
    layer = restored.backbone.get_layer("transformer_layer_0").attention.query
    assert layer.quantization_mode == "int4" and tuple(layer.kernel_scale.shape) == (2, 64)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored.score(ids)), after,
                               atol=1e-5)


NEW_TOKENS = 6


def _greedy(lm, prompts):
    ids = np.zeros((len(prompts), 8), dtype="int32")
    mask = np.zeros_like(ids, dtype=bool)
    for i, prompt in enumerate(prompts):
        ids[i, : len(prompt)], mask[i, : len(prompt)] = prompt, True
    out, log_probs = lm.generate({"token_ids": ids, "padding_mask": mask},
                                 max_new_tokens=NEW_TOKENS, stop_token_ids=None,
                                 sampler="greedy", return_log_probs=True)
    return np.asarray(out["token_ids"]), np.asarray(log_probs)


@pytest.mark.skipif(fast_ops.int4_projection is None, reason="no fast int4 path on this backend")
@pytest.mark.parametrize("tie,config", [(True, GROUPED), (False, GROUPED), (False, PER_ROW)],
                         ids=["tied_grouped", "untied_grouped", "untied_per_row"])
@pytest.mark.parametrize("kernel", ["int4", "int8"])
def test_fast_int4_generation_matches_keras_int4_path(tie, config, kernel, monkeypatch):
    """The backend's fast int4 paths give the tokens of Keras' int4 path, on a model whose
    greedy choices are clearer than their rounding: torch's 4-bit kernel (bfloat16
    activations, float32 sums) and int8 products on a copy requantized to int8 (int8
    activations: FBGEMM on torch, the only path on JAX)."""
    if kernel == "int4" and keras.backend.backend() != "torch":
        pytest.skip("the 4-bit kernel is torch's")
    monkeypatch.setenv("KERAS_LM_INT4_KERNEL", kernel)
    lm = _llama(2, tie)
    _quantize(lm, config)
    prompts = [[1, 5, 9, 200], [1, 7]]
    fast_path = fast_ops.int4_projection
    calls = []
    monkeypatch.setattr(fast_ops, "int4_projection",
                        lambda *a: calls.append(1) or fast_path(*a))
    fast = _greedy(lm, prompts), _greedy(lm, prompts[:1])
    assert calls, "generation did not run the fast path"
    monkeypatch.setattr(fast_ops, "int4_projection", None)
    keras_path = _greedy(lm, prompts), _greedy(lm, prompts[:1])
    if kernel == "int8" and keras.backend.backend() == "torch":
        # FBGEMM's int8 activations move logits by ~1% of their scale: more than this random
        # model's closest greedy choices, so compare its logits along Keras' tokens instead.
        import torch

        ids = keras_path[0][0][:1, : 4 + NEW_TOKENS].astype("int32")
        expected = _log_softmax(lm.score(ids))
        counted = len(calls)
        monkeypatch.setattr(fast_ops, "int4_projection",
                            lambda *a: calls.append(1) or fast_path(*a))
        with torch.no_grad():
            probabilities = np.exp(_log_softmax(lm.score(ids)))
        assert len(calls) > counted, "scoring did not run the fast path"
        np.testing.assert_allclose(probabilities, np.exp(expected), atol=0.05)
        return
    # bfloat16 activations on torch; int8 activations and weights rounded to int8 on JAX.
    tolerance = 0.05 if kernel == "int4" else 0.15
    for (tokens, log_probs), (expected_tokens, expected) in zip(fast, keras_path, strict=True):
        np.testing.assert_array_equal(tokens, expected_tokens)
        np.testing.assert_allclose(log_probs, expected, atol=tolerance, rtol=0)


def _log_softmax(logits):
    logits = keras.ops.convert_to_numpy(logits).astype("float64")
    logits -= logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


@pytest.mark.tensorflow
def test_lora_on_an_int4_base_trains_only_the_adapters():
    lm = _llama(3, tie=True)
    _quantize(lm, GROUPED)
    frozen = {v.path: keras.ops.convert_to_numpy(v).copy() for v in lm.backbone.weights}
    lm.backbone.enable_lora(rank=2)
    ids = np.array([[1, 5, 6, 7, 8, 9, 10, 11]] * 2, dtype="int32")
    before = keras.ops.convert_to_numpy(lm.score(ids))
    lm.compile(optimizer=keras.optimizers.Adam(1e-2), sampler="greedy")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, dtype=bool)}
    history = lm.fit(x, np.roll(ids, -1, axis=1), batch_size=2, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for variable in lm.backbone.weights:
        if "lora" not in variable.path:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable),
                                          frozen[variable.path])
    assert not np.allclose(keras.ops.convert_to_numpy(lm.score(ids)), before)
    # Generation decodes on the quantized base with its adapters (every backend's path).
    tokens, _ = _greedy(lm, [[1, 5, 9]])
    sequence = tokens[:, : 3 + NEW_TOKENS]
    step = {"token_ids": sequence[:, :-1], "padding_mask": np.ones_like(sequence[:, :-1], bool)}
    expected = np.argmax(keras.ops.convert_to_numpy(lm(step))[0, 2:], axis=-1)
    np.testing.assert_array_equal(sequence[0, 3:], expected)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's int4 kernels")
def test_torch_int4_kernel_is_chosen_by_cpu_not_by_timing(monkeypatch):
    """Every layer takes the same kernel, the CPU's, so one model gives the same greedy text
    in every process (timing once picked kernels per layer, and runs differed)."""
    from keras_lm.backend import torch_kernels

    monkeypatch.delenv("KERAS_LM_INT4_KERNEL", raising=False)
    lm = _llama(4, False)
    _quantize(lm, GROUPED)
    tokens = _greedy(lm, [[1, 5, 9, 200]])[0]
    layers = [layer for layer in lm.backbone._flatten_layers()
              if layer.quantization_mode == "int4"]
    as_int8 = {layer in torch_kernels._int4_as_int8 for layer in layers}
    assert as_int8 == {torch_kernels._DEFAULT_INT4_KERNEL == "int8"}
    again = _llama(4, False)
    _quantize(again, GROUPED)
    np.testing.assert_array_equal(_greedy(again, [[1, 5, 9, 200]])[0], tokens)
