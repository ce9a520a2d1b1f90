"""`Backbone`: the base class of every model body, with presets and LoRA."""

import keras

from keras_lm.models.preset_mixin import PresetMixin


@keras.saving.register_keras_serializable(package="keras_lm")
class Backbone(PresetMixin, keras.Model):
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

    @classmethod
    def from_config(cls, config):
        return cls(**config)

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
