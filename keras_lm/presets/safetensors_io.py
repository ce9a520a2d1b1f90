"""A small safetensors reader/writer on numpy memory maps (bfloat16 via ml_dtypes)."""

import json
import os
import struct

import ml_dtypes
import numpy as np

from keras_lm.checks import json_object, read_json_file

DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def _check_header(header) -> None:
    if not isinstance(header, dict):
        raise ValueError(f"the header must be a JSON object, not a {type(header).__name__}")
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not (isinstance(entry, dict) and {"dtype", "shape", "data_offsets"} <= set(entry)):
            raise ValueError(f"the header entry of tensor {key!r} lacks dtype/shape/offsets")


class SafetensorsFile:
    """Lazy access to the tensors of one `.safetensors` file; nothing is read until asked.

    Example:
    >>> f = SafetensorsFile("model.safetensors")  # doctest: +SKIP
    >>> f.get("wte.weight").shape  # doctest: +SKIP
    """

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                (header_size,) = struct.unpack("<Q", f.read(8))
                if header_size <= 0 or header_size > os.path.getsize(path) - 8:
                    raise ValueError("header size is out of range")
                header = json.loads(f.read(header_size))
            _check_header(header)
        except (OSError, struct.error, ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not a valid safetensors file: {error}") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self._entries = header
        self._data_start = 8 + header_size
        self._memmap = None

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple:
        return tuple(self._entries[key]["shape"])

    def get(self, key: str) -> np.ndarray:
        entry = self._entries[key]
        if entry["dtype"] not in DTYPES:
            raise ValueError(f"{self.path}: tensor {key!r} has unsupported dtype {entry['dtype']}")
        if self._memmap is None:
            self._memmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        start, end = entry["data_offsets"]
        raw = self._memmap[self._data_start + start : self._data_start + end]
        dtype = np.dtype(DTYPES[entry["dtype"]])
        expected = int(np.prod(entry["shape"], dtype=np.int64)) * dtype.itemsize
        if raw.size != expected:
            raise ValueError(f"{self.path}: tensor {key!r} is truncated or corrupt")
        return raw.view(dtype).reshape(entry["shape"])


def save_file(tensors: dict, path: str, metadata: dict | None = None) -> None:
    """Write numpy arrays to `path` in safetensors format."""
    header, offset = {}, 0
    arrays = {}
    for key in sorted(tensors):
        array = np.ascontiguousarray(tensors[key])
        if array.dtype not in NAMES:
            raise ValueError(f"Cannot save tensor {key!r} of dtype {array.dtype} to safetensors")
        arrays[key] = array
        header[key] = {
            "dtype": NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for key in sorted(arrays):
            f.write(arrays[key].tobytes())


class SafetensorsCheckpoint:
    """One or several (sharded, with `model.safetensors.index.json`) safetensors files."""

    def __init__(self, directory: str):
        index = os.path.join(directory, "model.safetensors.index.json")
        single = os.path.join(directory, "model.safetensors")
        if os.path.isfile(index):
            data = json_object(read_json_file(index, "safetensors index"), index,
                               "safetensors index", required=("weight_map",))
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict) or not all(
                isinstance(v, str) for v in weight_map.values()
            ):
                raise ValueError(f"{index}: `weight_map` must map tensor names to file names.")
            for name in set(weight_map.values()):
                if os.path.basename(name) != name or not os.path.isfile(
                    os.path.join(directory, name)
                ):
                    raise ValueError(f"{index} names a shard that is not in {directory}: {name}")
            files = {name: SafetensorsFile(os.path.join(directory, name))
                     for name in sorted(set(weight_map.values()))}
            self._where = {key: files[name] for key, name in weight_map.items()}
        elif os.path.isfile(single):
            file = SafetensorsFile(single)
            self._where = {key: file for key in file.keys()}
        else:
            pickles = sorted(f for f in os.listdir(directory)
                             if f.endswith(".bin") or f.endswith(".bin.index.json"))
            if pickles:
                raise ValueError(
                    f"{directory} holds PyTorch pickle weights ({', '.join(pickles[:3])}), "
                    "which keras_lm never loads: unpickling a file can run any code in it. "
                    "Convert them to safetensors first, e.g. with transformers: "
                    "`AutoModelForCausalLM.from_pretrained(dir).save_pretrained(new_dir)`."
                )
            raise ValueError(
                f"No safetensors weights in {directory}: expected model.safetensors or "
                "model.safetensors.index.json."
            )

    def keys(self) -> list[str]:
        return list(self._where)

    def get(self, key: str) -> np.ndarray:
        return self._where[key].get(key)

    def shape(self, key: str) -> tuple:
        return self._where[key].shape(key)
