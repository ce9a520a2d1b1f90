"""Hugging Face Llama ⇄ LlamaBackbone: config translation and the tensor map."""

import os

from keras_lm.presets.conversion import ConversionMap

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
    n, k, h = backbone.num_query_heads, backbone.num_key_value_heads, backbone.head_dim
    d = backbone.hidden_dim
    m = ConversionMap()
    m.add("token_embedding/embeddings", "model.embed_tokens.weight")
    for i in range(backbone.num_layers):
        ours, theirs = f"transformer_layer_{i}", f"model.layers.{i}"
        m.add(f"{ours}/pre_attention_norm/scale", f"{theirs}.input_layernorm.weight")
        m.add(f"{ours}/pre_ffw_norm/scale", f"{theirs}.post_attention_layernorm.weight")
        for name, proj, heads in (("query", "q", n), ("key", "k", k), ("value", "v", k)):
            m.add(
                f"{ours}/attention/{name}/kernel",
                f"{theirs}.self_attn.{proj}_proj.weight",
                lambda w, heads=heads: w.T.reshape(d, heads, h),
            )
        m.add(
            f"{ours}/attention/attention_output/kernel",
            f"{theirs}.self_attn.o_proj.weight",
            lambda w: w.T.reshape(n, h, d),
        )
        m.add(f"{ours}/feedforward/gate/kernel", f"{theirs}.mlp.gate_proj.weight", lambda w: w.T)
        m.add(
            f"{ours}/feedforward/intermediate/kernel", f"{theirs}.mlp.up_proj.weight",
            lambda w: w.T,
        )
        m.add(
            f"{ours}/feedforward/output/kernel", f"{theirs}.mlp.down_proj.weight", lambda w: w.T
        )
        m.skipped.add(f"{theirs}.self_attn.rotary_emb.inv_freq")
    m.add("final_norm/scale", "model.norm.weight")
    if backbone.tie_word_embeddings:
        m.skipped.add("lm_head.weight")
    else:
        m.add("token_embedding/reverse_embeddings", "lm_head.weight", lambda w: w.T)
    return m


def build_tokenizer(cls, path: str, hf: dict, **kwargs):
    model = os.path.join(path, "tokenizer.model")
    if not os.path.isfile(model):
        raise ValueError(f"{path}: Llama needs a SentencePiece tokenizer.model file.")
    return cls(proto=model, **kwargs)


def preprocessor_config(hf: dict) -> dict:
    return {"sequence_length": min(hf.get("max_position_embeddings", 2048), 2048),
            "add_end_token": True}
