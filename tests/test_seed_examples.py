"""The GPT-2 / CausalLM / OPT-style examples of the seed pages, through the keras_hub alias.

Preset names are replaced by tiny local presets built in the test; everything else is the
example as written.
"""

import numpy as np
import pytest

import keras_lm as keras_hub

pytestmark = pytest.mark.tensorflow


@pytest.fixture
def preset(gpt2_preset):
    return gpt2_preset


def test_causal_lm_class_example(preset):
    causal_lm = keras_hub.models.CausalLM.from_preset(
        preset,
    )
    causal_lm.compile(sampler="top_k")
    first = causal_lm.generate("Keras is a", max_length=64)
    assert isinstance(first, str) and first.startswith("Keras is a")
    causal_lm = keras_hub.models.CausalLM.from_preset(
        preset,
        dtype="bfloat16",
    )
    causal_lm.compile(sampler="greedy")
    out = causal_lm.generate("Keras is a", max_length=64)
    assert out.startswith("Keras is a")


def test_generate_examples(preset):
    lm = keras_hub.models.GPT2CausalLM.from_preset(preset)
    one = lm.generate("I want to say", max_length=30)
    assert isinstance(one, str) and one.startswith("I want to say")
    out = lm.generate(["This is a", "Where are you"], max_length=30)
    assert len(out) == 2
    assert out[0].startswith("This is a") and out[1].startswith("Where are you")


def test_compile_with_custom_sampler_examples(preset):
    lm = keras_hub.models.GPT2CausalLM.from_preset(preset)
    lm.compile(sampler="greedy")
    greedy = lm.generate("I want to say", max_length=30)
    assert greedy == lm.generate("I want to say", max_length=30)  # greedy is deterministic
    assert greedy.startswith("I want to say") and len(greedy) > 13
    lm.compile(sampler=keras_hub.samplers.BeamSampler(num_beams=2))
    assert lm.generate("I want to say", max_length=30).startswith("I want to say")


def test_generate_without_preprocessing_example(preset):
    prompt = {
        "token_ids": np.array([[50, 51, 0, 0, 0]] * 2),
        "padding_mask": np.array([[1, 1, 0, 0, 0]] * 2),
    }
    lm = keras_hub.models.GPT2CausalLM.from_preset(
        preset,
        preprocessor=None,
    )
    out = lm.generate(prompt)
    assert out["token_ids"].shape == (2, 5)
    np.testing.assert_array_equal(out["token_ids"][:, :2], prompt["token_ids"][:, :2])


def test_fit_examples(preset):
    features = ["The quick brown fox jumped.", "I forgot my homework."]
    lm = keras_hub.models.GPT2CausalLM.from_preset(preset)
    before = lm.backbone.get_weights()
    history = lm.fit(x=features, batch_size=2)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, lm.backbone.get_weights(),
                                                        strict=True))
    x = {
        "token_ids": np.array([[1, 2, 3, 4, 5]] * 2),
        "padding_mask": np.array([[1, 1, 1, 1, 1]] * 2),
    }
    y = np.array([[2, 3, 4, 5, 0]] * 2)
    sw = np.array([[1, 1, 1, 1, 1]] * 2)
    lm = keras_hub.models.GPT2CausalLM.from_preset(
        preset,
        preprocessor=None,
    )
    history = lm.fit(x=x, y=y, sample_weight=sw, batch_size=2)
    assert np.isfinite(history.history["loss"]).all() and history.history["loss"][0] > 0


@pytest.mark.slow  # a 50,265-token vocabulary: the page's sizes, trained for one step
def test_custom_backbone_and_vocabulary_example():
    features = ["a quick fox.", "a fox quick."]
    vocab = {"<|endoftext|>": 0, "a": 4, "Ġquick": 5, "Ġfox": 6}
    merges = ["Ġ q", "u i", "c k", "ui ck", "Ġq uick"]
    merges += ["Ġ f", "o x", "Ġf ox"]
    tokenizer = keras_hub.models.GPT2Tokenizer(
        vocabulary=vocab,
        merges=merges,
    )
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer=tokenizer,
        sequence_length=128,
    )
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=50265,
        num_layers=4,
        num_heads=4,
        hidden_dim=256,
        intermediate_dim=512,
        max_sequence_length=128,
    )
    lm = keras_hub.models.GPT2CausalLM(
        backbone=backbone,
        preprocessor=preprocessor,
    )
    history = lm.fit(x=features, batch_size=2)
    assert np.isfinite(history.history["loss"]).all()


def _embedding_gradients(lm, generation_ids, padding_mask, target_ids):
    """d(sum of losses)/d(embeddings), with the backend's own autodiff (the seed page's
    `tf.GradientTape` example, written for each backend)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        embeddings = None
        with tf.GradientTape(watch_accessed_variables=True) as tape:
            def layer_intercept_fn(x, i):
                if i == -1:
                    nonlocal embeddings, tape
                    embeddings = x
                    tape.watch(embeddings)
                return x
            losses = lm.score(
                token_ids=generation_ids,
                padding_mask=padding_mask,
                scoring_mode="loss",
                layer_intercept_fn=layer_intercept_fn,
                target_ids=target_ids,
            )
        return losses, tape.gradient(losses, embeddings)
    captured = {}

    def capture(x, i):
        if i == -1:
            captured["x"] = x
        return x

    lm.score(generation_ids, padding_mask, scoring_mode="logits", layer_intercept_fn=capture)
    start = keras.ops.convert_to_numpy(captured["x"])

    def losses_for(embeddings):
        return lm.score(
            token_ids=generation_ids,
            padding_mask=padding_mask,
            scoring_mode="loss",
            layer_intercept_fn=lambda x, i: embeddings if i == -1 else x,
            target_ids=target_ids,
        )

    if backend == "jax":
        import jax

        losses = losses_for(start)
        return losses, jax.grad(lambda e: losses_for(e).sum())(start)
    import torch

    embeddings = torch.tensor(start, requires_grad=True)
    losses = losses_for(embeddings)
    losses.sum().backward()
    return losses.detach(), embeddings.grad


def test_score_gradient_example(preset):
    """The Gemma page's score example: gradients of the losses with respect to the
    embeddings, checked against a finite difference."""
    import keras

    lm = keras_hub.models.GPT2CausalLM.from_preset(preset)
    generations = lm.generate(["This is a", "Where are you"], max_length=30)
    preprocessed = lm.preprocessor.generate_preprocess(generations)
    generation_ids = preprocessed["token_ids"]
    padding_mask = preprocessed["padding_mask"]
    target_ids = keras.ops.roll(generation_ids, shift=-1, axis=1)
    losses, grads = _embedding_gradients(lm, generation_ids, padding_mask, target_ids)
    losses = keras.ops.convert_to_numpy(losses)
    grads = keras.ops.convert_to_numpy(grads)
    assert losses.shape == generation_ids.shape
    assert grads.shape == generation_ids.shape + (16,)
    assert np.abs(grads).max() > 0
    # Nudge one embedding along its gradient: the total loss moves by about grad . step.
    captured = {}

    def nudge(x, i):
        if i != -1:
            return x
        step = np.zeros(x.shape, "float32")
        step[0, 2] = 1e-2 * grads[0, 2] / np.linalg.norm(grads[0, 2])
        captured["step"] = step
        return x + keras.ops.convert_to_tensor(step)

    moved = keras.ops.convert_to_numpy(lm.score(
        generation_ids, padding_mask, scoring_mode="loss", layer_intercept_fn=nudge,
        target_ids=target_ids))
    expected = float((grads * captured["step"]).sum())
    assert expected > 0
    np.testing.assert_allclose(moved.sum() - losses.sum(), expected, rtol=0.1)


def test_save_to_preset_example(preset, tmp_path):
    lm = keras_hub.models.CausalLM.from_preset(preset)
    lm.save_to_preset(str(tmp_path / "copy"))
    assert keras_hub.models.CausalLM.from_preset(str(tmp_path / "copy")).preprocessor is not None
    assert "gpt2_base_en" in keras_hub.models.CausalLM.presets.keys()
