"""LoRA adapters and reduced-precision dtypes."""

import keras
import numpy as np
import pytest

import keras_lm


def test_enable_lora_trains_only_adapters(gpt2_lm):
    backbone = gpt2_lm.backbone
    backbone.enable_lora(rank=2)
    trainable = [v.path for v in backbone.trainable_variables]
    assert trainable and all("lora_kernel" in p for p in trainable)
    assert {p.split("/")[-2] for p in trainable} == {"query", "value"}
    before = [v.numpy().copy() for v in _base_vars(backbone)]
    gpt2_lm.compile(optimizer=keras.optimizers.Adam(1e-2))
    gpt2_lm.fit(["the quick brown fox", "i forgot my homework"], batch_size=2, epochs=2,
                verbose=0)
    after = [v.numpy() for v in _base_vars(backbone)]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(b, a)


def test_custom_lora_targets_and_bad_rank(gpt2_lm):
    with pytest.raises(ValueError, match="rank"):
        gpt2_lm.backbone.enable_lora(rank=0)
    gpt2_lm.backbone.enable_lora(rank=2, target_layer_names=["key"])
    assert {v.path.split("/")[-2] for v in gpt2_lm.backbone.lora_variables()} == {"key"}


def test_save_and_load_lora_weights(gpt2_lm, gpt2_tokenizer, tmp_path):
    from tests.conftest import tiny_gpt2_backbone

    gpt2_lm.backbone.enable_lora(rank=2)
    for v in gpt2_lm.backbone.lora_variables():
        v.assign(np.random.default_rng(0).normal(size=v.shape).astype("float32"))
    path = str(tmp_path / "adapters.lora.h5")
    gpt2_lm.backbone.save_lora_weights(path)
    keras.utils.set_random_seed(0)
    other = tiny_gpt2_backbone(gpt2_tokenizer.vocabulary_size())
    for src, dst in zip(_base_vars(gpt2_lm.backbone), _base_vars(other), strict=True):
        dst.assign(src.numpy())
    other.load_lora_weights(path)
    ids = np.array([[0, 5, 6, 7]])
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    np.testing.assert_allclose(keras.ops.convert_to_numpy(other(x)),
                               keras.ops.convert_to_numpy(gpt2_lm.backbone(x)), atol=1e-5)
    with pytest.raises(ValueError, match="lora.h5"):
        gpt2_lm.backbone.save_lora_weights(str(tmp_path / "x.h5"))


def _base_vars(model):
    return [v for v in model.variables if "lora" not in v.path and "seed_generator" not in v.path]


def test_save_to_preset_merges_lora(gpt2_lm, tmp_path):
    gpt2_lm.backbone.enable_lora(rank=2)
    for v in gpt2_lm.backbone.lora_variables():
        v.assign(np.full(v.shape, 0.05, "float32"))
    ids = np.array([[0, 5, 6, 7]])
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    expected = keras.ops.convert_to_numpy(gpt2_lm(x))
    gpt2_lm.save_to_preset(str(tmp_path / "p"))
    loaded = keras_lm.models.CausalLM.from_preset(str(tmp_path / "p"))
    assert not loaded.backbone.lora_variables()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected, atol=1e-5)


def test_bfloat16_preset_loading_keeps_lora_in_float32(gpt2_preset):
    lm = keras_lm.models.CausalLM.from_preset(gpt2_preset, dtype="bfloat16")
    assert lm.backbone.dtype_policy.name == "bfloat16"
    kernel = lm.backbone.get_layer("transformer_layer_0").attention.query.kernel
    assert keras.backend.standardize_dtype(kernel.dtype) == "bfloat16"
    lm.backbone.enable_lora(rank=2)
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32"
               for v in lm.backbone.lora_variables())
    lm.compile(sampler="greedy")
    out = lm.generate("the quick", max_length=10)
    assert out.startswith("the quick")
    logits = lm.score(np.array([[0, 5, 6]]))
    assert keras.backend.standardize_dtype(logits.dtype) == "bfloat16"


def test_mixed_bfloat16_keeps_float32_variables(gpt2_preset):
    lm = keras_lm.models.GPT2CausalLM.from_preset(gpt2_preset, dtype="mixed_bfloat16")
    kernel = lm.backbone.get_layer("transformer_layer_0").attention.query.kernel
    assert keras.backend.standardize_dtype(kernel.dtype) == "float32"
    hidden = lm.backbone({"token_ids": np.array([[0, 5]]), "padding_mask": np.ones((1, 2))})
    assert keras.backend.standardize_dtype(hidden.dtype) == "bfloat16"
    reference = keras_lm.models.GPT2CausalLM.from_preset(gpt2_preset)
    ids = np.array([[0, 5, 6, 7]])
    low = keras.ops.convert_to_numpy(keras.ops.cast(lm.score(ids), "float32"))
    high = keras.ops.convert_to_numpy(reference.score(ids))
    # bfloat16 keeps ~3 significant digits: errors far below the logits' own spread.
    spread = high.max() - high.min()
    assert 0 < np.abs(low - high).max() < 0.02 * spread
    assert np.corrcoef(low.ravel(), high.ravel())[0, 1] > 0.999


def test_int8_quantization_keeps_outputs_close(gpt2_lm):
    import warnings

    ids = np.array([[0, 5, 6, 7, 8]])
    before = keras.ops.convert_to_numpy(gpt2_lm.score(ids))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns for layers without weights to quantize
        gpt2_lm.quantize("int8")
    kernel = gpt2_lm.backbone.get_layer("transformer_layer_0").attention.query._kernel
    assert keras.backend.standardize_dtype(kernel.dtype) == "int8"
    after = keras.ops.convert_to_numpy(gpt2_lm.score(ids))
    assert np.abs(after - before).max() < 0.05 * np.abs(before).max()
    out = gpt2_lm.generate("the quick", max_length=12, sampler="greedy")
    assert out.startswith("the quick")


def test_generation_after_quantize_uses_the_quantized_weights(gpt2_tokenizer):
    import warnings

    from tests.conftest import tiny_gpt2_backbone

    def make(quantized):
        keras.utils.set_random_seed(0)
        preprocessor = keras_lm.models.GPT2CausalLMPreprocessor(gpt2_tokenizer,
                                                                sequence_length=16)
        lm = keras_lm.models.GPT2CausalLM(
            backbone=tiny_gpt2_backbone(gpt2_tokenizer.vocabulary_size()),
            preprocessor=preprocessor)
        if quantized:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lm.quantize("int8")
        return lm

    lm = make(quantized=False)
    _, float_log_probs = lm.generate("the quick", max_length=10, sampler="greedy",
                                     return_log_probs=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm.quantize("int8")  # after generation compiled its functions
    _, log_probs = lm.generate("the quick", max_length=10, sampler="greedy",
                               return_log_probs=True)
    _, expected = make(quantized=True).generate("the quick", max_length=10, sampler="greedy",
                                                return_log_probs=True)
    assert not np.array_equal(log_probs, float_log_probs)
    np.testing.assert_allclose(log_probs, expected, atol=1e-6)


@pytest.mark.parametrize("tie", [True, False])
def test_int8_head_is_quantized_and_round_trips_through_a_preset(tmp_path, tie):
    import warnings

    keras.utils.set_random_seed(1)
    backbone = keras_lm.models.LlamaBackbone(
        vocabulary_size=300, num_layers=1, num_query_heads=2, hidden_dim=16,
        intermediate_dim=24, num_key_value_heads=1, tie_word_embeddings=tie)
    lm = keras_lm.models.LlamaCausalLM(backbone=backbone)
    ids = np.array([[1, 5, 6, 7, 8, 250]])
    before = keras.ops.convert_to_numpy(lm.score(ids))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm.quantize("int8")
    dtypes = {v.path: keras.backend.standardize_dtype(v.dtype) for v in backbone.variables}
    head = "embeddings" if tie else "reverse_embeddings"
    assert dtypes[f"token_embedding/{head}"] == "int8"
    after = keras.ops.convert_to_numpy(lm.score(ids))
    assert np.abs(after - before).max() < 0.05 * np.abs(before).max()

    lm.save_to_preset(str(tmp_path / "int8"))
    restored = keras_lm.models.CausalLM.from_preset(str(tmp_path / "int8"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored.score(ids)), after,
                               atol=1e-5)


def _quantized_llama(seed, tie, lora_rank=None):
    import warnings

    keras.utils.set_random_seed(seed)
    backbone = keras_lm.models.LlamaBackbone(
        vocabulary_size=300, num_layers=2, num_query_heads=4, hidden_dim=32,
        intermediate_dim=48, num_key_value_heads=2, tie_word_embeddings=tie)
    lm = keras_lm.models.LlamaCausalLM(backbone=backbone)
    if not tie:  # a separate head starts near zero; give its logits a real spread
        head = backbone.token_embedding.reverse_embeddings
        head.assign(keras.random.normal(head.shape, stddev=0.5, seed=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm.quantize("int8")
    if lora_rank:
        backbone.enable_lora(rank=lora_rank)
        for variable in backbone.lora_variables():
            variable.assign(keras.random.normal(variable.shape, stddev=0.3, seed=seed))
    return lm


NEW_TOKENS = 6


def _greedy(lm, prompts):
    ids = np.full((len(prompts), 8), 0, dtype="int32")
    mask = np.zeros_like(ids, dtype=bool)
    for i, prompt in enumerate(prompts):
        ids[i, : len(prompt)], mask[i, : len(prompt)] = prompt, True
    out, log_probs = lm.generate({"token_ids": ids, "padding_mask": mask},
                                 max_new_tokens=NEW_TOKENS,
                                 stop_token_ids=None, sampler="greedy", return_log_probs=True)
    return np.asarray(out["token_ids"]), np.asarray(log_probs)


def _greedy_margins(lm, prompts, tokens):
    """Per row, the smallest gap between the best and second-best logit over the steps that
    chose `tokens` (Keras' own int8 path, scored in one pass)."""
    margins = []
    for prompt, row in zip(prompts, tokens, strict=True):
        ids = np.asarray(row[: len(prompt) + NEW_TOKENS])[None]  # no stop ids: all generated
        logits = keras.ops.convert_to_numpy(lm.score(ids.astype("int32")))[0]
        steps = np.sort(logits[len(prompt) - 1 : ids.shape[1] - 1], axis=-1)
        margins.append(float((steps[:, -1] - steps[:, -2]).min()))
    return min(margins)


@pytest.mark.parametrize("tie", [True, False])
def test_fast_int8_generation_matches_keras_int8_path(tie, monkeypatch):
    """The backend's int8 products (row-major copies and row padding on JAX, FBGEMM on torch)
    give Keras' int8 results: exactly on JAX; on torch within FBGEMM's activation rounding,
    on a model whose greedy choices are clearer than that rounding, so the tokens must match."""
    from keras_lm.backend import ops as fast_ops

    if fast_ops.int8_projection is None:
        pytest.skip("no fast int8 path on this backend")
    lm = _quantized_llama(0, tie)
    prompts = [[1, 5, 9, 200], [1, 7]]  # two rows, and a single row below
    fast = _greedy(lm, prompts), _greedy(lm, prompts[:1])
    monkeypatch.setattr(fast_ops, "int8_projection", None)
    keras_path = _greedy(lm, prompts), _greedy(lm, prompts[:1])
    exact = keras.backend.backend() == "jax"
    tolerance = 1e-5 if exact else 0.05
    # Greedy choices clearer than the rounding: equal tokens are then a fair demand.
    margin = _greedy_margins(lm, prompts, keras_path[0][0])
    assert margin > 2 * tolerance, f"the check needs clearer greedy choices ({margin:.4f})"
    for (tokens, log_probs), (expected_tokens, expected) in zip(fast, keras_path, strict=True):
        np.testing.assert_array_equal(tokens, expected_tokens)
        np.testing.assert_allclose(log_probs, expected, atol=tolerance, rtol=0)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX keeps row-major int8 copies")
def test_row_major_int8_copies_follow_reassigned_kernels():
    from keras_lm.backend.xla_kernels import row_major_companions

    lm, other = _quantized_llama(3, tie=False), _quantized_llama(4, tie=False)
    before = _greedy(lm, [[1, 5, 9, 200]])
    copies = row_major_companions(lm.backbone)
    # Every projection (7 per layer) and the untied head; none of them is a saved weight.
    assert len(copies) == 2 * 7 + 1
    assert not {id(v) for v in copies} & {id(v) for v in lm.variables}
    for target, source in zip(lm.variables, other.variables, strict=True):
        target.assign(source.value)
    after, expected = _greedy(lm, [[1, 5, 9, 200]]), _greedy(other, [[1, 5, 9, 200]])
    assert not np.array_equal(before[1], after[1])
    np.testing.assert_allclose(after[1], expected[1], atol=1e-5)
    assert [id(v) for v in row_major_companions(lm.backbone)] == [id(v) for v in copies]


def test_lora_on_an_int8_model_takes_part_in_fast_calls(monkeypatch):
    """QLoRA-style: adapters on int8 layers change outputs the same way on the fast path."""
    from keras_lm.backend import ops as fast_ops

    prompts = [[1, 5, 6, 7, 8, 250]]
    plain = _greedy(_quantized_llama(3, tie=True), prompts)[1]
    lm = _quantized_llama(3, tie=True, lora_rank=2)
    fast = _greedy(lm, prompts)[1]
    monkeypatch.setattr(fast_ops, "int8_projection", None)
    expected = _greedy(lm, prompts)[1]
    scale = np.abs(expected - plain).max()
    assert scale > 0.01  # the adapters matter
    np.testing.assert_allclose(fast, expected, atol=0.05 * scale)


def test_quantize_frees_each_float_kernel_with_one_collection(monkeypatch):
    # Keras collects garbage after every variable quantize replaces (0.1 s+ each in a busy
    # process); ours collect once at the end, and the float kernels are still freed.
    import gc
    import warnings
    import weakref

    backbone = keras_lm.models.LlamaBackbone(
        vocabulary_size=50, num_layers=2, num_query_heads=2, hidden_dim=8,
        intermediate_dim=16, num_key_value_heads=1)
    lm = keras_lm.models.LlamaCausalLM(backbone=backbone)
    old = [weakref.ref(layer._kernel) for layer in backbone._flatten_layers()
           if isinstance(layer, keras.layers.EinsumDense)]
    old.append(weakref.ref(backbone.token_embedding.embeddings))
    assert len(old) == 2 * 7 + 1
    collections = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or collect(*a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm.quantize("int8")
    assert len(collections) == 1
    assert all(ref() is None for ref in old)
    assert all(v.dtype != "float32" for v in lm.weights if v.path.endswith("kernel"))
