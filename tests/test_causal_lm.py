"""CausalLM behaviour: generate input forms and options, fit forms, score, bad input."""

import keras
import numpy as np
import pytest

import keras_lm


def test_string_and_list_generation(gpt2_lm):
    gpt2_lm.compile(sampler="greedy")
    one = gpt2_lm.generate("the quick", max_length=12)
    many = gpt2_lm.generate(["the quick", "where are"], max_length=12)
    assert isinstance(one, str) and one.startswith("the quick")
    assert isinstance(many, list) and len(many) == 2 and many[0] == one


def test_strip_prompt_returns_only_the_completion(gpt2_lm):
    gpt2_lm.compile(sampler="greedy")
    full = gpt2_lm.generate("the quick", max_length=12, stop_token_ids=None)
    completion = gpt2_lm.generate("the quick", max_length=12, stop_token_ids=None,
                                  strip_prompt=True)
    assert full == "the quick" + completion


def test_max_length_is_honoured_without_preprocessor(gpt2_lm):
    gpt2_lm.preprocessor = None
    prompt = {"token_ids": np.array([[0, 5, 6, 0, 0]] * 2), "padding_mask": np.array(
        [[1, 1, 1, 0, 0]] * 2)}
    default = gpt2_lm.generate(prompt, stop_token_ids=None)
    assert default["token_ids"].shape == (2, 5) and default["padding_mask"].all()
    longer = gpt2_lm.generate(prompt, max_length=9, stop_token_ids=None)
    assert longer["token_ids"].shape == (2, 9) and longer["padding_mask"].all()
    np.testing.assert_array_equal(longer["token_ids"][:, :3], prompt["token_ids"][:, :3])


def test_stop_token_ids_are_judged_per_row(gpt2_lm):
    gpt2_lm.compile(sampler="greedy")
    gpt2_lm.preprocessor = None
    prompt = {"token_ids": np.array([[0, 5, 6], [0, 9, 3]]), "padding_mask": np.ones((2, 3))}
    free = gpt2_lm.generate(prompt, max_length=12, stop_token_ids=None)
    first_new = free["token_ids"][0, 3]
    unused = next(i for i in range(1, 400) if i not in free["token_ids"])
    stopped = gpt2_lm.generate(prompt, max_length=12, stop_token_ids=[int(first_new), unused])
    # Row 0 stops right after emitting its stop token; row 1 continues unless it hits one.
    assert stopped["padding_mask"][0].sum() == 4
    row1 = free["token_ids"][1, 3:]
    hits = np.nonzero(row1 == first_new)[0]
    expected_len = 3 + (hits[0] + 1 if len(hits) else len(row1))
    assert stopped["padding_mask"][1].sum() == expected_len
    np.testing.assert_array_equal(stopped["token_ids"][1, :expected_len],
                                  free["token_ids"][1, :expected_len])


def test_max_new_tokens(gpt2_lm):
    gpt2_lm.preprocessor = None
    prompt = {"token_ids": np.array([[0, 5, 6]]), "padding_mask": np.ones((1, 3))}
    out = gpt2_lm.generate(prompt, max_new_tokens=4, stop_token_ids=None)
    assert out["padding_mask"].sum() == 7


def test_generate_batch_by_batch_from_an_iterable(gpt2_lm):
    gpt2_lm.compile(sampler="greedy")
    batches = [["the quick", "i want"], ["where are"]]
    out = gpt2_lm.generate(iter(batches), max_length=10)
    assert out == gpt2_lm.generate(["the quick", "i want", "where are"], max_length=10)


def test_bad_generate_input(gpt2_lm):
    with pytest.raises(ValueError, match="at least one prompt"):
        gpt2_lm.generate([], max_length=10)
    with pytest.raises(TypeError, match="item 1"):
        gpt2_lm.generate(["ok", 3], max_length=10)
    with pytest.raises(ValueError, match="shorter than the longest prompt"):
        gpt2_lm.generate("the quick brown fox jumped over the lazy dog", max_length=3)
    with pytest.raises(ValueError, match="max_length"):
        gpt2_lm.generate("the", max_length=0)
    with pytest.raises(ValueError, match="Unknown sampler name"):
        gpt2_lm.compile(sampler="bogus")
    with pytest.raises(ValueError, match="stop_token_ids"):
        gpt2_lm.generate("the", max_length=8, stop_token_ids="end")
    with pytest.raises(ValueError, match="positions"):
        gpt2_lm.generate("the", max_length=500)


def test_fit_on_raw_strings_and_preprocessed_dicts(gpt2_lm):
    features = ["the quick brown fox jumped.", "i forgot my homework."]
    history = gpt2_lm.fit(x=features, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    x, y, sw = gpt2_lm.preprocessor(features)
    gpt2_lm.preprocessor = None
    history = gpt2_lm.fit(x=x, y=y, sample_weight=sw, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight"])
def test_training_loss_equals_keras_loss_on_the_token_grid(gpt2_lm, reduction):
    # compute_loss flattens tokens before the cross-entropy; the number must be Keras' own
    # on [batch, tokens, vocab], masked tokens included.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    gpt2_lm.compile(loss=loss)
    x, y, sw = gpt2_lm.preprocessor(["the quick brown fox", "i"], sequence_length=8)
    assert 0.0 in sw[1].tolist()
    logits = gpt2_lm(x)
    expected = loss(y, logits, sample_weight=sw)
    got = gpt2_lm.compute_loss(x, y, logits, sw)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got),
                               keras.ops.convert_to_numpy(expected), rtol=1e-5)
    # Without weights too, and a loss reduced per token is left to Keras unchanged.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gpt2_lm.compute_loss(x, y, logits)),
                               keras.ops.convert_to_numpy(loss(y, logits)), rtol=1e-5)
    gpt2_lm.compile()


def test_labels_of_the_wrong_shape_are_named(gpt2_lm):
    x, y, sw = gpt2_lm.preprocessor(["the quick brown fox"], sequence_length=8)
    preprocessor, gpt2_lm.preprocessor = gpt2_lm.preprocessor, None
    try:
        wrong = r"`y` must have the shape of `x\['token_ids'\]` \(1, 8\).*\(1, 7\)"
        with pytest.raises(ValueError, match=wrong):
            gpt2_lm.fit(x, y[:, :7], verbose=0)
    finally:
        gpt2_lm.preprocessor = preprocessor


def test_preprocessor_shifts_labels(gpt2_lm):
    x, y, sw = gpt2_lm.preprocessor(["the quick"], sequence_length=6)
    tok = gpt2_lm.preprocessor.tokenizer
    body = tok("the quick").tolist()
    assert x["token_ids"][0].tolist()[: len(body) + 1] == [tok.start_token_id] + body
    assert y[0].tolist()[: len(body) + 1] == body + [tok.end_token_id]
    assert sw[0].tolist() == [1.0] * (len(body) + 1) + [0.0] * (6 - len(body) - 1)


def test_generate_preprocess_keeps_the_first_tokens_of_a_long_prompt(gpt2_lm):
    """KerasHub's contract: the packer truncates (the seed pages feed generations back)."""
    preprocessor = gpt2_lm.preprocessor
    text = "the quick brown fox jumped over the lazy dog"
    full = preprocessor.prompt_rows([text])[0]
    out = preprocessor.generate_preprocess([text, "the"], sequence_length=4)
    assert out["token_ids"][0].tolist() == full[:4].tolist()
    assert out["padding_mask"][0].tolist() == [True] * 4
    assert out["padding_mask"][1].tolist() == [True, True, False, False]


def test_score_logits_and_loss(gpt2_lm):
    ids = np.array([[0, 5, 6, 7], [0, 8, 9, 3]])
    logits = keras.ops.convert_to_numpy(gpt2_lm.score(ids))
    reference = keras.ops.convert_to_numpy(
        gpt2_lm({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    )
    np.testing.assert_allclose(logits, reference, atol=1e-5)
    targets = np.roll(ids, -1, axis=1)
    loss = keras.ops.convert_to_numpy(gpt2_lm.score(ids, scoring_mode="loss", target_ids=targets))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, expected, atol=1e-4)
    with pytest.raises(ValueError, match="scoring_mode"):
        gpt2_lm.score(ids, scoring_mode="probs")
    with pytest.raises(ValueError, match="target_ids"):
        gpt2_lm.score(ids, scoring_mode="loss")


def test_score_layer_intercept_sees_every_layer(gpt2_lm):
    seen = []

    def intercept(x, i):
        seen.append(i)
        return x * 0 if i == -1 else x

    ids = np.array([[0, 5, 6]])
    zeroed = keras.ops.convert_to_numpy(gpt2_lm.score(ids, layer_intercept_fn=intercept))
    assert seen == [-1, 0, 1]
    normal = keras.ops.convert_to_numpy(gpt2_lm.score(ids))
    assert not np.allclose(zeroed, normal)


def test_base_causal_lm_cannot_be_built_directly(gpt2_lm):
    with pytest.raises(TypeError, match="base class"):
        keras_lm.models.CausalLM(backbone=gpt2_lm.backbone)


def test_cache_growth_between_chunks_keeps_outputs(gpt2_lm, monkeypatch):
    from keras_lm.generation import cache, engine

    gpt2_lm.preprocessor = None
    prompt = {"token_ids": np.array([[3, 5, 6, 7, 0], [4, 9, 0, 0, 0]]),
              "padding_mask": np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])}
    gpt2_lm.compile(sampler="greedy")
    grown_shapes = []
    real_grow = cache.grow
    monkeypatch.setattr(cache, "grow", lambda caches, capacity: grown_shapes.append(
        capacity) or real_grow(caches, capacity))
    monkeypatch.setattr(engine, "INITIAL_STEPS", 0)  # start at one chunk: 64 slots, then grow
    grown = gpt2_lm.generate(prompt, max_new_tokens=100, stop_token_ids=None)
    assert grown_shapes == [128]
    monkeypatch.setattr(engine, "INITIAL_STEPS", 192)
    whole = gpt2_lm.generate(prompt, max_new_tokens=100, stop_token_ids=None)
    assert grown_shapes == [128]  # 8 + 100 slots fit the first cache
    np.testing.assert_array_equal(grown["token_ids"], whole["token_ids"])
    assert grown["token_ids"].shape[1] >= 100


def test_take_cache_rows_moves_every_head_of_a_sequence():
    from keras_lm.generation.cache import take_rows as take_cache_rows

    kv_heads, slots, dim = 3, 4, 2
    keys = np.arange(2 * kv_heads * slots * dim, dtype="float32").reshape(-1, slots, dim)
    caches = [(keras.ops.convert_to_tensor(keys), keras.ops.convert_to_tensor(-keys))]
    ((got_keys, got_values),) = take_cache_rows(caches, np.array([1, 1, 0], "int32"), kv_heads)
    expected = keys.reshape(2, kv_heads, slots, dim)[[1, 1, 0]].reshape(-1, slots, dim)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got_keys), expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got_values), -expected)


def test_log_probs_leave_the_tokens_unchanged(gpt2_lm):
    kwargs = dict(max_length=20, stop_token_ids=None, sampler="greedy")
    plain = gpt2_lm.generate(["the quick", "i"], **kwargs)
    with_scores, log_probs = gpt2_lm.generate(["the quick", "i"], return_log_probs=True,
                                              **kwargs)
    assert plain == with_scores
    assert all(np.all(row < 0) for row in log_probs)


def _one_kv_head_lm(num_layers=3):
    keras.utils.set_random_seed(1)
    backbone = keras_lm.models.Gemma3Backbone(
        vocabulary_size=48, num_layers=num_layers, num_query_heads=4, num_key_value_heads=1,
        hidden_dim=16, intermediate_dim=24, head_dim=8, sliding_window_size=6,
        sliding_window_pattern=2)
    lm = keras_lm.models.Gemma3CausalLM(backbone=backbone)
    lm.compile(sampler="greedy")
    return lm


def test_one_cached_row_generates_like_the_full_forward():
    """Batch 1 of a one-KV-head model decodes on caches without their unit axis; greedy
    tokens must equal re-running the whole sequence without any cache at every step."""
    lm = _one_kv_head_lm()
    prompt = np.array([[7, 3, 11, 5, 2]], "int32")
    out = lm.generate({"token_ids": prompt, "padding_mask": np.ones_like(prompt, bool)},
                      max_new_tokens=20, stop_token_ids=None)
    # One fixed width (causal: later filler tokens cannot change earlier logits).
    sequence = np.zeros((1, 25), "int32")
    sequence[:, :5] = prompt
    for t in range(5, 25):
        logits = keras.ops.convert_to_numpy(
            lm({"token_ids": sequence, "padding_mask": np.ones_like(sequence, bool)}))
        sequence[0, t] = logits[0, t - 1].argmax()
    np.testing.assert_array_equal(out["token_ids"][:, :25], sequence)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="inspects XLA's compiled program")
def test_decode_loop_writes_one_row_caches_in_place(monkeypatch):
    """XLA drops a unit cache axis from the attention product and, with the reshape fused
    into the cache write, wrote every cache twice and copied it four times per step."""
    import jax

    from keras_lm.generation import compile as compile_module

    calls = []
    real_call = compile_module.CompiledFunction.__call__

    def record(self, *args):
        calls.append((self, jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)))
        return real_call(self, *args)

    monkeypatch.setattr(compile_module.CompiledFunction, "__call__", record)
    lm = _one_kv_head_lm()
    prompt = np.array([[7, 3, 11, 5, 2]], "int32")
    lm.generate({"token_ids": prompt, "padding_mask": np.ones_like(prompt, bool)},
                max_new_tokens=4, stop_token_ids=None)
    function, args = calls[-1]  # the decode chunk
    caches = args[1]["caches"]
    assert tuple(caches[0][0].shape)[0] == 1
    slots, dim = tuple(caches[0][0].shape)[1:]
    values = [v.value for v in function._variables]
    program = function._compiled.lower(values, *args).compile().as_text()
    assert "while" in program
    cache_copies = [line for line in program.splitlines() if " copy(" in line
                    and (f"[{slots},{dim}]" in line or f"[1,{slots},{dim}]" in line)]
    assert cache_copies == []
