"""Hugging Face Gemma (`gemma`) and Gemma 2 (`gemma2`) ⇄ GemmaBackbone."""

from keras_lm.presets.conversion import ConversionMap
from keras_lm.presets.hf_llama_like import (  # noqa: F401 - preprocessor_config is API
    LLAMA_NORMS,
    linear_rope_factor,
    llama_like_config,
    llama_like_map,
    preprocessor_config,
    refuse,
    rope_theta,
)
from keras_lm.presets.hf_tokenizers import sentencepiece_tokenizer

GEMMA2_NORMS = (("pre_attention_norm", "input_layernorm"),
                ("post_attention_norm", "post_attention_layernorm"),
                ("pre_ffw_norm", "pre_feedforward_layernorm"),
                ("post_ffw_norm", "post_feedforward_layernorm"))


def BACKBONE_CLASS(hf=None, path=None):
    from keras_lm.models.gemma import GemmaBackbone

    return GemmaBackbone


def backbone_config(hf: dict) -> dict:
    gemma2 = hf.get("model_type") == "gemma2"
    refuse(hf, "Gemma", {"attention_bias": False, "hidden_activation": "gelu_pytorch_tanh"})
    if linear_rope_factor(hf, "Gemma") != 1.0:
        raise ValueError("Gemma checkpoints with scaled RoPE are not supported.")
    head_dim = hf.get("head_dim", 256)
    return {
        "vocabulary_size": hf["vocab_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_query_heads": hf["num_attention_heads"],
        "num_key_value_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
        "hidden_dim": hf["hidden_size"],
        "intermediate_dim": 2 * hf["intermediate_size"],  # KerasHub's convention
        "head_dim": head_dim,
        "query_pre_attention_scalar": hf.get("query_pre_attn_scalar", head_dim),
        "use_post_ffw_norm": gemma2,
        "use_post_attention_norm": gemma2,
        "attention_logit_soft_cap": hf.get("attn_logit_softcapping") if gemma2 else None,
        "final_logit_soft_cap": hf.get("final_logit_softcapping") if gemma2 else None,
        "use_sliding_window_attention": gemma2 and bool(hf.get("sliding_window")),
        "sliding_window_size": hf.get("sliding_window") or 4096,
        "layer_norm_epsilon": hf.get("rms_norm_eps", 1e-6),
        "rope_max_wavelength": rope_theta(hf, 10000.0),
    }


def conversion_map(backbone, keys) -> ConversionMap:
    norms = GEMMA2_NORMS if backbone.use_post_ffw_norm else LLAMA_NORMS
    return llama_like_map(backbone, norms)


def build_tokenizer(cls, path: str, hf: dict, **kwargs):
    return sentencepiece_tokenizer(cls, path, "Gemma", **kwargs)

def layer_types(backbone) -> list[str]:
    """Hugging Face's per-layer attention kinds, from our decoder's sliding-window layers."""
    options = backbone._arguments.decoder_options()
    windowed = options.sliding_window_layers or (True,) * backbone.num_layers
    return ["sliding_attention" if w and options.sliding_window else "full_attention"
            for w in windowed]


def query_scalar(backbone) -> float | int:
    """Hugging Face's `query_pre_attn_scalar`: queries are scaled by its inverse square root."""
    scalar = getattr(backbone, "query_pre_attention_scalar", None)
    if scalar is None:
        scalar = backbone.head_dim if backbone.query_head_dim_normalize \
            else backbone.hidden_dim / backbone.num_query_heads
    return int(scalar) if float(scalar).is_integer() else float(scalar)


def hf_config(backbone) -> dict:
    """Our arguments as a Hugging Face `gemma` (or `gemma2`, with post-norms) config."""
    gemma2 = bool(backbone.use_post_ffw_norm)
    if gemma2 != bool(backbone.use_post_attention_norm):
        raise ValueError("Cannot export a Gemma model with only one of the two post-norms.")
    config = llama_like_config(
        backbone, "gemma2" if gemma2 else "gemma",
        "Gemma2ForCausalLM" if gemma2 else "GemmaForCausalLM",
        intermediate_size=backbone.intermediate_dim // 2,  # KerasHub counts both halves
        hidden_activation="gelu_pytorch_tanh", attention_bias=False,
        rope_theta=float(backbone.rope_max_wavelength), tie_word_embeddings=True,
        query_pre_attn_scalar=query_scalar(backbone))
    if gemma2:
        config.update(attn_logit_softcapping=backbone.attention_logit_soft_cap,
                      final_logit_softcapping=backbone.final_logit_soft_cap,
                      sliding_window=backbone.sliding_window_size,
                      layer_types=layer_types(backbone))
    elif backbone.attention_logit_soft_cap or backbone.final_logit_soft_cap or \
            backbone.use_sliding_window_attention:
        raise ValueError("Gemma 1 has no soft-caps or sliding windows; this model cannot be "
                         "exported as one (give it post-norms to export it as Gemma 2).")
    return config
