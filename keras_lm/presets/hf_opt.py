"""Hugging Face OPT (`opt`) ⇄ OPTBackbone. Hugging Face keeps two unused rows at the start of
the position table (positions are offset by 2); KerasHub's table starts at position 0."""

from keras_lm.presets.conversion import (
    TRANSPOSED,
    ConversionMap,
    reshaped,
    rows_after,
    transposed_to,
)
from keras_lm.presets.hf_tokenizers import byte_pair_tokenizer

POSITION_OFFSET = 2


def BACKBONE_CLASS(hf=None, path=None):
    from keras_lm.models.opt import OPTBackbone

    return OPTBackbone


def backbone_config(hf: dict) -> dict:
    if not hf.get("do_layer_norm_before", True):
        raise ValueError("OPT with do_layer_norm_before=False (post-norm, OPT-350m) is not "
                         "supported.")
    if hf.get("word_embed_proj_dim", hf["hidden_size"]) != hf["hidden_size"]:
        raise ValueError("OPT with word_embed_proj_dim != hidden_size (projected embeddings) "
                         "is not supported.")
    if hf.get("activation_function", "relu") != "relu":
        raise ValueError(f"OPT activation {hf['activation_function']!r} is not supported.")
    if hf.get("_remove_final_layer_norm") or not hf.get("enable_bias", True):
        raise ValueError("OPT without the final layer norm or without biases is not supported.")
    return {
        "vocabulary_size": hf["vocab_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_heads": hf["num_attention_heads"],
        "hidden_dim": hf["hidden_size"],
        "intermediate_dim": hf["ffn_dim"],
        "dropout": hf.get("dropout", 0.1),
        "max_sequence_length": hf["max_position_embeddings"],
    }


def conversion_map(backbone, keys) -> ConversionMap:
    prefix = "model.decoder"
    n, h, d = backbone.num_query_heads, backbone.head_dim, backbone.hidden_dim
    m = ConversionMap()
    m.add("token_embedding/embeddings", f"{prefix}.embed_tokens.weight")
    m.add("position_embedding/embeddings", f"{prefix}.embed_positions.weight",
          rows_after(POSITION_OFFSET))
    for i in range(backbone.num_layers):
        ours, theirs = f"transformer_layer_{i}", f"{prefix}.layers.{i}"
        for norm, their_norm in (("pre_attention_norm", "self_attn_layer_norm"),
                                 ("pre_ffw_norm", "final_layer_norm")):
            m.add(f"{ours}/{norm}/gamma", f"{theirs}.{their_norm}.weight")
            m.add(f"{ours}/{norm}/beta", f"{theirs}.{their_norm}.bias")
        for name, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            m.add(f"{ours}/attention/{name}/kernel", f"{theirs}.self_attn.{proj}.weight",
                  transposed_to((d, n, h), (d, n * h)))
            m.add(f"{ours}/attention/{name}/bias", f"{theirs}.self_attn.{proj}.bias",
                  reshaped((n, h), (n * h,)))
        m.add(f"{ours}/attention/attention_output/kernel", f"{theirs}.self_attn.out_proj.weight",
              transposed_to((n, h, d), (n * h, d)))
        m.add(f"{ours}/attention/attention_output/bias", f"{theirs}.self_attn.out_proj.bias")
        for ffw, fc in (("intermediate", "fc1"), ("output", "fc2")):
            m.add(f"{ours}/feedforward/{ffw}/kernel", f"{theirs}.{fc}.weight", TRANSPOSED)
            m.add(f"{ours}/feedforward/{ffw}/bias", f"{theirs}.{fc}.bias")
    m.add("final_norm/gamma", f"{prefix}.final_layer_norm.weight")
    m.add("final_norm/beta", f"{prefix}.final_layer_norm.bias")
    m.skipped.add("lm_head.weight")  # tied to the token embedding
    return m


def build_tokenizer(cls, path: str, hf: dict, **kwargs):
    return byte_pair_tokenizer(cls, path, "OPT", **kwargs)


def preprocessor_config(hf: dict) -> dict:
    return {"sequence_length": min(hf.get("max_position_embeddings", 2048), 2048)}

def hf_config(backbone) -> dict:
    """Our arguments as a Hugging Face `opt` config."""
    return {
        "model_type": "opt", "architectures": ["OPTForCausalLM"],
        "vocab_size": backbone.vocabulary_size, "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_heads, "hidden_size": backbone.hidden_dim,
        "word_embed_proj_dim": backbone.hidden_dim, "ffn_dim": backbone.intermediate_dim,
        "max_position_embeddings": backbone.max_sequence_length,
        "do_layer_norm_before": True, "activation_function": "relu", "enable_bias": True,
        "dropout": backbone.dropout, "tie_word_embeddings": True, "torch_dtype": "float32",
    }
