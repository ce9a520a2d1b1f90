"""Hugging Face Gemma 3 text (`gemma3_text`) ⇄ Gemma3Backbone: config and tensor map."""

from keras_lm.presets.conversion import ConversionMap
from keras_lm.presets.hf_llama_like import (  # noqa: F401 - preprocessor_config is API
    QK_NORMS,
    llama_like_config,
    llama_like_map,
    preprocessor_config,
)
from keras_lm.presets.hf_tokenizers import sentencepiece_tokenizer


def BACKBONE_CLASS(hf=None, path=None):
    from keras_lm.models.gemma3 import Gemma3Backbone

    return Gemma3Backbone


def _sliding_pattern(hf: dict) -> tuple[bool, int]:
    """`(use_sliding_window_attention, pattern)` from `layer_types` or the older pattern key."""
    layer_types = hf.get("layer_types")
    if not layer_types:
        pattern = hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or 6
        return bool(hf.get("sliding_window")), int(pattern)
    local = [kind == "sliding_attention" for kind in layer_types]
    if not any(local):
        return False, 6
    pattern = local.index(False) + 1 if False in local else len(local) + 1
    expected = [(i + 1) % pattern != 0 for i in range(len(local))]
    if local != expected:
        raise ValueError(
            "Gemma 3 layer_types must repeat (sliding × N, full); this checkpoint has "
            f"{layer_types}, which is not supported."
        )
    return True, pattern


def _rope(hf: dict) -> dict:
    """RoPE wavelengths and linear scaling factors, from transformers 5 or 4.x config keys."""
    params = hf.get("rope_parameters") or {}
    full = params.get("full_attention", params if "rope_theta" in params else {})
    local = params.get("sliding_attention", {})
    scaling = hf.get("rope_scaling") or full
    out = {
        "global_rope_wavelength": full.get("rope_theta", hf.get("rope_theta", 1_000_000.0)),
        "local_rope_wavelength": local.get(
            "rope_theta", hf.get("rope_local_base_freq", 10_000.0)
        ),
    }
    scalings = (("global_rope_scaling_factor", scaling), ("local_rope_scaling_factor", local))
    for key, rope in scalings:
        kind = rope.get("rope_type", rope.get("type"))
        if kind == "linear":
            out[key] = rope["factor"]
        elif kind not in (None, "default"):
            raise ValueError(f"Unsupported Gemma 3 RoPE type {kind!r}.")
    return out


def backbone_config(hf: dict) -> dict:
    if hf.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        raise ValueError(f"Gemma 3 config has hidden_activation={hf['hidden_activation']!r}.")
    if hf.get("attention_bias") or hf.get("use_bidirectional_attention"):
        raise ValueError(
            "Gemma 3 with attention biases or bidirectional attention is not supported."
        )
    use_sliding, pattern = _sliding_pattern(hf)
    return {
        "vocabulary_size": hf["vocab_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_query_heads": hf["num_attention_heads"],
        "num_key_value_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
        "hidden_dim": hf["hidden_size"],
        "intermediate_dim": hf["intermediate_size"],
        "head_dim": hf.get("head_dim", 256),
        "query_pre_attention_scalar": hf.get("query_pre_attn_scalar", 256),
        "use_post_ffw_norm": True,
        "use_post_attention_norm": True,
        # transformers' Gemma 3 attention never applies `attn_logit_softcapping`; neither do we.
        "attention_logit_soft_cap": None,
        "final_logit_soft_cap": hf.get("final_logit_softcapping"),
        "use_sliding_window_attention": use_sliding,
        "sliding_window_size": hf.get("sliding_window") or 4096,
        "sliding_window_pattern": pattern,
        "layer_norm_epsilon": hf.get("rms_norm_eps", 1e-6),
        "tie_word_embeddings": hf.get("tie_word_embeddings", True),
        **_rope(hf),
    }


def conversion_map(backbone, keys) -> ConversionMap:
    from keras_lm.presets.hf_gemma import GEMMA2_NORMS

    return llama_like_map(backbone, GEMMA2_NORMS + QK_NORMS)


def build_tokenizer(cls, path: str, hf: dict, **kwargs):
    return sentencepiece_tokenizer(cls, path, "Gemma 3", **kwargs)

def hf_config(backbone) -> dict:
    """Our arguments as a Hugging Face `gemma3_text` config."""
    from keras_lm.presets.hf_gemma import layer_types, query_scalar

    if not (backbone.use_post_ffw_norm and backbone.use_post_attention_norm
            and backbone.use_query_key_norm):
        raise ValueError("Hugging Face's Gemma 3 always has post-norms and q/k norms.")
    if backbone.attention_logit_soft_cap is not None or backbone.local_rope_scaling_factor != 1:
        raise ValueError("Hugging Face's Gemma 3 has no attention soft-cap and no local RoPE "
                         "scaling; this model cannot be exported.")
    config = llama_like_config(
        backbone, "gemma3_text", "Gemma3ForCausalLM", hidden_activation="gelu_pytorch_tanh",
        attention_bias=False, query_pre_attn_scalar=query_scalar(backbone),
        final_logit_softcapping=backbone.final_logit_soft_cap,
        sliding_window=backbone.sliding_window_size, layer_types=layer_types(backbone),
        rope_theta=float(backbone.global_rope_wavelength),
        rope_local_base_freq=float(backbone.local_rope_wavelength))
    if backbone.global_rope_scaling_factor != 1:
        config["rope_scaling"] = {"rope_type": "linear",
                                  "factor": float(backbone.global_rope_scaling_factor)}
    return config
