"""Hugging Face Llama ⇄ LlamaBackbone: config translation and the tensor map."""

from keras_lm.presets.conversion import ConversionMap
from keras_lm.presets.hf_llama_like import (  # noqa: F401 - preprocessor_config is API
    llama_like_map,
    preprocessor_config,
    sentencepiece_tokenizer,
)

UNSUPPORTED = {"attention_bias": False, "mlp_bias": False, "hidden_act": "silu"}


def BACKBONE_CLASS():
    from keras_lm.models.llama import LlamaBackbone

    return LlamaBackbone


def backbone_config(hf: dict) -> dict:
    for key, supported in UNSUPPORTED.items():
        if hf.get(key, supported) != supported:
            raise ValueError(f"Llama config has {key}={hf[key]!r}, which is not supported.")
    heads = hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, hf["hidden_size"] // heads):
        raise ValueError("Llama configs with a custom head_dim are not supported.")
    # transformers 5 writes `rope_parameters` (theta included); 4.x `rope_theta` + `rope_scaling`.
    rope = hf.get("rope_parameters") or {}
    config = {
        "vocabulary_size": hf["vocab_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_query_heads": heads,
        "hidden_dim": hf["hidden_size"],
        "intermediate_dim": hf["intermediate_size"],
        "num_key_value_heads": hf.get("num_key_value_heads") or heads,
        "rope_max_wavelength": hf.get("rope_theta", rope.get("rope_theta", 10000.0)),
        "layer_norm_epsilon": hf.get("rms_norm_eps", 1e-6),
        "tie_word_embeddings": hf.get("tie_word_embeddings", False),
    }
    scaling = hf.get("rope_scaling") or rope
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        config["rope_position_scaling_factor"] = scaling["factor"]
    elif kind == "llama3":
        config.update(
            rope_frequency_adjustment_factor=scaling["factor"],
            rope_low_freq_factor=scaling["low_freq_factor"],
            rope_high_freq_factor=scaling["high_freq_factor"],
            rope_pretraining_sequence_length=scaling["original_max_position_embeddings"],
        )
    elif kind not in (None, "default"):
        raise ValueError(f"Unsupported Llama rope_scaling type {kind!r}.")
    return config


def conversion_map(backbone, keys) -> ConversionMap:
    return llama_like_map(backbone, (
        ("pre_attention_norm", "input_layernorm"),
        ("pre_ffw_norm", "post_attention_layernorm"),
    ))


def build_tokenizer(cls, path: str, hf: dict, **kwargs):
    return sentencepiece_tokenizer(cls, path, "Llama", **kwargs)
