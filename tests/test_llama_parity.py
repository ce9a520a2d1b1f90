"""Parity with Hugging Face `transformers` Llama on tiny random checkpoints."""

import numpy as np
import pytest
import torch

import keras_lm
from tests.conftest import assert_greedy_matches_transformers, parity_matrix, random_ids

pytestmark = pytest.mark.tensorflow


def save_hf_llama(path, seed=0, **config):
    import transformers

    args = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    args.update(config)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**args)).eval()
    model.save_pretrained(str(path))
    return model


@pytest.mark.parametrize("config", parity_matrix([
    {},
    {"tie_word_embeddings": True},
    {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32}},
]))
def test_logits_and_greedy_match_transformers(tmp_path, config):
    reference = save_hf_llama(tmp_path, **config)
    backbone = keras_lm.models.Backbone.from_preset(str(tmp_path))
    assert isinstance(backbone, keras_lm.models.LlamaBackbone)
    lm = keras_lm.models.LlamaCausalLM(backbone=backbone)
    ids = random_ids(2, 40, 64)
    ours = np.asarray(lm.predict({"token_ids": ids, "padding_mask": np.ones_like(ids)},
                                 verbose=0))
    with torch.no_grad():
        expected = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)

    prompts = [random_ids(1, n, 64, seed=n)[0] for n in (3, 6)]
    assert_greedy_matches_transformers(lm, reference, prompts, width=16)
