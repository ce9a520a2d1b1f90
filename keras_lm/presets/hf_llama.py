"""Hugging Face Llama (`llama`) ⇄ LlamaBackbone, or Llama3Backbone when the folder's tokenizer
is Llama 3's byte-level BPE (`tokenizer.json`, no `tokenizer.model`)."""

import os

from keras_lm.presets.conversion import ConversionMap
from keras_lm.presets.hf_llama_like import (  # noqa: F401 - preprocessor_config is API
    linear_scaling,
    llama_like_config,
    llama_like_map,
    preprocessor_config,
    refuse,
    rope_scaling,
    rope_theta,
)
from keras_lm.presets.hf_tokenizers import byte_pair_tokenizer, sentencepiece_tokenizer


def BACKBONE_CLASS(hf: dict | None = None, path: str | None = None):
    from keras_lm.models.llama import LlamaBackbone
    from keras_lm.models.llama3 import Llama3Backbone

    if path and not os.path.isfile(os.path.join(path, "tokenizer.model")) and \
            os.path.isfile(os.path.join(path, "tokenizer.json")):
        return Llama3Backbone
    return LlamaBackbone


def backbone_config(hf: dict) -> dict:
    refuse(hf, "Llama", {"attention_bias": False, "mlp_bias": False, "hidden_act": "silu"})
    heads = hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, hf["hidden_size"] // heads):
        raise ValueError("Llama configs with a custom head_dim are not supported.")
    config = {
        "vocabulary_size": hf["vocab_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_query_heads": heads,
        "hidden_dim": hf["hidden_size"],
        "intermediate_dim": hf["intermediate_size"],
        "num_key_value_heads": hf.get("num_key_value_heads") or heads,
        "rope_max_wavelength": rope_theta(hf, 10000.0),
        "layer_norm_epsilon": hf.get("rms_norm_eps", 1e-6),
        "tie_word_embeddings": hf.get("tie_word_embeddings", False),
    }
    scaling = rope_scaling(hf)
    if scaling.get("rope_type") == "linear":
        config["rope_position_scaling_factor"] = scaling["factor"]
    elif scaling.get("rope_type") == "llama3":
        config.update(
            rope_frequency_adjustment_factor=scaling["factor"],
            rope_low_freq_factor=scaling["low_freq_factor"],
            rope_high_freq_factor=scaling["high_freq_factor"],
            rope_pretraining_sequence_length=scaling["original_max_position_embeddings"],
        )
    elif scaling:
        raise ValueError(f"Unsupported Llama rope_scaling type {scaling['rope_type']!r}.")
    return config


def conversion_map(backbone, keys) -> ConversionMap:
    return llama_like_map(backbone)


def build_tokenizer(cls, path: str, hf: dict, **kwargs):
    from keras_lm.tokenizers.byte_pair_tokenizer import BytePairTokenizer

    if issubclass(cls, BytePairTokenizer):
        return byte_pair_tokenizer(cls, path, "Llama 3", **kwargs)
    return sentencepiece_tokenizer(cls, path, "Llama", **kwargs)

def hf_config(backbone) -> dict:
    """Our arguments as a Hugging Face `llama` config (the inverse of `backbone_config`)."""
    config = llama_like_config(
        backbone, "llama", "LlamaForCausalLM", hidden_act="silu", attention_bias=False,
        mlp_bias=False, rope_theta=float(backbone.rope_max_wavelength),
        **linear_scaling(backbone.rope_position_scaling_factor))
    if backbone.rope_frequency_adjustment_factor is not None:
        if backbone.rope_position_scaling_factor != 1.0:
            raise ValueError("Cannot export Llama 3 RoPE scaling together with linear scaling.")
        config["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": float(backbone.rope_frequency_adjustment_factor),
            "low_freq_factor": float(backbone.rope_low_freq_factor),
            "high_freq_factor": float(backbone.rope_high_freq_factor),
            "original_max_position_embeddings": int(backbone.rope_pretraining_sequence_length),
        }
    return config
