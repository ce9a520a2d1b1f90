"""Hugging Face Mistral (`mistral`) ⇄ MistralBackbone: Llama's map plus the window."""

from keras_lm.presets.conversion import ConversionMap
from keras_lm.presets.hf_llama_like import (  # noqa: F401 - preprocessor_config is API
    linear_rope_factor,
    linear_scaling,
    llama_like_config,
    llama_like_map,
    preprocessor_config,
    refuse,
    rope_theta,
)
from keras_lm.presets.hf_tokenizers import sentencepiece_tokenizer


def BACKBONE_CLASS(hf=None, path=None):
    from keras_lm.models.mistral import MistralBackbone

    return MistralBackbone


def backbone_config(hf: dict) -> dict:
    refuse(hf, "Mistral", {"hidden_act": "silu"})
    return {
        "vocabulary_size": hf["vocab_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_query_heads": hf["num_attention_heads"],
        "hidden_dim": hf["hidden_size"],
        "intermediate_dim": hf["intermediate_size"],
        "num_key_value_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
        "rope_max_wavelength": rope_theta(hf, 10000.0),
        "rope_scaling_factor": linear_rope_factor(hf, "Mistral"),
        "layer_norm_epsilon": hf.get("rms_norm_eps", 1e-6),
        "sliding_window": hf.get("sliding_window"),
        "head_dim": hf.get("head_dim"),
        "tie_word_embeddings": hf.get("tie_word_embeddings", False),
    }


def conversion_map(backbone, keys) -> ConversionMap:
    return llama_like_map(backbone)


def build_tokenizer(cls, path: str, hf: dict, **kwargs):
    return sentencepiece_tokenizer(cls, path, "Mistral", **kwargs)

def hf_config(backbone) -> dict:
    """Our arguments as a Hugging Face `mistral` config."""
    return llama_like_config(
        backbone, "mistral", "MistralForCausalLM", hidden_act="silu",
        rope_theta=float(backbone.rope_max_wavelength), sliding_window=backbone.sliding_window,
        **linear_scaling(backbone.rope_scaling_factor))
