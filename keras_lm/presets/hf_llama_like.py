"""The tensor map shared by Hugging Face checkpoints laid out like Llama
(`model.layers.N.self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`, `model.norm`, optional
`lm_head`): Llama, Llama 3, Mistral, Gemma, Gemma 2, Gemma 3, Qwen 2 and Qwen 3 differ only in
their norm names, q/k/v biases and q/k norms."""

from keras_lm.presets.conversion import TRANSPOSED, ConversionMap, reshaped, transposed_to

# Our per-block norm -> theirs, for the Llama family (pre-attention and pre-MLP norms).
LLAMA_NORMS = (("pre_attention_norm", "input_layernorm"),
               ("pre_ffw_norm", "post_attention_layernorm"))
QK_NORMS = (("attention/query_norm", "self_attn.q_norm"),
            ("attention/key_norm", "self_attn.k_norm"))


def llama_like_map(backbone, norms: tuple = LLAMA_NORMS, qkv_bias: bool = False) -> ConversionMap:
    """The tensor map; `norms` pairs our per-block norm names with theirs."""
    n, k, h = backbone.num_query_heads, backbone.num_key_value_heads, backbone.head_dim
    d = backbone.hidden_dim
    m = ConversionMap()
    m.add("token_embedding/embeddings", "model.embed_tokens.weight")
    for i in range(backbone.num_layers):
        ours, theirs = f"transformer_layer_{i}", f"model.layers.{i}"
        for our_norm, their_norm in norms:
            m.add(f"{ours}/{our_norm}/scale", f"{theirs}.{their_norm}.weight")
        for name, proj, heads in (("query", "q", n), ("key", "k", k), ("value", "v", k)):
            m.add(f"{ours}/attention/{name}/kernel", f"{theirs}.self_attn.{proj}_proj.weight",
                  transposed_to((d, heads, h), (d, heads * h)))
            if qkv_bias:
                m.add(f"{ours}/attention/{name}/bias", f"{theirs}.self_attn.{proj}_proj.bias",
                      reshaped((heads, h), (heads * h,)))
        m.add(f"{ours}/attention/attention_output/kernel", f"{theirs}.self_attn.o_proj.weight",
              transposed_to((n, h, d), (n * h, d)))
        for ffw, proj in (("gate", "gate"), ("intermediate", "up"), ("output", "down")):
            m.add(f"{ours}/feedforward/{ffw}/kernel", f"{theirs}.mlp.{proj}_proj.weight",
                  TRANSPOSED)
        m.skipped.add(f"{theirs}.self_attn.rotary_emb.inv_freq")
    m.add("final_norm/scale", "model.norm.weight")
    if backbone.tie_word_embeddings:
        m.skipped.add("lm_head.weight")
    else:
        m.add("token_embedding/reverse_embeddings", "lm_head.weight", TRANSPOSED)
    return m


def rope_theta(hf: dict, default: float) -> float:
    """RoPE base from transformers 5 (`rope_parameters`) or 4.x (`rope_theta`) configs."""
    params = hf.get("rope_parameters") or {}
    return hf.get("rope_theta", params.get("rope_theta", default))


def rope_scaling(hf: dict) -> dict:
    """`{"rope_type", ...}` of a config (empty when RoPE is not scaled)."""
    scaling = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    return {} if kind in (None, "default") else dict(scaling, rope_type=kind)


def linear_rope_factor(hf: dict, family: str) -> float:
    scaling = rope_scaling(hf)
    if not scaling:
        return 1.0
    if scaling["rope_type"] != "linear":
        raise ValueError(f"Unsupported {family} RoPE scaling {scaling['rope_type']!r}.")
    return float(scaling["factor"])


def refuse(hf: dict, family: str, supported: dict) -> None:
    """A clear error for config keys whose value changes the architecture beyond ours."""
    for key, value in supported.items():
        if hf.get(key) is not None and hf[key] != value:
            raise ValueError(f"{family} config has {key}={hf[key]!r}, which is not supported.")


def preprocessor_config(hf: dict) -> dict:
    return {"sequence_length": min(hf.get("max_position_embeddings", 2048), 2048),
            "add_end_token": True}

def llama_like_config(backbone, model_type: str, architecture: str, **extra) -> dict:
    """The Hugging Face config keys every Llama-layout family shares (for export)."""
    config = {
        "model_type": model_type,
        "architectures": [architecture],
        "vocab_size": backbone.vocabulary_size,
        "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_query_heads,
        "num_key_value_heads": backbone.num_key_value_heads,
        "hidden_size": backbone.hidden_dim,
        "intermediate_size": backbone.intermediate_dim,
        "head_dim": backbone.head_dim,
        "rms_norm_eps": backbone.layer_norm_epsilon,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": bool(backbone.tie_word_embeddings),
        "torch_dtype": "float32",
    }
    config.update(extra)
    return config


def linear_scaling(factor: float) -> dict:
    return {} if factor == 1.0 else {"rope_scaling": {"rope_type": "linear",
                                                      "factor": float(factor)}}
