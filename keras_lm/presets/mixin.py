"""`from_preset`, `save_to_preset` and `presets`, shared by every public class."""


class classproperty(property):
    """A read-only property computed on the class."""

    def __get__(self, _, owner):
        return self.fget(owner)


class PresetMixin:
    """Adds preset loading and saving. `backbone_cls` ties a family's classes together."""

    backbone_cls = None

    def __setattr__(self, name, value):
        # Functional models set their layers before `keras.Model.__init__` runs; on the torch
        # backend `torch.nn.Module.__setattr__` refuses that, and the functional graph tracks
        # those layers anyway, so plain assignment is enough until the model is initialized.
        import keras

        if keras.backend.backend() == "torch" and isinstance(self, keras.Model):
            is_property = isinstance(getattr(type(self), name, None), property)
            if is_property or "_tracker" not in self.__dict__:
                return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)

    @classproperty
    def presets(cls) -> dict:
        """Built-in preset names this class can load, mapped to their metadata."""
        from keras_lm.presets.builtin import presets_for

        return presets_for(cls)

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True, **kwargs):
        """Build this class from a built-in name, `kaggle://`, `hf://` handle, or local path.

        Called on a base class (`CausalLM`, `Backbone`, ...), the subclass is inferred from the
        preset. `kwargs` override constructor arguments (for example `dtype="bfloat16"`).

        Example:
        >>> lm = keras_lm.models.CausalLM.from_preset("./gpt2_tiny")  # doctest: +SKIP
        """
        from keras_lm.presets.loader import load_from_preset

        return load_from_preset(cls, preset, load_weights=load_weights, **kwargs)

    def save_to_preset(self, preset_dir: str, *, overwrite: bool = False) -> None:
        """Write this object (config, weights, assets) to a preset folder.

        A new or preset-only folder is (re)written; the old preset survives any failure. A
        folder holding other files is refused unless `overwrite=True`, which writes the preset
        files next to them and leaves them untouched.

        Example:
        >>> lm.save_to_preset("./my_preset")  # doctest: +SKIP
        """
        from keras_lm.presets.native import save_preset

        save_preset(self, preset_dir, overwrite=overwrite)

    def export_to_transformers(self, path: str) -> None:
        """Write this model, backbone or tokenizer as a Hugging Face folder that
        `transformers.AutoModelForCausalLM` / `AutoTokenizer.from_pretrained(path)` load.

        A CausalLM writes its backbone and its preprocessor's tokenizer. The folder must be new
        or empty. Quantized models are refused (export before `quantize()`).

        Example:
        >>> lm.export_to_transformers("./my_model_hf")  # doctest: +SKIP
        """
        from keras_lm.presets.hf_export import export_to_transformers

        kind = getattr(self, "preset_kind", None)
        if kind == "task":
            preprocessor = self.preprocessor
            tokenizer = None if preprocessor is None else preprocessor.tokenizer
            export_to_transformers(self, path, backbone=self.backbone, tokenizer=tokenizer)
        elif kind == "backbone":
            export_to_transformers(self, path, backbone=self)
        elif kind == "tokenizer":
            export_to_transformers(self, path, tokenizer=self)
        elif kind == "preprocessor" and self.tokenizer is not None:
            export_to_transformers(self, path, tokenizer=self.tokenizer)
        else:
            raise TypeError(f"Cannot export a {type(self).__name__} to Hugging Face format.")
