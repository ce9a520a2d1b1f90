"""Pieces shared by Hugging Face checkpoints laid out like Llama (`model.layers.N.self_attn.*`,
`mlp.{gate,up,down}_proj`, `model.norm`, optional `lm_head`) with a SentencePiece tokenizer."""

import os

from keras_lm.presets.conversion import ConversionMap


def llama_like_map(backbone, norms: tuple) -> ConversionMap:
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
        for ffw, proj in (("gate", "gate"), ("intermediate", "up"), ("output", "down")):
            m.add(f"{ours}/feedforward/{ffw}/kernel", f"{theirs}.mlp.{proj}_proj.weight",
                  lambda w: w.T)
        m.skipped.add(f"{theirs}.self_attn.rotary_emb.inv_freq")
    m.add("final_norm/scale", "model.norm.weight")
    if backbone.tie_word_embeddings:
        m.skipped.add("lm_head.weight")
    else:
        m.add("token_embedding/reverse_embeddings", "lm_head.weight", lambda w: w.T)
    return m


def sentencepiece_tokenizer(cls, path: str, family: str, **kwargs):
    model = os.path.join(path, "tokenizer.model")
    if not os.path.isfile(model):
        raise ValueError(f"{path}: {family} needs a SentencePiece tokenizer.model file.")
    return cls(proto=model, **kwargs)


def preprocessor_config(hf: dict) -> dict:
    return {"sequence_length": min(hf.get("max_position_embeddings", 2048), 2048),
            "add_end_token": True}
