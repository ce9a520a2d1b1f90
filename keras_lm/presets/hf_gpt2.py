"""Hugging Face GPT-2 ⇄ GPT2Backbone: config translation and the tensor map."""

from keras_lm.presets.conversion import ConversionMap, column_part, reshaped
from keras_lm.presets.hf_tokenizers import byte_pair_tokenizer

# Config keys that change the architecture in ways GPT2Backbone does not implement.
UNSUPPORTED = {
    "add_cross_attention": False,
    "scale_attn_by_inverse_layer_idx": False,
}


def BACKBONE_CLASS(hf=None, path=None):
    from keras_lm.models.gpt2 import GPT2Backbone

    return GPT2Backbone


def backbone_config(hf: dict) -> dict:
    for key, supported in UNSUPPORTED.items():
        if hf.get(key, supported) != supported:
            raise ValueError(f"GPT-2 config has {key}={hf[key]!r}, which is not supported.")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"Unsupported GPT-2 activation {hf['activation_function']!r}")
    if abs(hf.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
        raise ValueError("GPT2Backbone uses layer_norm_epsilon=1e-5.")
    hidden = hf["n_embd"]
    return {
        "vocabulary_size": hf["vocab_size"],
        "num_layers": hf["n_layer"],
        "num_heads": hf["n_head"],
        "hidden_dim": hidden,
        "intermediate_dim": hf.get("n_inner") or 4 * hidden,
        "dropout": hf.get("resid_pdrop", 0.1),
        "max_sequence_length": hf["n_positions"],
    }


def conversion_map(backbone, keys) -> ConversionMap:
    prefix = "transformer." if any(k.startswith("transformer.") for k in keys) else ""
    heads, hidden = backbone.num_heads, backbone.hidden_dim
    head_dim = hidden // heads
    m = ConversionMap()
    m.add("token_embedding/embeddings", f"{prefix}wte.weight")
    m.add("position_embedding/embeddings", f"{prefix}wpe.weight")
    for i in range(backbone.num_layers):
        ours, theirs = f"transformer_layer_{i}", f"{prefix}h.{i}"
        m.add(f"{ours}/pre_attention_norm/gamma", f"{theirs}.ln_1.weight")
        m.add(f"{ours}/pre_attention_norm/beta", f"{theirs}.ln_1.bias")
        for j, name in enumerate(("query", "key", "value")):
            m.add(f"{ours}/attention/{name}/kernel", f"{theirs}.attn.c_attn.weight",
                  column_part(3, j, (hidden, heads, head_dim), (hidden, hidden)))
            m.add(f"{ours}/attention/{name}/bias", f"{theirs}.attn.c_attn.bias",
                  column_part(3, j, (heads, head_dim), (hidden,)))
        m.add(f"{ours}/attention/attention_output/kernel", f"{theirs}.attn.c_proj.weight",
              reshaped((heads, head_dim, hidden), (hidden, hidden)))
        m.add(f"{ours}/attention/attention_output/bias", f"{theirs}.attn.c_proj.bias")
        m.add(f"{ours}/pre_ffw_norm/gamma", f"{theirs}.ln_2.weight")
        m.add(f"{ours}/pre_ffw_norm/beta", f"{theirs}.ln_2.bias")
        m.add(f"{ours}/feedforward/intermediate/kernel", f"{theirs}.mlp.c_fc.weight")
        m.add(f"{ours}/feedforward/intermediate/bias", f"{theirs}.mlp.c_fc.bias")
        m.add(f"{ours}/feedforward/output/kernel", f"{theirs}.mlp.c_proj.weight")
        m.add(f"{ours}/feedforward/output/bias", f"{theirs}.mlp.c_proj.bias")
        m.skipped |= {f"{theirs}.attn.bias", f"{theirs}.attn.masked_bias"}
    m.add("final_norm/gamma", f"{prefix}ln_f.weight")
    m.add("final_norm/beta", f"{prefix}ln_f.bias")
    m.skipped.add("lm_head.weight")  # tied to wte
    return m


def build_tokenizer(cls, path: str, hf: dict, **kwargs):
    return byte_pair_tokenizer(cls, path, "GPT-2", **kwargs)


def preprocessor_config(hf: dict) -> dict:
    return {"sequence_length": min(hf.get("n_positions", 1024), 1024)}

def hf_config(backbone) -> dict:
    """Our arguments as a Hugging Face `gpt2` config."""
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": backbone.vocabulary_size, "n_layer": backbone.num_layers,
        "n_head": backbone.num_heads, "n_embd": backbone.hidden_dim,
        "n_inner": backbone.intermediate_dim, "n_positions": backbone.max_sequence_length,
        "resid_pdrop": backbone.dropout, "embd_pdrop": backbone.dropout,
        "attn_pdrop": backbone.dropout, "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new", "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
