"""`Preprocessor`: the base class that turns raw inputs into model inputs."""

import keras

from keras_lm.presets.mixin import PresetMixin


@keras.saving.register_keras_serializable(package="keras_lm")
class Preprocessor(PresetMixin):
    """Base class holding a `tokenizer`; subclasses define `__call__`.

    Example:
    >>> preprocessor = keras_lm.models.Preprocessor.from_preset("./my_preset")  # doctest: +SKIP
    """

    preset_kind = "preprocessor"
    tokenizer_cls = None

    def __init__(self, tokenizer=None, name=None):
        self.tokenizer = tokenizer
        self.name = name or type(self).__name__

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
        }

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        tokenizer = config.get("tokenizer")
        if isinstance(tokenizer, dict):
            config["tokenizer"] = keras.saving.deserialize_keras_object(tokenizer)
        return cls(**config)
