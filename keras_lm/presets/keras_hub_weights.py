"""Read and write `model.weights.h5` (or KerasHub's sharded `model.weights.json` +
`model_NNNNN.weights.h5`) in KerasHub's layout (`keras_hub_layout`), with h5py."""

import os

import numpy as np

from keras_lm.presets.keras_hub_layout import Row, rows

WEIGHTS_FILE = "model.weights.h5"
SHARDED_INDEX = "model.weights.json"


def weights_present(directory: str) -> bool:
    return any(os.path.isfile(os.path.join(directory, name))
               for name in (WEIGHTS_FILE, SHARDED_INDEX))


class WeightsFile:
    """The `vars` groups of a single or sharded weights file, by group path."""

    def __init__(self, directory: str):
        import h5py

        self.directory = directory
        single = os.path.join(directory, WEIGHTS_FILE)
        index = os.path.join(directory, SHARDED_INDEX)
        if os.path.isfile(single):
            self.source, files = single, {None: single}
        elif os.path.isfile(index):
            self.source, files = index, self._shards(index)
        else:
            raise ValueError(f"Preset weights are missing: {single}")
        self._handles = {}
        for key, path in files.items():
            try:
                self._handles[key] = h5py.File(path, "r")
            except OSError as error:
                self.close()
                raise ValueError(f"Preset weights are corrupt (not a complete HDF5 file): "
                                 f"{path}: {error}") from None

    def _shards(self, index: str) -> dict:
        from keras_lm.checks import read_json_file

        data = read_json_file(index, "sharded weights index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no `weight_map` object.")
        self.weight_map = {}
        for group, names in weight_map.items():
            names = [names] if isinstance(names, str) else names
            self.weight_map[group.strip("/")] = list(names)
        files = {}
        for name in sorted({n for names in self.weight_map.values() for n in names}):
            path = os.path.join(self.directory, name)
            if os.path.basename(name) != name or not os.path.isfile(path):
                raise ValueError(f"{index} names a weights shard that is missing: {path}")
            files[name] = path
        return files

    def close(self):
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _groups_for(self, group: str) -> list:
        vars_path = f"{group}/vars"
        if None in self._handles:
            handle = self._handles[None]
            return [handle[vars_path]] if vars_path in handle else []
        names = self.weight_map.get(vars_path, [])
        return [self._handles[n][vars_path] for n in names if vars_path in self._handles[n]]

    def values(self, group: str) -> list:
        """The arrays of `group/vars/0..n-1` (an empty list when the group is absent)."""
        found = {}
        for h5_group in self._groups_for(group):
            for key, dataset in h5_group.items():
                found[key] = dataset
        try:
            keys = sorted(found, key=int)
        except ValueError:
            raise ValueError(f"{self.source}: unexpected variable names {sorted(found)} in "
                             f"{group}/vars") from None
        if keys != [str(i) for i in range(len(keys))]:
            raise ValueError(f"{self.source}: {group}/vars holds variables {keys}.")
        try:
            return [np.asarray(found[k][()]) for k in keys]
        except OSError as error:
            raise ValueError(f"Preset weights are corrupt: {self.source}: {group}: {error}") \
                from None

    def all_groups(self) -> set:
        """Every group that holds variables."""
        import h5py

        out = set()
        for handle in self._handles.values():
            def visit(name, item, out=out):
                if isinstance(item, h5py.Dataset) and "/vars/" in name:
                    out.add(name.rsplit("/vars/", 1)[0])
            handle.visititems(visit)
        return out


def stored_tied_embeddings(directory: str, backbone_cls) -> bool:
    """Whether the weights hold one embedding table for input and output (KerasHub's Llama
    backbones take `tie_word_embeddings` but leave it out of their config)."""
    from keras_lm.presets.keras_hub_layout import layout_of

    with WeightsFile(directory) as weights:
        values = weights.values(f"layers/{layout_of(backbone_cls).embedding}")
    # Untied: a second table laid out [hidden, vocab] (int4: [hidden / 2, vocab]), after the
    # table's own scales ([vocab] or, grouped int4, [vocab, groups]: vocabulary first).
    vocabulary = values[0].shape[0]
    return not any(value.ndim == 2 and value.shape[1] == vocabulary != value.shape[0]
                   for value in values[1:])


def _layer_store(layer) -> dict:
    """`{key: array}` as the layer saves itself (KerasHub's order; LoRA merged in)."""
    import keras

    store = {}
    layer.save_own_variables(store)
    return {key: keras.ops.convert_to_numpy(value) for key, value in store.items()}


def _integer(dtype) -> bool:
    return np.dtype(dtype).kind in "iub"


def _to_ours(row: Row, index: int, value: np.ndarray, shape: tuple) -> np.ndarray:
    if row.head_major and index == 0 and value.ndim == 3:
        value = value.transpose(1, 0, 2)
    elif value.shape != shape and value.size == int(np.prod(shape)) and index > 0:
        value = value.reshape(shape)  # a quantization scale kept with other unit axes
    return value


def _to_theirs(row: Row, index: int, value: np.ndarray) -> np.ndarray:
    if row.head_major and index == 0 and value.ndim == 3:
        return value.transpose(1, 0, 2)
    if row.dense and index > 0:
        return value.reshape(-1)  # bias, or the int8 scale Keras' Dense keeps flat
    return value


def load_keras_hub_weights(backbone, directory: str) -> str:
    """Assign every variable of `backbone` from KerasHub's weights file in `directory`;
    returns the file's path (for messages)."""
    with WeightsFile(directory) as weights:
        mapped = rows(backbone)
        unused = weights.all_groups() - {row.group for row in mapped}
        if unused:
            raise ValueError(
                f"{weights.source} holds weights this model has no place for: "
                f"{sorted(unused)[:5]} ({len(unused)} total). The config and the weights do "
                "not match (for example a different `num_layers`)."
            )
        for row in mapped:
            expected = _layer_store(row.layer)
            values = weights.values(row.group)
            if len(values) != len(expected):
                raise ValueError(
                    f"{weights.source}: {row.group} holds {len(values)} variables but "
                    f"{row.layer.path} has {len(expected)} (a quantized and a float model?)."
                )
            store = {}
            for i, ((key, ours), value) in enumerate(zip(expected.items(), values, strict=True)):
                value = _to_ours(row, i, value, ours.shape)
                if value.shape != ours.shape:
                    raise ValueError(
                        f"{weights.source}: {row.group}/vars/{i} has shape {value.shape} but "
                        f"{row.layer.path} needs {ours.shape}."
                    )
                if _integer(value.dtype) != _integer(ours.dtype):
                    raise ValueError(
                        f"{weights.source}: {row.group}/vars/{i} is {value.dtype} but "
                        f"{row.layer.path} holds {ours.dtype}."
                    )
                store[key] = value
            row.layer.load_own_variables(store)
    return weights.source


def save_keras_hub_weights(backbone, path: str) -> None:
    """Write `backbone`'s variables to `path` in KerasHub's layout."""
    import h5py

    with h5py.File(path, "w") as f:
        for row in rows(backbone):
            group = f.create_group(f"{row.group}/vars")
            for i, value in enumerate(_layer_store(row.layer).values()):
                group.create_dataset(str(i), data=_to_theirs(row, i, value))
