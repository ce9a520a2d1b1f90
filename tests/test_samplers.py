"""Samplers: names, config, reproducibility, and the search strategies."""

import keras
import numpy as np
import pytest

import keras_lm
from keras_lm import samplers

pytestmark = pytest.mark.tensorflow


def test_names_map_to_classes_with_keras_hub_defaults():
    assert isinstance(samplers.get("greedy"), samplers.GreedySampler)
    assert samplers.get("top_k").k == 5
    assert samplers.get("top_p").p == 0.1 and samplers.get("top_p").k is None
    beam = samplers.get("beam")
    assert beam.num_beams == 5 and beam.return_all_beams is False
    contrastive = samplers.get("contrastive")
    assert (contrastive.k, contrastive.alpha) == (5, 0.6)
    assert isinstance(samplers.get("random"), samplers.RandomSampler)


def test_unknown_name_is_rejected():
    with pytest.raises(ValueError, match="Unknown sampler name 'nucleus'"):
        samplers.get("nucleus")
    with pytest.raises(TypeError, match="sampler"):
        samplers.get(3)


def test_serialize_round_trip():
    sampler = samplers.TopPSampler(p=0.5, k=7, temperature=0.8)
    restored = samplers.deserialize(samplers.serialize(sampler))
    assert isinstance(restored, samplers.TopPSampler)
    assert restored.get_config() == sampler.get_config()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="`k`"):
        samplers.TopKSampler(k=0)
    with pytest.raises(ValueError, match="`p`"):
        samplers.TopPSampler(p=1.5)
    with pytest.raises(ValueError, match="temperature"):
        samplers.RandomSampler(temperature=0)


def test_seeded_samplers_are_reproducible(gpt2_lm):
    for cls in (samplers.RandomSampler, samplers.TopKSampler, samplers.TopPSampler):
        kwargs = {"p": 0.9} if cls is samplers.TopPSampler else {}
        a = gpt2_lm.generate(["the quick"], max_length=16, stop_token_ids=None,
                             sampler=cls(seed=7, **kwargs))
        b = gpt2_lm.generate(["the quick"], max_length=16, stop_token_ids=None,
                             sampler=cls(seed=7, **kwargs))
        assert a == b


def test_degenerate_random_samplers_equal_greedy(gpt2_lm):
    greedy = gpt2_lm.generate(["the quick", "i"], max_length=14, stop_token_ids=None,
                              sampler="greedy")
    top1 = gpt2_lm.generate(["the quick", "i"], max_length=14, stop_token_ids=None,
                            sampler=samplers.TopKSampler(k=1, seed=3))
    tiny_p = gpt2_lm.generate(["the quick", "i"], max_length=14, stop_token_ids=None,
                              sampler=samplers.TopPSampler(p=1e-6, seed=3))
    assert greedy == top1 == tiny_p


def test_custom_sampler_through_get_next_token(gpt2_lm):
    class LowestIdSampler(samplers.Sampler):
        def get_next_token(self, probabilities):
            return keras.ops.argmin(probabilities, axis=-1)

    gpt2_lm.compile(sampler=LowestIdSampler())
    prompt = {"token_ids": np.array([[0, 5, 6]]), "padding_mask": np.ones((1, 3), bool)}
    gpt2_lm.preprocessor = None
    out = gpt2_lm.generate(prompt, max_length=8, stop_token_ids=None)
    logits = keras.ops.convert_to_numpy(gpt2_lm.score(out["token_ids"]))
    expected = logits[0, 2:7].argmin(-1)
    np.testing.assert_array_equal(out["token_ids"][0, 3:8], expected)


def test_beam_with_one_beam_is_greedy(gpt2_lm):
    greedy = gpt2_lm.generate(["the quick", "i"], max_length=14, stop_token_ids=None,
                              sampler="greedy")
    beam = gpt2_lm.generate(["the quick", "i"], max_length=14, stop_token_ids=None,
                            sampler=samplers.BeamSampler(num_beams=1))
    assert beam == greedy


def sequence_log_prob(lm, ids, prompt_len):
    logits = keras.ops.convert_to_numpy(lm.score(np.asarray(ids)[None]))[0]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return sum(log_probs[t - 1, ids[t]] for t in range(prompt_len, len(ids)))


def test_beam_finds_at_least_the_greedy_score(gpt2_lm):
    gpt2_lm.preprocessor = None
    prompt = {"token_ids": np.array([[0, 5, 9]]), "padding_mask": np.ones((1, 3), bool)}
    greedy = gpt2_lm.generate(prompt, max_length=9, stop_token_ids=None, sampler="greedy")
    beams = gpt2_lm.generate(prompt, max_length=9, stop_token_ids=None,
                             sampler=samplers.BeamSampler(num_beams=4, return_all_beams=True))
    assert len(beams) == 1  # one prompt
    beams = beams[0]
    assert len(beams) == 4
    scores = [sequence_log_prob(gpt2_lm, b, 3) for b in beams]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] >= sequence_log_prob(gpt2_lm, greedy["token_ids"][0], 3) - 1e-4


def test_contrastive_with_alpha_zero_is_greedy(gpt2_lm):
    greedy = gpt2_lm.generate(["the quick", "i"], max_length=14, stop_token_ids=None,
                              sampler="greedy")
    contrastive = gpt2_lm.generate(["the quick", "i"], max_length=14, stop_token_ids=None,
                                   sampler=samplers.ContrastiveSampler(k=3, alpha=0.0))
    assert contrastive == greedy


def test_contrastive_runs_with_penalty(gpt2_lm):
    out = gpt2_lm.generate(["the quick"], max_length=14, stop_token_ids=None,
                           sampler=keras_lm.samplers.ContrastiveSampler(k=4, alpha=0.6))
    assert out[0].startswith("the quick")


def test_greedy_picks_the_first_maximum_like_numpy_argmax():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 1000)).astype("float32")
    logits[1, [7, 500, 999]] = 50.0  # ties: the first index wins
    logits[2, -1] = 60.0
    logits[3] = -np.inf
    logits[3, 42] = -1e30
    picked = samplers.GreedySampler().next_token_from_logits(keras.ops.convert_to_tensor(logits))
    picked = keras.ops.convert_to_numpy(picked)
    assert picked.dtype == np.int32
    np.testing.assert_array_equal(picked, np.argmax(logits, axis=-1))
    assert picked[1] == 7 and picked[2] == 999 and picked[3] == 42


# -- the distributions the random samplers draw from ------------------------------------------
ROWS = 512


def _draw(sampler, logits):
    """`ROWS` independent draws from one row of logits."""
    block = keras.ops.convert_to_tensor(np.tile(np.asarray(logits, "float32"), (ROWS, 1)))
    return keras.ops.convert_to_numpy(sampler.next_token_from_logits(block))


def test_top_k_draws_stay_among_the_k_most_likely_and_reach_each():
    logits = np.random.default_rng(0).normal(size=50)
    allowed = set(np.argsort(-logits)[:3].tolist())
    draws = _draw(samplers.TopKSampler(k=3, seed=1), logits)
    assert set(draws.tolist()) == allowed


def test_top_p_draws_stay_inside_the_nucleus():
    probabilities = np.array([0.05, 0.5, 0.15, 0.3])
    draws = _draw(samplers.TopPSampler(p=0.7, seed=2), np.log(probabilities))
    assert set(draws.tolist()) == {1, 3}  # 0.5 + 0.3 reaches 0.7; 0.15 and 0.05 never drawn
    # With k, only the k most likely are candidates even when p would allow more.
    draws = _draw(samplers.TopPSampler(p=0.99, k=1, seed=2), np.log(probabilities))
    assert set(draws.tolist()) == {1}


def test_random_draws_follow_the_probabilities():
    probabilities = np.array([0.7, 0.2, 0.1])
    draws = _draw(samplers.RandomSampler(seed=3), np.log(probabilities))
    frequencies = np.bincount(draws, minlength=3) / ROWS
    np.testing.assert_allclose(frequencies, probabilities, atol=0.07)


def test_same_seed_repeats_and_different_seeds_differ():
    logits = np.zeros(100)  # uniform: two seeds agreeing on 512 draws is impossible
    first = _draw(samplers.RandomSampler(seed=11), logits)
    assert (first == _draw(samplers.RandomSampler(seed=11), logits)).all()
    assert (first != _draw(samplers.RandomSampler(seed=12), logits)).mean() > 0.9
    assert len(set(first.tolist())) > 50


def test_temperature_sharpens_and_flattens():
    logits = np.array([2.0, 1.0, 0.0])
    cold = _draw(samplers.RandomSampler(temperature=0.1, seed=4), logits)
    hot = _draw(samplers.RandomSampler(temperature=10.0, seed=4), logits)
    assert (cold == 0).mean() > 0.99
    # At T=10 the probabilities are ~(0.37, 0.33, 0.30): every token is drawn often.
    assert min(np.bincount(hot, minlength=3)) > 0.2 * ROWS
