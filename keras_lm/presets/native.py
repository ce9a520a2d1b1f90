"""The native preset folder (KerasHub's file names), written atomically."""

import datetime
import json
import os
import shutil
import tempfile

import keras

from keras_lm.version import __version__

CONFIG_FILE = "config.json"
TASK_FILE = "task.json"
PREPROCESSOR_FILE = "preprocessor.json"
TOKENIZER_FILE = "tokenizer.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
TOKENIZER_ASSETS = os.path.join("assets", "tokenizer")


def _write_json(directory, name, data):
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


def serialize_tokenizer(tokenizer) -> dict:
    """Serialized tokenizer whose vocabulary lives in asset files, not in the JSON."""
    config = keras.saving.serialize_keras_object(tokenizer)
    for key in tokenizer.asset_config_keys():
        config["config"][key] = None
    return config


def serialize_preprocessor(preprocessor) -> dict:
    config = keras.saving.serialize_keras_object(preprocessor)
    if preprocessor.tokenizer is not None:
        config["config"]["tokenizer"] = serialize_tokenizer(preprocessor.tokenizer)
    return config


def _write_tokenizer(tokenizer, directory):
    _write_json(directory, TOKENIZER_FILE, serialize_tokenizer(tokenizer))
    assets = os.path.join(directory, TOKENIZER_ASSETS)
    os.makedirs(assets, exist_ok=True)
    tokenizer.save_assets(assets)


def _write_preprocessor(preprocessor, directory):
    _write_json(directory, PREPROCESSOR_FILE, serialize_preprocessor(preprocessor))
    if preprocessor.tokenizer is not None:
        _write_tokenizer(preprocessor.tokenizer, directory)


def _write_backbone(backbone, directory):
    _write_json(directory, CONFIG_FILE, keras.saving.serialize_keras_object(backbone))
    # Keras merges enabled LoRA adapters into the kernels when saving.
    backbone.save_weights(os.path.join(directory, WEIGHTS_FILE))
    _write_json(
        directory,
        METADATA_FILE,
        {
            "keras_version": keras.__version__,
            "keras_lm_version": __version__,
            "parameter_count": int(backbone.count_params()),
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        },
    )


def write_preset_contents(obj, directory: str) -> None:
    kind = getattr(obj, "preset_kind", None)
    if kind == "task":
        _write_backbone(obj.backbone, directory)
        task_config = keras.saving.serialize_keras_object(obj)
        task_config["config"]["backbone"] = keras.saving.serialize_keras_object(obj.backbone)
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


def save_preset(obj, preset_dir: str) -> None:
    """Write `obj` into `preset_dir` through a temporary sibling folder and a rename, so a
    failure never leaves a half-written preset (an existing preset is replaced whole)."""
    if not isinstance(preset_dir, (str, os.PathLike)) or not str(preset_dir):
        raise ValueError(f"`preset_dir` must be a folder path. Received: {preset_dir!r}")
    preset_dir = os.path.abspath(os.fspath(preset_dir))
    if os.path.exists(preset_dir) and not os.path.isdir(preset_dir):
        raise ValueError(f"`preset_dir` exists and is not a folder: {preset_dir}")
    parent = os.path.dirname(preset_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(preset_dir)}.", dir=parent)
    try:
        write_preset_contents(obj, staging)
        if os.path.isdir(preset_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(preset_dir)}.old.", dir=parent)
            os.rmdir(old)
            os.replace(preset_dir, old)
            os.replace(staging, preset_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, preset_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
