"""`from_preset` for every class: pick the format reader, the class, then build and load."""

import inspect
import json
import os

import keras

from keras_lm.layers.initializers import weights_to_be_loaded
from keras_lm.presets import native
from keras_lm.presets.resolve import resolve_preset


def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"Preset file is missing: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Preset file is corrupt (not valid JSON): {path}: {error}") from error


def _all_subclasses(cls):
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def find_family_class(base, backbone_cls):
    """The class under `base` (itself included) that belongs to `backbone_cls`'s family."""
    if base.backbone_cls is not None:
        if not issubclass(backbone_cls, base.backbone_cls):
            raise ValueError(
                f"This preset holds a {backbone_cls.__name__} model, which "
                f"{base.__name__} cannot load. Use the matching class or the base class."
            )
        return base
    matches = [c for c in _all_subclasses(base) if c.backbone_cls is backbone_cls]
    if not matches:
        raise ValueError(f"No {base.__name__} class exists for {backbone_cls.__name__} models.")
    return matches[-1]


class NativeReader:
    """Reads a folder written by `save_to_preset` (our classes, KerasHub file names)."""

    def __init__(self, path: str):
        self.path = path

    def _file(self, name):
        return os.path.join(self.path, name)

    def backbone_config(self) -> dict:
        return read_json(self._file(native.CONFIG_FILE))

    def backbone_class(self):
        config = self.backbone_config()
        name = config.get("registered_name") or config.get("class_name")
        cls = keras.saving.get_registered_object(name)
        if cls is None:
            raise ValueError(f"Unknown backbone class {name!r} in {self._file('config.json')}")
        return cls

    def build_backbone(self, cls, **overrides):
        config = dict(self.backbone_config()["config"])
        config.update(overrides)
        return cls.from_config(config)

    def load_weights(self, backbone) -> None:
        path = self._file(native.WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"Preset weights are missing: {path}")
        try:
            backbone.load_weights(path)
        except Exception as error:  # h5py raises OSError/KeyError/ValueError variants
            raise ValueError(f"Preset weights are corrupt or do not match: {path}: {error}") \
                from error

    def has_tokenizer(self) -> bool:
        return os.path.isfile(self._file(native.TOKENIZER_FILE))

    def _assets_config(self, cls) -> dict:
        return cls.asset_config_from_dir(self._file(native.TOKENIZER_ASSETS))

    def tokenizer(self, family_cls, **kwargs):
        config = read_json(self._file(native.TOKENIZER_FILE))
        cls = keras.saving.get_registered_object(config.get("registered_name")) or family_cls
        params = dict(config["config"])
        params.update({k: v for k, v in self._assets_config(cls).items() if params.get(k) is None})
        params.update(kwargs)
        return cls.from_config(params)

    def preprocessor_config(self) -> dict:
        path = self._file(native.PREPROCESSOR_FILE)
        if not os.path.isfile(path):
            return {}
        config = dict(read_json(path)["config"])
        config.pop("tokenizer", None)
        return config

    def task_config(self) -> dict:
        path = self._file(native.TASK_FILE)
        if not os.path.isfile(path):
            return {}
        config = dict(read_json(path)["config"])
        for key in ("backbone", "preprocessor"):
            config.pop(key, None)
        return config


def reader_for(path: str):
    if os.path.isdir(path):
        config_path = os.path.join(path, native.CONFIG_FILE)
        if os.path.isfile(config_path):
            config = read_json(config_path)
            if "model_type" in config:
                from keras_lm.presets.huggingface import HuggingFaceReader

                return HuggingFaceReader(path, config)
            if "class_name" in config:
                return NativeReader(path)
        if os.path.isfile(os.path.join(path, native.TOKENIZER_FILE)):
            return NativeReader(path)
        raise ValueError(
            f"{path} is not a preset folder: no config.json (native or Hugging Face) found."
        )
    raise ValueError(f"Unsupported preset file: {path}")


def _split_backbone_kwargs(backbone_cls, kwargs):
    accepted = set(inspect.signature(backbone_cls.__init__).parameters) - {"self", "kwargs"}
    accepted.add("dtype")
    backbone_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in accepted}
    return backbone_kwargs, kwargs


def load_from_preset(cls, preset, load_weights: bool = True, **kwargs):
    path = resolve_preset(preset)
    reader = reader_for(path)
    kind = cls.preset_kind
    if kind == "tokenizer":
        family = find_family_class(cls, reader.backbone_class())
        return reader.tokenizer(family, **kwargs)
    backbone_cls = reader.backbone_class()
    if kind == "backbone":
        if not issubclass(backbone_cls, cls):
            raise ValueError(f"This preset holds a {backbone_cls.__name__}, not a {cls.__name__}")
        return _build(reader, backbone_cls, load_weights, kwargs)
    if kind == "preprocessor":
        target = find_family_class(cls, backbone_cls)
        return _build_preprocessor(reader, target, kwargs)
    if kind == "task":
        target = find_family_class(cls, backbone_cls)
        backbone_kwargs, kwargs = _split_backbone_kwargs(backbone_cls, kwargs)
        backbone = _build(reader, backbone_cls, load_weights, backbone_kwargs)
        if "preprocessor" in kwargs:
            preprocessor = kwargs.pop("preprocessor")
        elif not reader.has_tokenizer():
            preprocessor = None
        else:
            preprocessor = _build_preprocessor(reader, target.preprocessor_cls, {})
        task_kwargs = {k: v for k, v in reader.task_config().items() if k in ("name",)}
        task_kwargs.update(kwargs)
        return target(backbone=backbone, preprocessor=preprocessor, **task_kwargs)
    raise TypeError(f"{cls.__name__} cannot be loaded from a preset.")


def _build(reader, backbone_cls, load_weights, kwargs):
    if not load_weights:
        return reader.build_backbone(backbone_cls, **kwargs)
    with weights_to_be_loaded():  # no random draws for values about to be replaced
        backbone = reader.build_backbone(backbone_cls, **kwargs)
    reader.load_weights(backbone)
    return backbone


def _build_preprocessor(reader, preprocessor_cls, kwargs):
    if preprocessor_cls is None:
        raise ValueError("This model family has no preprocessor class.")
    config = reader.preprocessor_config()
    config.update(kwargs)
    tokenizer = config.pop("tokenizer", None) or reader.tokenizer(preprocessor_cls.tokenizer_cls)
    return preprocessor_cls(tokenizer=tokenizer, **config)
