"""Resumable training state: trainable weights, optimizer variables and the step, in
safetensors files. A new checkpoint is complete on disk before it replaces the old one."""

import json
import os
import shutil

import keras
import numpy as np

from keras_lm.presets.safetensors_io import SafetensorsFile, save_file

STATE_FILE = "state.json"


def save_checkpoint(folder: str, lm, step: int) -> None:
    """Write `lm`'s trainable weights and optimizer state at `step` into `folder`."""
    new, old = folder + ".new", folder + ".old"
    shutil.rmtree(new, ignore_errors=True)
    os.makedirs(new)
    save_file({v.path: _numpy(v) for v in lm.trainable_variables},
              os.path.join(new, "trainable.safetensors"))
    optimizer = lm.optimizer.variables
    save_file({f"{i}": _numpy(v) for i, v in enumerate(optimizer)},
              os.path.join(new, "optimizer.safetensors"))
    save_file({f"{i}": _numpy(v) for i, v in enumerate(_random_states(lm))},
              os.path.join(new, "random.safetensors"))
    with open(os.path.join(new, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump({"step": step, "optimizer_paths": [v.path for v in optimizer]}, f)
    if os.path.isdir(folder):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: str, lm) -> int:
    """Restore what `save_checkpoint` wrote; returns the step to continue from."""
    if not os.path.isdir(folder) and os.path.isdir(folder + ".old"):
        folder += ".old"  # interrupted between the two renames
    with open(os.path.join(folder, STATE_FILE), encoding="utf-8") as f:
        state = json.load(f)
    weights = SafetensorsFile(os.path.join(folder, "trainable.safetensors"))
    variables = {v.path: v for v in lm.trainable_variables}
    if set(weights.keys()) != set(variables):
        raise ValueError(f"{folder} does not hold this model's trainable weights.")
    for path, variable in variables.items():
        _assign(variable, weights.get(path), folder)
    lm.optimizer.build(lm.trainable_variables)
    stored = SafetensorsFile(os.path.join(folder, "optimizer.safetensors"))
    if len(stored.keys()) != len(lm.optimizer.variables):
        raise ValueError(f"{folder} holds another optimizer's state.")
    for i, variable in enumerate(lm.optimizer.variables):
        _assign(variable, stored.get(str(i)), folder)
    stored = SafetensorsFile(os.path.join(folder, "random.safetensors"))
    states = _random_states(lm)
    if len(stored.keys()) != len(states):
        raise ValueError(f"{folder} holds the random state of another model.")
    for i, variable in enumerate(states):
        _assign(variable, stored.get(str(i)), folder)
    return int(state["step"])


def _random_states(lm) -> list:
    """The dropout layers' seed states, in model order (their paths carry process-wide
    counters, so they are matched by position)."""
    return [v for v in lm.non_trainable_variables if v.path.endswith("seed_generator_state")]


def _assign(variable, value, folder):
    if len(variable.shape) == 0 and value.size == 1:  # safetensors stores scalars as [1]
        value = np.asarray(value).reshape(())
    if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(f"{folder}: {variable.path} has shape {tuple(value.shape)}, the "
                         f"model's is {tuple(variable.shape)}.")
    variable.assign(value)


def _numpy(variable) -> np.ndarray:
    return np.ascontiguousarray(keras.ops.convert_to_numpy(variable.value))
