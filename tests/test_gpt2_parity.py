"""Parity with Hugging Face `transformers` GPT-2 on tiny random checkpoints."""

import numpy as np
import pytest
import torch

import keras_lm
from tests.conftest import assert_greedy_matches_transformers, random_ids

pytestmark = pytest.mark.tensorflow


def test_logits_match_transformers(hf_gpt2):
    path, reference = hf_gpt2
    lm = keras_lm.models.CausalLM.from_preset(path)
    ids = random_ids(2, 9, reference.config.vocab_size)
    ours = np.asarray(lm.predict({"token_ids": ids, "padding_mask": np.ones_like(ids)}, verbose=0))
    with torch.no_grad():
        expected = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_greedy_matches_transformers_with_ragged_batch(hf_gpt2):
    path, reference = hf_gpt2
    lm = keras_lm.models.GPT2CausalLM.from_preset(path, preprocessor=None)
    vocab = reference.config.vocab_size
    prompts = [random_ids(1, n, vocab, seed=n)[0] for n in (3, 7, 5)]
    assert_greedy_matches_transformers(lm, reference, prompts, width=20)


def test_string_generation_matches_transformers(hf_gpt2, bpe_assets):
    path, reference = hf_gpt2
    lm = keras_lm.models.CausalLM.from_preset(path)
    lm.compile(sampler="greedy")
    text = lm.generate("the quick brown", max_length=12, stop_token_ids=None)
    ids = lm.preprocessor.generate_preprocess("the quick brown", 12)
    prompt = ids["token_ids"][0][ids["padding_mask"][0]]
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor(prompt[None], dtype=torch.long), max_length=12, do_sample=False,
            pad_token_id=0, eos_token_id=None,
        )[0].numpy()
    expected_text = lm.preprocessor.tokenizer.detokenize(expected[1:])
    assert text == expected_text
