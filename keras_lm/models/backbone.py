"""`Backbone`: the base class of every model body, with presets and LoRA."""

import warnings

import keras

from keras_lm.layers.remat import StaticArgumentsRemat
from keras_lm.layers.variable_release import CollectsOnceAfterQuantize
from keras_lm.presets.mixin import PresetMixin


@keras.saving.register_keras_serializable(package="keras_lm")
class Backbone(CollectsOnceAfterQuantize, StaticArgumentsRemat, PresetMixin, keras.Model):
    """Base class for model bodies: token ids and a padding mask in, hidden states out.

    Subclasses are functional models. `from_preset` on `Backbone` itself infers the subclass
    from the preset's `config.json`.

    Example:
    >>> backbone = keras_lm.models.Backbone.from_preset("./my_preset")  # doctest: +SKIP
    """

    preset_kind = "backbone"

    def __init__(self, *args, dtype=None, **kwargs):
        super().__init__(*args, dtype=dtype, **kwargs)
        self._lora_rank = None
        self._lora_targets = None

    @property
    def token_embedding(self):
        """The `ReversibleEmbedding` layer that embeds token ids and computes logits."""
        return self._token_embedding

    @token_embedding.setter
    def token_embedding(self, value):
        self._token_embedding = value

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable}

    def serialized_dtype(self):
        """The dtype policy for `get_config`: after `quantize()`, a `DTypePolicyMap` of the
        quantized layers (KerasHub's format), so a saved preset rebuilds them quantized."""
        quantized = keras.dtype_policies.DTypePolicyMap(default_policy=self.dtype_policy)
        for layer in self._flatten_layers(include_self=False):
            if layer.quantization_mode is not None:
                quantized[layer.path] = layer.dtype_policy
        if not len(quantized):
            return keras.dtype_policies.serialize(self.dtype_policy)
        return keras.dtype_policies.serialize(quantized)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        policy = config.get("dtype")
        if policy is not None and not isinstance(policy, str):
            policy = keras.dtype_policies.deserialize(policy) if isinstance(policy, dict) \
                else policy
        if not isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            return cls(**config)
        config["dtype"] = policy.default_policy
        backbone = cls(**config)
        backbone.requantize(policy)
        return backbone

    def requantize(self, policy_map) -> None:
        """Quantize exactly the layers a saved `DTypePolicyMap` names (weights load after)."""
        modes = {policy.quantization_mode for policy in policy_map.values()}
        if len(modes) != 1 or None in modes:
            raise ValueError(
                f"Cannot rebuild a model quantized with modes {sorted(map(str, modes))}."
            )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns for layers without weights
            mode = modes.pop()
            config = None
            if mode == "int4":
                blocks = {getattr(policy, "block_size", None) for policy in policy_map.values()}
                if len(blocks) > 1:  # a GGUF file's groups of 32 beside requantized layers
                    self._requantize_int4_layers(policy_map)
                else:
                    config = keras.quantizers.Int4QuantizationConfig(block_size=blocks.pop())
                    self.quantize(mode, config=config)
            else:
                self.quantize(mode, config=config)
        quantized = {layer.path for layer in self._flatten_layers(include_self=False)
                     if layer.quantization_mode is not None}
        if quantized != set(policy_map.keys()):
            raise ValueError(
                "This preset quantizes a different set of layers than `quantize()` does: "
                f"{sorted(set(policy_map.keys()) ^ quantized)[:5]}..."
            )

    def _requantize_int4_layers(self, policy_map) -> None:
        """int4 layers rebuilt one by one, each with its saved group size."""
        layers = {layer.path: layer for layer in self._flatten_layers(include_self=False)}
        for path, policy in policy_map.items():
            if path not in layers:
                raise ValueError(f"This preset quantizes a layer this model lacks: {path!r}.")
            config = keras.quantizers.Int4QuantizationConfig(block_size=policy.block_size)
            layers[path].quantize("int4", config=config)

    @staticmethod
    def get_layout_map(device_mesh, model_parallel_dim_name: str = "model",
                       data_parallel_dim_name: str = "batch"):
        """A `keras.distribution.LayoutMap` sharding the weights over `device_mesh` (JAX):
        heads, MLP width and vocabulary along the model axis, hidden width along the data
        axis; LoRA adapters follow their kernels. A size the model axis does not divide is
        replicated along it (with a warning) when the model is built.

        Example:
        >>> mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"])  # doctest: +SKIP
        >>> layouts = GemmaBackbone.get_layout_map(mesh)  # doctest: +SKIP
        >>> keras.distribution.set_distribution(keras.distribution.ModelParallel(
        ...     layout_map=layouts, batch_dim_name="batch"))  # doctest: +SKIP
        """
        from keras_lm.models.layout import layout_map

        return layout_map(device_mesh, model_parallel_dim_name, data_parallel_dim_name)

    # --- LoRA -------------------------------------------------------------------------------
    def default_lora_layer_names(self) -> list[str]:
        return ["query", "value"]

    def enable_lora(self, rank: int, target_layer_names: list[str] | None = None) -> None:
        """Freeze every weight and add rank-`rank` LoRA adapters to the named dense layers.

        Example:
        >>> backbone.enable_lora(rank=4)  # doctest: +SKIP
        """
        if not isinstance(rank, int) or rank <= 0:
            raise ValueError(f"`rank` must be a positive int. Received: rank={rank!r}")
        targets = list(target_layer_names or self.default_lora_layer_names())
        self.trainable = True
        for variable in self.trainable_variables:
            variable.trainable = False
        found = 0
        for layer in self._flatten_layers(include_self=False):
            if layer.name in targets and hasattr(layer, "enable_lora"):
                layer.enable_lora(rank)
                found += 1
        if not found:
            raise ValueError(
                f"No layer named any of {targets} supports LoRA in {type(self).__name__}."
            )
        self._lora_rank = rank
        self._lora_targets = targets

    def lora_variables(self) -> list:
        return [v for v in self.variables if "lora_kernel" in v.path]

    def save_lora_weights(self, filepath: str) -> None:
        """Save only the LoRA adapter weights to an `.lora.h5` file.

        Example:
        >>> backbone.save_lora_weights("adapters.lora.h5")  # doctest: +SKIP
        """
        from keras_lm.presets.lora_io import save_lora_weights

        if not self._lora_rank:
            raise ValueError("LoRA is not enabled: call `enable_lora(rank)` first.")
        save_lora_weights(self, filepath)

    def load_lora_weights(self, filepath: str) -> None:
        """Load LoRA adapters saved by `save_lora_weights`, enabling LoRA if needed."""
        from keras_lm.presets.lora_io import load_lora_weights

        load_lora_weights(self, filepath)
