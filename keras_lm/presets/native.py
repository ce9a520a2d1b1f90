"""The native preset folder (KerasHub's file names), written without losing files."""

import datetime
import json
import os
import re

import keras

from keras_lm.presets import keras_hub_layout, safe_write
from keras_lm.presets.keras_hub_weights import save_keras_hub_weights
from keras_lm.version import __version__

CONFIG_FILE = "config.json"
TASK_FILE = "task.json"
PREPROCESSOR_FILE = "preprocessor.json"
TOKENIZER_FILE = "tokenizer.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
TOKENIZER_ASSETS = os.path.join("assets", "tokenizer")
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # ours; KerasHub ignores it


def _write_json(directory, name, data):
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


KERAS_HUB_ASSET_KEYS = ("proto", "vocabulary", "merges")


def _keras_hub_module(name: str) -> str:
    """KerasHub's module of a class (`Llama3CausalLMPreprocessor` ->
    `keras_hub.src.models.llama3.llama3_causal_lm_preprocessor`)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
    return f"keras_hub.src.models.{snake.split('_')[0]}.{snake}"


def serialize(obj) -> dict:
    """`serialize_keras_object`, with our public classes named as KerasHub names them, so that
    KerasHub loads the folder (and we load KerasHub's)."""
    import keras_lm

    config = keras.saving.serialize_keras_object(obj)
    for key in ("build_config", "compile_config"):
        config.pop(key, None)
    dtype = config["config"].get("dtype")
    if isinstance(dtype, dict) and dtype.get("class_name") == "DTypePolicyMap":
        config["config"]["dtype"] = keras_hub_layout.their_policy_map(obj, dtype)
    cls = type(obj)
    public = getattr(keras_lm.models, cls.__name__, None) or \
        getattr(keras_lm.tokenizers, cls.__name__, None)
    if public is cls:
        config["registered_name"] = f"keras_hub>{cls.__name__}"
        config["module"] = _keras_hub_module(cls.__name__)
    return config


def serialize_tokenizer(tokenizer) -> dict:
    """Serialized tokenizer whose vocabulary lives in asset files, not in the JSON."""
    config = serialize(tokenizer)
    for key in tokenizer.asset_config_keys():
        if key in KERAS_HUB_ASSET_KEYS:
            config["config"][key] = None  # KerasHub reads them from the assets
        else:
            config["config"].pop(key, None)
    return config


def serialize_preprocessor(preprocessor) -> dict:
    config = serialize(preprocessor)
    if preprocessor.tokenizer is not None:
        config["config"]["tokenizer"] = serialize_tokenizer(preprocessor.tokenizer)
    return config


def _write_tokenizer(tokenizer, directory):
    _write_json(directory, TOKENIZER_FILE, serialize_tokenizer(tokenizer))
    assets = os.path.join(directory, TOKENIZER_ASSETS)
    os.makedirs(assets, exist_ok=True)
    tokenizer.save_assets(assets)
    if getattr(tokenizer, "chat_template", None):
        with open(os.path.join(assets, CHAT_TEMPLATE_FILE), "w", encoding="utf-8") as f:
            f.write(tokenizer.chat_template)


def _write_preprocessor(preprocessor, directory):
    _write_json(directory, PREPROCESSOR_FILE, serialize_preprocessor(preprocessor))
    if preprocessor.tokenizer is not None:
        _write_tokenizer(preprocessor.tokenizer, directory)


def _write_backbone(backbone, directory, tasks=()):
    _write_json(directory, CONFIG_FILE, serialize(backbone))
    # KerasHub's layout (Keras' own for a backbone class KerasHub does not have); Keras merges
    # enabled LoRA adapters into the kernels either way.
    path = os.path.join(directory, WEIGHTS_FILE)
    if keras_hub_layout.has_layout(type(backbone)):
        save_keras_hub_weights(backbone, path)
    else:
        backbone.save_weights(path)
    metadata = {
        "keras_version": keras.__version__,
        "keras_lm_version": __version__,
        "parameter_count": int(backbone.count_params()),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
    }
    if tasks:
        metadata["tasks"] = list(tasks)
    _write_json(directory, METADATA_FILE, metadata)


def write_preset_contents(obj, directory: str) -> None:
    kind = getattr(obj, "preset_kind", None)
    if kind == "task":
        _write_backbone(obj.backbone, directory, tasks=["CausalLM"])
        task_config = serialize(obj)
        task_config["config"]["backbone"] = serialize(obj.backbone)
        if obj.preprocessor is not None:
            task_config["config"]["preprocessor"] = serialize_preprocessor(obj.preprocessor)
            _write_preprocessor(obj.preprocessor, directory)
        _write_json(directory, TASK_FILE, task_config)
    elif kind == "backbone":
        _write_backbone(obj, directory)
    elif kind == "preprocessor":
        _write_preprocessor(obj, directory)
    elif kind == "tokenizer":
        _write_tokenizer(obj, directory)
    else:
        raise TypeError(f"Cannot save a {type(obj).__name__} to a preset.")


# What a preset folder holds: these files, and everything under these folders.
PRESET_FILES = {CONFIG_FILE, TASK_FILE, PREPROCESSOR_FILE, TOKENIZER_FILE, METADATA_FILE,
                WEIGHTS_FILE}
PRESET_FOLDERS = {"assets"}


def preset_files_in(directory: str) -> tuple[list[str], list[str]]:
    """`(preset files, other entries)` of `directory`: relative paths of the files a preset
    save owns, and the names of top-level entries it does not."""
    if not os.path.isdir(directory):
        return [], []
    ours, others = [], []
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if entry in PRESET_FILES and os.path.isfile(path):
            ours.append(entry)
        elif entry in PRESET_FOLDERS and os.path.isdir(path):
            ours += [os.path.join(entry, f) for f in safe_write.relative_files(path)]
        else:
            others.append(entry)
    return ours, others


def save_preset(obj, preset_dir: str, overwrite: bool = False) -> None:
    """Write `obj` into `preset_dir` without ever losing a file.

    The preset is written whole into a hidden folder next to `preset_dir`, then only its own
    files are moved in (see `safe_write`). A folder that holds anything besides preset files
    is refused unless `overwrite=True`, and even then those other files stay untouched.
    """
    if not isinstance(preset_dir, (str, os.PathLike)) or not os.fspath(preset_dir):
        raise ValueError(f"`preset_dir` must be a folder path. Received: {preset_dir!r}")
    preset_dir = os.path.abspath(os.fspath(preset_dir))
    if os.path.exists(preset_dir) and not os.path.isdir(preset_dir):
        raise ValueError(f"`preset_dir` exists and is not a folder: {preset_dir}")
    safe_write.recover(preset_dir)
    ours, others = preset_files_in(preset_dir)
    if others and not overwrite:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ValueError(
            f"{preset_dir} already holds files that are not part of a preset ({shown}). "
            "Save into an empty or new folder, or pass `overwrite=True` (`--overwrite` on the "
            "command line) to write the preset files next to them (they are left untouched)."
        )
    parent = os.path.dirname(preset_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = safe_write.staging_folder(preset_dir)
    except OSError as error:
        raise ValueError(f"Cannot write a preset to {preset_dir}: {error.strerror}") from None
    try:
        write_preset_contents(obj, staging)
        written = set(safe_write.relative_files(staging))
        # In a folder of presets only, old preset files the new save does not write go too.
        stale = [] if others else [f for f in ours if f not in written]
        safe_write.commit(staging, preset_dir, stale)
    except OSError as error:
        raise ValueError(f"Cannot write a preset to {preset_dir}: {error}") from error
    finally:
        safe_write.discard(staging)
