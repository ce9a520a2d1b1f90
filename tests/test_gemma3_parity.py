"""Parity with Hugging Face `transformers` Gemma 3 (text) on tiny random checkpoints."""

import numpy as np
import pytest
import torch

import keras_lm
from tests.conftest import assert_greedy_matches_transformers, parity_matrix, random_ids

pytestmark = pytest.mark.tensorflow

VOCAB = 64


def save_hf_gemma3(path, seed=0, **config):
    import transformers

    args = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                max_position_embeddings=128, query_pre_attn_scalar=16, sliding_window=4,
                layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                rope_parameters={
                    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                    "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                })
    args.update(config)
    torch.manual_seed(seed)
    model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**args)).eval()
    # Random norm weights: the default zeros would hide a wrong (1 + w) convention.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.normal_(0.0, 0.5)
    model.save_pretrained(str(path))
    return model


@pytest.mark.parametrize("config", parity_matrix([
    {},
    {"query_pre_attn_scalar": 24, "final_logit_softcapping": 3.0, "attn_logit_softcapping": 2.0,
     "tie_word_embeddings": False},
    {"rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 50000.0}}},
]))
def test_logits_and_greedy_match_transformers(tmp_path, config):
    reference = save_hf_gemma3(tmp_path, **config)
    backbone = keras_lm.models.Backbone.from_preset(str(tmp_path))
    assert isinstance(backbone, keras_lm.models.Gemma3Backbone)
    lm = keras_lm.models.Gemma3CausalLM(backbone=backbone)
    ids = random_ids(2, 24, VOCAB)
    ours = np.asarray(lm.predict({"token_ids": ids, "padding_mask": np.ones_like(ids)},
                                 verbose=0))
    with torch.no_grad():
        expected = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)

    # Prompts longer than the window, so generation crosses it on local layers.
    prompts = [random_ids(1, n, VOCAB, seed=n)[0] for n in (3, 9)]
    assert_greedy_matches_transformers(lm, reference, prompts, width=12)


def test_irregular_layer_types_are_refused(tmp_path):
    save_hf_gemma3(tmp_path, layer_types=["full_attention", "sliding_attention",
                                          "sliding_attention"])
    with pytest.raises(ValueError, match="layer_types"):
        keras_lm.models.Backbone.from_preset(str(tmp_path))


def test_hugging_face_folder_generates_text_and_stops_at_end_of_turn(tmp_path):
    from tests.conftest import sentencepiece_proto

    proto = sentencepiece_proto(vocab_size=40, eos="<eos>", bos="<bos>",
                                user_defined=("<start_of_turn>", "<end_of_turn>"))
    save_hf_gemma3(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(proto)
    lm = keras_lm.models.CausalLM.from_preset(str(tmp_path))
    assert isinstance(lm, keras_lm.models.Gemma3CausalLM)
    tokenizer = lm.preprocessor.tokenizer
    assert (tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id) == (2, 1, 0)
    end_of_turn = tokenizer.token_to_id("<end_of_turn>")
    assert tokenizer.generation_stop_ids() == (1, end_of_turn)
    assert isinstance(lm.sampler, keras_lm.samplers.GreedySampler)

    out = lm.generate("the quick brown", max_length=16, strip_prompt=True)
    assert isinstance(out, str)

    # A logit bias makes <end_of_turn> the first new token: "auto" stops there, None does not.
    prompt = {"token_ids": np.asarray([[2, 5, 6, 7]], "int32")}
    stopped = lm.generate(prompt, max_length=12, logit_bias={end_of_turn: 100.0})
    assert stopped["padding_mask"][0].sum() == 5
    assert stopped["token_ids"][0, 4] == end_of_turn
    unstopped = lm.generate(prompt, max_length=12, logit_bias={end_of_turn: 100.0},
                            stop_token_ids=None)
    assert unstopped["padding_mask"][0].sum() == 12
