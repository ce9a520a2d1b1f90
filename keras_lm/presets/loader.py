"""`from_preset` for every class: pick the format reader, the class, then build and load."""

import inspect
import os

import keras

from keras_lm.checks import json_object, read_json_file
from keras_lm.layers.initializers import weights_to_be_loaded
from keras_lm.presets import keras_hub_layout, native, safe_write
from keras_lm.presets.conversion import build_checked, check_finite
from keras_lm.presets.keras_hub_weights import (
    load_keras_hub_weights,
    stored_tied_embeddings,
    weights_present,
)
from keras_lm.presets.resolve import resolve_preset


def read_json(path: str, required=()) -> dict:
    """A preset JSON file that must hold an object with the `required` keys."""
    return json_object(read_json_file(path, "preset file"), path, "preset file", required)


def read_serialized(path: str) -> dict:
    """A serialized Keras object (`{"class_name"/"registered_name", "config": {...}}`)."""
    data = read_json(path, required=("config",))
    if not isinstance(data["config"], dict):
        raise ValueError(f"The preset file {path} has a `config` that is not a JSON object.")
    return data


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
        return read_serialized(self._file(native.CONFIG_FILE))

    def backbone_class(self):
        config = self.backbone_config()
        cls = registered_class(config)
        if cls is None:
            name = config.get("registered_name") or config.get("class_name")
            raise ValueError(f"Unknown backbone class {name!r} in {self._file('config.json')}")
        return cls

    def keras_hub_layout(self) -> bool:
        """Whether the weights are laid out as KerasHub writes them (else as Keras writes
        our own layers: presets saved by keras_lm 0.1)."""
        name = self.backbone_config().get("registered_name") or ""
        if name.startswith("keras_lm>"):
            return False
        return keras_hub_layout.has_layout(self.backbone_class())

    def build_backbone(self, cls, **overrides):
        config = dict(self.backbone_config()["config"])
        config.update(overrides)
        source = self._file(native.CONFIG_FILE)
        if (self.keras_hub_layout() and "tie_word_embeddings" not in config
                and "tie_word_embeddings" in inspect.signature(cls.__init__).parameters
                and weights_present(self.path)):
            config["tie_word_embeddings"] = stored_tied_embeddings(self.path, cls)
        policy = config.get("dtype")
        if not (self.keras_hub_layout() and isinstance(policy, dict)
                and policy.get("class_name") == "DTypePolicyMap"):
            # from_config: it rebuilds a quantized model from its DTypePolicyMap.
            return build_checked(cls, config, source, cls.from_config)
        # KerasHub names the quantized layers by its own layer paths: build the float model,
        # then quantize the layers those paths are ours.
        policy_map = keras.dtype_policies.deserialize(policy)
        config["dtype"] = policy_map.default_policy
        backbone = build_checked(cls, config, source)
        ours = keras.dtype_policies.DTypePolicyMap(default_policy=policy_map.default_policy)
        try:
            for theirs, path in keras_hub_layout.our_policy_paths(
                    backbone, list(policy_map.keys())).items():
                ours[path] = policy_map[theirs]
            backbone.requantize(ours)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        return backbone

    def load_weights(self, backbone) -> None:
        if self.keras_hub_layout():
            source = load_keras_hub_weights(backbone, self.path)
            check_finite(backbone.weights, source)
            return
        path = self._file(native.WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"Preset weights are missing: {path}")
        expected = [v for v in backbone.weights if "lora_kernel" not in v.path]
        stored = count_h5_tensors(path)
        if stored != len(expected):
            raise ValueError(
                f"{path} holds {stored} tensors but the model that "
                f"{self._file(native.CONFIG_FILE)} describes has {len(expected)}: the config "
                "and the weights do not match (for example a different `num_layers`)."
            )
        try:
            backbone.load_weights(path)
        except Exception as error:  # h5py raises OSError/KeyError/ValueError variants
            raise ValueError(f"Preset weights are corrupt or do not match: {path}: {error}") \
                from None
        check_finite(expected, path)

    def has_tokenizer(self) -> bool:
        return os.path.isfile(self._file(native.TOKENIZER_FILE))

    def _assets_config(self, cls) -> dict:
        return cls.asset_config_from_dir(self._file(native.TOKENIZER_ASSETS))

    def tokenizer(self, family_cls, **kwargs):
        source = self._file(native.TOKENIZER_FILE)
        config = read_serialized(source)
        cls = registered_class(config) or family_cls
        params = keras_hub_tokenizer_config(config["config"], source)
        params.update({k: v for k, v in self._assets_config(cls).items() if params.get(k) is None})
        params.update(kwargs)
        try:
            return cls.from_config(params)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: cannot build {cls.__name__}: {error}") from None

    @property
    def chat_template(self) -> str | None:
        path = os.path.join(self._file(native.TOKENIZER_ASSETS), native.CHAT_TEMPLATE_FILE)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return f.read()

    def preprocessor_config(self) -> dict:
        path = self._file(native.PREPROCESSOR_FILE)
        if not os.path.isfile(path):
            return {}
        config = dict(read_serialized(path)["config"])
        config.pop("tokenizer", None)
        for key in KERAS_HUB_PREPROCESSOR_ONLY:
            config.pop(key, None)
        return config

    def task_config(self) -> dict:
        path = self._file(native.TASK_FILE)
        if not os.path.isfile(path):
            return {}
        config = dict(read_serialized(path)["config"])
        for key in ("backbone", "preprocessor"):
            config.pop(key, None)
        return config


# KerasHub's bookkeeping, and its image inputs (we load the text part of a model).
KERAS_HUB_PREPROCESSOR_ONLY = ("config_file", "trainable", "dtype", "num_vision_tokens_per_image",
                               "max_images_per_prompt")
KERAS_HUB_TOKENIZER_ONLY = ("config_file", "trainable", "has_vision_tokens")


def keras_hub_tokenizer_config(config: dict, source: str) -> dict:
    """A tokenizer config of ours or of KerasHub, as our tokenizer's arguments."""
    config = {k: v for k, v in config.items() if k not in KERAS_HUB_TOKENIZER_ONLY}
    for key in ("add_bos", "add_eos"):  # KerasHub's SentencePiece tokenizers: False in presets
        if config.pop(key, False):
            raise ValueError(f"{source}: `{key}=True` is not supported; the preprocessor adds "
                             "the start and end tokens.")
    dtype = config.get("dtype")
    if isinstance(dtype, dict):  # KerasHub serializes the policy; ours is its name
        config["dtype"] = (dtype.get("config") or {}).get("name", "int32")
    return config


def registered_class(config: dict):
    """Our class for a serialized object of ours or of KerasHub (`keras_hub>LlamaBackbone`,
    and `keras_nlp>...` from before KerasHub's rename), or None."""
    name = config.get("registered_name") or config.get("class_name") or ""
    package, _, class_name = name.rpartition(">")
    if package in ("keras_hub", "keras_nlp"):
        import keras_lm

        for namespace in (keras_lm.models, keras_lm.tokenizers):
            cls = getattr(namespace, class_name, None)
            if isinstance(cls, type):
                return cls
        return None
    return keras.saving.get_registered_object(name)


def count_h5_tensors(path: str) -> int:
    """The number of datasets (saved variables) in a Keras `.weights.h5` file."""
    import h5py

    found = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, item: found.append(1) if isinstance(item, h5py.Dataset)
                         else None)
    except OSError as error:
        raise ValueError(f"Preset weights are corrupt (not an HDF5 file): {path}: {error}") \
            from None
    return len(found)


def reader_for(path: str):
    if os.path.isdir(path):
        try:
            safe_write.recover(path)  # a save that a killed process left half done
        except OSError as error:
            raise ValueError(
                f"{path} holds a save that was interrupted, and its previous files could not "
                f"be restored ({error}); they are in the hidden folder next to it."
            ) from None
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
        from keras_lm.presets.gguf_reader import find_gguf

        gguf_path = find_gguf(path)
        if gguf_path is not None:
            return _gguf_reader(gguf_path)
        raise ValueError(
            f"{path} is not a preset folder: no config.json (native or Hugging Face) and no "
            ".gguf file found."
        )
    if is_gguf_file(path):
        return _gguf_reader(path)
    raise ValueError(f"Unsupported preset file: {path} (a preset is a folder or a .gguf file).")


def is_gguf_file(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF" or path.endswith(".gguf")


def _gguf_reader(path: str):
    from keras_lm.presets.gguf_reader import GGUFReader

    return GGUFReader(path)


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
        return _with_chat_template(reader, reader.tokenizer(family, **kwargs))
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
    if hasattr(reader, "start_loading"):
        reader.start_loading()  # e.g. dequantize in the background while the model is built
    with weights_to_be_loaded():  # no random draws for values about to be replaced
        backbone = reader.build_backbone(backbone_cls, **kwargs)
    reader.load_weights(backbone)
    return backbone


def _build_preprocessor(reader, preprocessor_cls, kwargs):
    if preprocessor_cls is None:
        raise ValueError("This model family has no preprocessor class.")
    config = reader.preprocessor_config()
    config.update(kwargs)
    tokenizer = config.pop("tokenizer", None) or _with_chat_template(
        reader, reader.tokenizer(preprocessor_cls.tokenizer_cls))
    return preprocessor_cls(tokenizer=tokenizer, **config)


def _with_chat_template(reader, tokenizer):
    """The tokenizer, with the chat template the checkpoint carries (if any)."""
    template = getattr(reader, "chat_template", None)
    if isinstance(template, str) and template.strip():
        tokenizer.chat_template = template
    return tokenizer
