"""`tf.data` inputs to fit and generate, when TensorFlow is installed (any backend)."""

import pytest

tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.tensorflow


def test_fit_on_a_string_dataset(gpt2_lm):
    features = ["the quick brown fox jumped.", "i forgot my homework.", "keras is a library"]
    dataset = tf.data.Dataset.from_tensor_slices(features).batch(2)
    history = gpt2_lm.fit(dataset, verbose=0)
    assert history.history["loss"][0] > 0


def test_generate_batch_by_batch_from_a_dataset(gpt2_lm):
    gpt2_lm.compile(sampler="greedy")
    prompts = ["the quick", "i want", "where are"]
    dataset = tf.data.Dataset.from_tensor_slices(prompts).batch(2)
    out = gpt2_lm.generate(dataset, max_length=10)
    assert out == gpt2_lm.generate(prompts, max_length=10)
