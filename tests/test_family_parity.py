"""Parity with `transformers` for OPT, Llama 3, Mistral, Gemma, Gemma 2, Qwen 2 and Qwen 3, on
tiny random checkpoints whose configs exercise each family's quirks."""

import numpy as np
import pytest
import torch

import keras_lm
from tests.conftest import assert_greedy_matches_transformers, parity_matrix, random_ids

pytestmark = pytest.mark.tensorflow

VOCAB = 64
LLAMA_LIKE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def _model(kind: str, **config):
    import transformers

    classes = {
        "opt": (transformers.OPTConfig, transformers.OPTForCausalLM),
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
        "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }
    config_cls, model_cls = classes[kind]
    torch.manual_seed(0)
    model = model_cls(config_cls(**config)).eval()
    with torch.no_grad():  # random norms and biases: zeros/ones would hide a wrong convention
        for name, parameter in model.named_parameters():
            if "norm" in name or "bias" in name:
                parameter.normal_(0.0, 0.5)
    return model


CASES = {
    "opt": [("opt", dict(vocab_size=VOCAB, hidden_size=32, ffn_dim=48, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=64,
                          word_embed_proj_dim=32, pad_token_id=1))],
    "llama3": [("llama", dict(LLAMA_LIKE, tie_word_embeddings=True, rope_theta=500000.0,
                              rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 16}))],
    "mistral": [
        ("mistral", dict(LLAMA_LIKE, sliding_window=4, head_dim=16)),  # window < prompt
        ("mistral", dict(LLAMA_LIKE, sliding_window=None, tie_word_embeddings=True)),
    ],
    "gemma": [
        ("gemma", dict(LLAMA_LIKE, num_key_value_heads=1, head_dim=16)),  # MQA, Gemma 1
        ("gemma2", dict(LLAMA_LIKE, head_dim=16, sliding_window=4, query_pre_attn_scalar=24,
                        attn_logit_softcapping=2.0, final_logit_softcapping=3.0)),
    ],
    "qwen": [
        ("qwen2", dict(LLAMA_LIKE, tie_word_embeddings=False)),  # q/k/v biases
        ("qwen2", dict(LLAMA_LIKE, tie_word_embeddings=True, rope_theta=1e6)),
    ],
    "qwen3": [("qwen3", dict(LLAMA_LIKE, head_dim=16, tie_word_embeddings=False))],
}
EXPECTED = {"opt": "OPTBackbone", "llama3": "LlamaBackbone", "mistral": "MistralBackbone",
            "gemma": "GemmaBackbone", "qwen": "QwenBackbone", "qwen3": "Qwen3Backbone"}


def _cases():
    out = []
    for family, configs in CASES.items():
        for index, (kind, config) in enumerate(parity_matrix(configs)):
            out.append(pytest.param(family, kind, config, id=f"{family}-{kind}-{index}"))
    return out


@pytest.mark.parametrize("family,kind,config", _cases())
def test_logits_and_greedy_match_transformers(tmp_path, family, kind, config):
    reference = _model(kind, **config)
    reference.save_pretrained(str(tmp_path))
    backbone = keras_lm.models.Backbone.from_preset(str(tmp_path))
    assert type(backbone).__name__ == EXPECTED[family]
    lm_cls = keras_lm.models.CausalLM
    lm = next(c for c in _all(lm_cls) if c.backbone_cls is type(backbone))(backbone=backbone)
    ids = random_ids(2, 12, VOCAB)
    ours = np.asarray(lm.predict({"token_ids": ids, "padding_mask": np.ones_like(ids)},
                                 verbose=0))
    with torch.no_grad():
        expected = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    prompts = [random_ids(1, n, VOCAB, seed=n)[0] for n in (3, 7)]  # ragged, past windows of 4
    assert_greedy_matches_transformers(lm, reference, prompts, width=12)


def _all(cls):
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all(sub))
    return out


@pytest.mark.parametrize("config,match", [
    (dict(do_layer_norm_before=False), "do_layer_norm_before"),
    (dict(word_embed_proj_dim=16), "word_embed_proj_dim"),
])
def test_opt_configs_we_do_not_model_are_refused(tmp_path, config, match):
    kind, base = CASES["opt"][0]
    _model(kind, **dict(base, **config)).save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match=match):
        keras_lm.models.Backbone.from_preset(str(tmp_path))
