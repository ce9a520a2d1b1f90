"""Fold LoRA adapters into the weights they adapt: a plain model that loads anywhere."""

import keras


def merged_lora_weights(backbone) -> dict:
    """Variable path → the weight with its enabled LoRA adapter added (what the layer uses).

    Example:
    >>> merged_lora_weights(backbone)["gpt2_backbone/transformer_layer_0/attention/query/kernel"]
    ... # doctest: +SKIP
    """
    merged = {}
    for layer in backbone._flatten_layers(include_self=False):
        if not getattr(layer, "lora_enabled", False):
            continue
        if layer.quantization_mode is not None:
            raise ValueError(
                f"Cannot merge LoRA into the quantized layer {layer.path!r}: merge into the "
                "float model the adapters were trained for (load it without quantizing, "
                "`load_lora_weights`, then merge)."
            )
        name = "embeddings" if hasattr(layer, "embeddings") and not hasattr(layer, "kernel") \
            else "kernel"
        merged[f"{layer.path}/{name}"] = keras.ops.convert_to_numpy(getattr(layer, name))
    return merged


def merged_backbone(backbone):
    """A new backbone of the same config without LoRA, its weights the merged ones.

    Example:
    >>> plain = merged_backbone(lm.backbone)  # doctest: +SKIP
    >>> lm = type(lm)(backbone=plain, preprocessor=lm.preprocessor)  # doctest: +SKIP
    """
    merged = merged_lora_weights(backbone)
    values = {v.path: v for v in backbone.weights if "lora_" not in v.path}
    plain = type(backbone).from_config(backbone.get_config())
    for variable in plain.weights:
        source = merged.get(variable.path)
        if source is None:
            if variable.path not in values:
                raise ValueError(f"No weight for {variable.path!r} in the model to merge.")
            source = values[variable.path]
        variable.assign(source)
    return plain
