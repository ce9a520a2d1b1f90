"""KerasHub's weight layout, as data: where each of our layers' variables sit in the
`model.weights.h5` that KerasHub's `save_to_preset` writes, and the layer path its
`DTypePolicyMap` names them by.

Keras writes a layer's variables to `<group>/vars/<i>`, with the group named after the
attribute path and class of KerasHub's own layers (`layers/llama_transformer_decoder_1/
_self_attention_layer/_query_dense`). Our layers hold the same variables in the same order (the
quantized ones included), so one row per layer is the whole map: our sublayer path, KerasHub's
group under the block, KerasHub's layer path under the block. Gemma's q/k/v kernels are the one
tensor stored in another axis order.
"""

from dataclasses import dataclass, field

# Blocks built like KerasHub's `TransformerDecoder` (GPT-2, OPT).
TRANSFORMER_DECODER = {
    "pre_attention_norm": ("_self_attention_layer_norm", None),
    "attention/query": ("_self_attention_layer/query_dense", "self_attention/query"),
    "attention/key": ("_self_attention_layer/key_dense", "self_attention/key"),
    "attention/value": ("_self_attention_layer/value_dense", "self_attention/value"),
    "attention/attention_output": ("_self_attention_layer/output_dense",
                                   "self_attention/attention_output"),
    "pre_ffw_norm": ("_feedforward_layer_norm", None),
    "feedforward/intermediate": ("_feedforward_intermediate_dense",
                                 "feedforward_intermediate_dense"),
    "feedforward/output": ("_feedforward_output_dense", "feedforward_output_dense"),
}

# Llama, Llama 3, Mistral, Qwen and Qwen 3 blocks.
LLAMA_DECODER = {
    "pre_attention_norm": ("_self_attention_layernorm", None),
    "attention/query": ("_self_attention_layer/_query_dense", "self_attention/query"),
    "attention/key": ("_self_attention_layer/_key_dense", "self_attention/key"),
    "attention/value": ("_self_attention_layer/_value_dense", "self_attention/value"),
    "attention/attention_output": ("_self_attention_layer/_output_dense",
                                   "self_attention/attention_output"),
    "attention/query_norm": ("_self_attention_layer/_query_dense_layer_norm", None),
    "attention/key_norm": ("_self_attention_layer/_key_dense_layer_norm", None),
    "pre_ffw_norm": ("_feedforward_layernorm", None),
    "feedforward/gate": ("_feedforward_gate_dense", "feedforward_gate_dense"),
    "feedforward/intermediate": ("_feedforward_intermediate_dense",
                                 "feedforward_intermediate_dense"),
    "feedforward/output": ("_feedforward_output_dense", "feedforward_output_dense"),
}

# Gemma, Gemma 2 and Gemma 3 blocks.
GEMMA_DECODER = {
    "pre_attention_norm": ("pre_attention_norm", None),
    "post_attention_norm": ("post_attention_norm", None),
    "attention/query": ("attention/query_dense", "attention/query"),
    "attention/key": ("attention/key_dense", "attention/key"),
    "attention/value": ("attention/value_dense", "attention/value"),
    "attention/attention_output": ("attention/output_dense", "attention/attention_output"),
    "attention/query_norm": ("attention/query_norm", None),
    "attention/key_norm": ("attention/key_norm", None),
    "pre_ffw_norm": ("pre_ffw_norm", None),
    "post_ffw_norm": ("post_ffw_norm", None),
    "feedforward/gate": ("gating_ffw", "ffw_gating"),
    "feedforward/intermediate": ("gating_ffw_2", "ffw_gating_2"),
    "feedforward/output": ("ffw_linear", "ffw_linear"),
}
# KerasHub's GPT-2/OPT/Llama-style MLPs are `Dense` layers, whose int8 scales are flat.
DENSE_FEEDFORWARD = ("feedforward/gate", "feedforward/intermediate", "feedforward/output")
# KerasHub keeps Gemma's q/k/v kernels as [heads, hidden, head_dim]; ours are
# [hidden, heads, head_dim].
GEMMA_HEAD_MAJOR = ("attention/query", "attention/key", "attention/value")


@dataclass(frozen=True)
class Layout:
    """Where a family's layers sit in KerasHub's weights file."""

    block: str  # group of block 0; block i adds "_i"
    final_norm: str
    sublayers: dict
    block_path: str = "transformer_layer"  # KerasHub's layer path of block i: f"{...}_{i}"
    embedding: str = "reversible_embedding"
    embedding_path: str = "token_embedding"
    position: str = "position_embedding"
    head_major: tuple = field(default=())
    dense: tuple = DENSE_FEEDFORWARD


LAYOUTS = {
    "GPT2Backbone": Layout("transformer_decoder", "layer_normalization", TRANSFORMER_DECODER),
    "OPTBackbone": Layout(
        "transformer_decoder", "layer_normalization", TRANSFORMER_DECODER,
        embedding="token_and_position_embedding/token_embedding",
        embedding_path="embeddings/token_embedding",
        position="token_and_position_embedding/position_embedding"),
    "LlamaBackbone": Layout("llama_transformer_decoder", "llama_layer_norm", LLAMA_DECODER),
    "Llama3Backbone": Layout("llama_transformer_decoder", "llama_layer_norm", LLAMA_DECODER),
    "MistralBackbone": Layout("mistral_transformer_decoder", "mistral_layer_normalization",
                              LLAMA_DECODER),
    "QwenBackbone": Layout("qwen_transformer_decoder", "qwen_layer_norm", LLAMA_DECODER),
    "Qwen3Backbone": Layout("qwen3_transformer_decoder", "qwen3_layer_norm", LLAMA_DECODER),
    "GemmaBackbone": Layout("gemma_decoder_block", "rms_normalization", GEMMA_DECODER,
                            block_path="decoder_block", head_major=GEMMA_HEAD_MAJOR, dense=()),
    "Gemma3Backbone": Layout("gemma3_decoder_block", "rms_normalization", GEMMA_DECODER,
                             block_path="decoder_block", head_major=GEMMA_HEAD_MAJOR, dense=()),
}


@dataclass(frozen=True)
class Row:
    layer: object  # our layer
    group: str  # KerasHub's h5 group (without "/vars")
    path: str  # KerasHub's layer path (the key of its DTypePolicyMap)
    head_major: bool = False
    dense: bool = False  # a Keras `Dense` in KerasHub: 1-D quantization scales


def has_layout(backbone_cls) -> bool:
    """Whether KerasHub's layout is known for this backbone class (a user's own
    `DecoderBackbone` subclass has none; it is saved in Keras' own layout)."""
    return any(cls.__name__ in LAYOUTS for cls in backbone_cls.__mro__)


def layout_of(backbone) -> Layout:
    """The layout of a backbone (or backbone class)."""
    kind = backbone if isinstance(backbone, type) else type(backbone)
    for cls in kind.__mro__:
        if cls.__name__ in LAYOUTS:
            return LAYOUTS[cls.__name__]
    raise ValueError(f"KerasHub's weight layout is not known for {kind.__name__}.")


def _numbered(name: str, i: int) -> str:
    return name if i == 0 else f"{name}_{i}"


def rows(backbone) -> list[Row]:
    """One row per layer of `backbone` that owns variables."""
    layout = layout_of(backbone)
    out = []
    for layer in backbone._flatten_layers(include_self=False):
        if not layer._trainable_variables and not layer._non_trainable_variables:
            continue
        path = layer.path
        if path == "token_embedding":
            out.append(Row(layer, f"layers/{layout.embedding}", layout.embedding_path))
        elif path == "position_embedding":
            out.append(Row(layer, f"layers/{layout.position}", "position_embedding"))
        elif path == "final_norm":
            out.append(Row(layer, f"layers/{layout.final_norm}", "final_norm"))
        elif path.startswith("transformer_layer_"):
            block, _, sub = path.partition("/")
            i = int(block[len("transformer_layer_"):])
            if sub not in layout.sublayers:
                raise ValueError(f"No KerasHub weight layout for {type(backbone).__name__} "
                                 f"layer {path!r}.")
            group, their_path = layout.sublayers[sub]
            out.append(Row(layer, f"layers/{_numbered(layout.block, i)}/{group}",
                           f"{layout.block_path}_{i}/{their_path or sub}",
                           sub in layout.head_major, sub in layout.dense))
        else:
            raise ValueError(f"No KerasHub weight layout for {type(backbone).__name__} "
                             f"layer {path!r}.")
    return out


def their_policy_map(backbone, serialized: dict) -> dict:
    """A serialized `DTypePolicyMap` of ours, keyed by KerasHub's layer paths instead."""
    by_ours = {row.layer.path: row.path for row in rows(backbone)}
    config = dict(serialized["config"])
    config["policy_map"] = {by_ours[path]: policy
                            for path, policy in config["policy_map"].items()}
    return dict(serialized, config=config)


def our_policy_paths(backbone, their_paths) -> dict:
    """KerasHub `DTypePolicyMap` keys -> our layer paths (a ValueError names unknown keys)."""
    by_theirs = {row.path: row.layer.path for row in rows(backbone)}
    unknown = [p for p in their_paths if p not in by_theirs]
    if unknown:
        raise ValueError(f"The quantization map names layers this model does not have: "
                         f"{unknown[:5]}")
    return {p: by_theirs[p] for p in their_paths}
