"""The one registry of model families the tests run over: tiny constructor arguments, and
non-default values of every family-specific argument. A family added here joins the
conformance suite (tests/test_conformance.py) on every backend."""

from dataclasses import dataclass

import keras_lm

VOCAB = 40


def tiny_gpt2_backbone(vocabulary_size, **overrides):
    """A 2-layer GPT-2 backbone of width 16; `overrides` replace constructor arguments."""
    args = dict(
        vocabulary_size=vocabulary_size,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=128,
    )
    args.update(overrides)
    return keras_lm.models.GPT2Backbone(**args)


def gpt2_case():
    return keras_lm.models.GPT2Backbone, keras_lm.models.GPT2CausalLM, dict(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24,
        max_sequence_length=96,
    ), dict(dropout=0.25, max_sequence_length=80, intermediate_dim=20, num_heads=4)


def llama_case():
    return keras_lm.models.LlamaBackbone, keras_lm.models.LlamaCausalLM, dict(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=24,
    ), dict(dropout=0.25, tie_word_embeddings=True, rope_max_wavelength=500.0,
            layer_norm_epsilon=1e-5, rope_frequency_adjustment_factor=8.0,
            rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
            rope_pretraining_sequence_length=64)


def gemma3_case():
    return keras_lm.models.Gemma3Backbone, keras_lm.models.Gemma3CausalLM, dict(
        vocabulary_size=VOCAB, num_layers=3, num_query_heads=4, num_key_value_heads=1,
        hidden_dim=16, intermediate_dim=24, head_dim=8, use_post_ffw_norm=True,
        use_post_attention_norm=True, use_sliding_window_attention=True, sliding_window_size=4,
        sliding_window_pattern=3,
    ), dict(dropout=0.25, tie_word_embeddings=False, query_head_dim_normalize=False,
            final_logit_soft_cap=30.0, attention_logit_soft_cap=50.0, global_rope_wavelength=5e4,
            local_rope_scaling_factor=2.0, global_rope_scaling_factor=8.0, sliding_window_size=6)


def opt_case():
    return keras_lm.models.OPTBackbone, keras_lm.models.OPTCausalLM, dict(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24,
        max_sequence_length=96,
    ), dict(dropout=0.25, max_sequence_length=80)


def llama3_case():
    return keras_lm.models.Llama3Backbone, keras_lm.models.Llama3CausalLM, dict(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=24, tie_word_embeddings=True,
    ), dict(tie_word_embeddings=False, rope_max_wavelength=500000.0,
            rope_frequency_adjustment_factor=32.0, rope_low_freq_factor=1.0,
            rope_high_freq_factor=4.0, rope_pretraining_sequence_length=64)


def mistral_case():
    return keras_lm.models.MistralBackbone, keras_lm.models.MistralCausalLM, dict(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=24, sliding_window=4, head_dim=8,
    ), dict(sliding_window=None, rope_scaling_factor=2.0, tie_word_embeddings=True,
            dropout=0.25, layer_norm_epsilon=1e-5)


def gemma_case():
    return keras_lm.models.GemmaBackbone, keras_lm.models.GemmaCausalLM, dict(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=48, head_dim=8, use_post_ffw_norm=True,
        use_post_attention_norm=True, use_sliding_window_attention=True, sliding_window_size=4,
        attention_logit_soft_cap=50.0, final_logit_soft_cap=30.0,
    ), dict(query_head_dim_normalize=False, query_pre_attention_scalar=12.0,
            use_sliding_window_attention=False, dropout=0.25, rope_max_wavelength=500.0)


def qwen_case():
    return keras_lm.models.QwenBackbone, keras_lm.models.QwenCausalLM, dict(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=24,
    ), dict(tie_word_embeddings=False, rope_max_wavelength=1e6, dropout=0.25,
            use_sliding_window_attention=True, sliding_window_size=5)


def qwen3_case():
    return keras_lm.models.Qwen3Backbone, keras_lm.models.Qwen3CausalLM, dict(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        head_dim=8, hidden_dim=16, intermediate_dim=24,
    ), dict(tie_word_embeddings=False, rope_scaling_factor=4.0, dropout=0.25,
            layer_norm_epsilon=1e-5)


FAMILIES = {"gpt2": gpt2_case, "llama": llama_case, "gemma3": gemma3_case, "opt": opt_case,
            "llama3": llama3_case, "mistral": mistral_case, "gemma": gemma_case,
            "qwen": qwen_case, "qwen3": qwen3_case}


@dataclass
class Family:
    backbone_cls: type
    lm_cls: type
    args: dict  # tiny constructor arguments
    non_default: dict  # every family-specific argument at a value other than its default

    def __iter__(self):  # unpacks as (backbone_cls, lm_cls, args, non_default)
        return iter((self.backbone_cls, self.lm_cls, self.args, self.non_default))


def family(name: str) -> Family:
    return Family(*FAMILIES[name]())
