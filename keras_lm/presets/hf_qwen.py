"""Hugging Face Qwen 2 / 2.5 (`qwen2`) and Qwen 3 (`qwen3`) ⇄ QwenBackbone, Qwen3Backbone."""

from keras_lm.presets.conversion import ConversionMap
from keras_lm.presets.hf_llama_like import (
    LLAMA_NORMS,
    QK_NORMS,
    linear_rope_factor,
    linear_scaling,
    llama_like_config,
    llama_like_map,
    refuse,
    rope_theta,
)
from keras_lm.presets.hf_tokenizers import byte_pair_tokenizer


def BACKBONE_CLASS(hf=None, path=None):
    from keras_lm.models.qwen import Qwen3Backbone, QwenBackbone

    return Qwen3Backbone if (hf or {}).get("model_type") == "qwen3" else QwenBackbone


def backbone_config(hf: dict) -> dict:
    qwen3 = hf.get("model_type") == "qwen3"
    refuse(hf, "Qwen", {"hidden_act": "silu", "use_sliding_window": False})
    if qwen3:
        refuse(hf, "Qwen 3", {"attention_bias": False})
    config = {
        "vocabulary_size": hf["vocab_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_query_heads": hf["num_attention_heads"],
        "num_key_value_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
        "hidden_dim": hf["hidden_size"],
        "intermediate_dim": hf["intermediate_size"],
        "rope_max_wavelength": rope_theta(hf, 10000.0),
        "rope_scaling_factor": linear_rope_factor(hf, "Qwen"),
        "layer_norm_epsilon": hf.get("rms_norm_eps", 1e-6),
        "tie_word_embeddings": hf.get("tie_word_embeddings", False),
    }
    if qwen3:
        config["head_dim"] = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    elif hf.get("head_dim") not in (None, hf["hidden_size"] // hf["num_attention_heads"]):
        raise ValueError("Qwen 2 configs with a custom head_dim are not supported.")
    return config


def conversion_map(backbone, keys) -> ConversionMap:
    qwen3 = type(backbone).__name__ == "Qwen3Backbone"
    return llama_like_map(backbone, LLAMA_NORMS + (QK_NORMS if qwen3 else ()),
                          qkv_bias=not qwen3)


def build_tokenizer(cls, path: str, hf: dict, **kwargs):
    return byte_pair_tokenizer(cls, path, "Qwen", **kwargs)


def preprocessor_config(hf: dict) -> dict:
    """Qwen adds no start token."""
    return {"sequence_length": min(hf.get("max_position_embeddings", 2048), 2048),
            "add_start_token": False, "add_end_token": True}

def hf_config(backbone) -> dict:
    """Our arguments as a Hugging Face `qwen2` or `qwen3` config."""
    qwen3 = type(backbone).__name__ == "Qwen3Backbone"
    if getattr(backbone, "use_sliding_window_attention", False):
        raise ValueError("Cannot export a Qwen model that uses sliding-window attention.")
    return llama_like_config(
        backbone, "qwen3" if qwen3 else "qwen2",
        "Qwen3ForCausalLM" if qwen3 else "Qwen2ForCausalLM", hidden_act="silu",
        use_sliding_window=False, rope_theta=float(backbone.rope_max_wavelength),
        **linear_scaling(backbone.rope_scaling_factor))
