"""Save and load LoRA adapter weights alone, in an HDF5 file keyed by variable path."""

import json
import os

import h5py
import numpy as np


def save_lora_weights(backbone, filepath: str) -> None:
    if not str(filepath).endswith(".lora.h5"):
        raise ValueError(f"LoRA weight files must end in `.lora.h5`. Received: {filepath!r}")
    tmp = f"{filepath}.partial"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["rank"] = backbone._lora_rank
            f.attrs["targets"] = json.dumps(backbone._lora_targets)
            for variable in backbone.lora_variables():
                f.create_dataset(variable.path, data=np.asarray(variable.numpy(), np.float32))
        os.replace(tmp, filepath)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_lora_weights(backbone, filepath: str) -> None:
    if not os.path.isfile(filepath):
        raise ValueError(f"LoRA weight file not found: {filepath!r}")
    try:
        f = h5py.File(filepath, "r")
    except OSError as error:
        raise ValueError(f"{filepath} is not a valid LoRA weight file: {error}") from error
    with f:
        rank = int(f.attrs["rank"])
        targets = json.loads(f.attrs["targets"])
        if backbone._lora_rank is None:
            backbone.enable_lora(rank, targets)
        elif backbone._lora_rank != rank:
            raise ValueError(
                f"LoRA rank mismatch: the model uses rank {backbone._lora_rank}, the file {rank}."
            )
        stored = {}
        f.visititems(lambda name, obj: stored.__setitem__(name, obj) if isinstance(
            obj, h5py.Dataset) else None)
        variables = {v.path: v for v in backbone.lora_variables()}
        if set(stored) != set(variables):
            raise ValueError(f"{filepath} does not hold this model's LoRA variables.")
        for path, variable in variables.items():
            variable.assign(stored[path][()])
