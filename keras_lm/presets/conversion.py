"""Conversion maps as data, and the one loader that applies and checks them."""

import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from keras_lm.backend.host_arrays import adopt, aligned_empty


@dataclass(frozen=True)
class Transform:
    """Their tensor -> our variable (`forward`, also the call) and back (`inverse`).

    `part=(index, parts)`: ours is the `index`-th of `parts` equal slices along their last
    axis (GPT-2's fused q/k/v); exporting concatenates the parts.
    """

    forward: Callable
    inverse: Callable
    part: tuple | None = None

    def __call__(self, array):
        return self.forward(array)


IDENTITY = Transform(lambda w: w, lambda v: v)
TRANSPOSED = Transform(lambda w: w.T, lambda v: v.T)


def reshaped(shape: tuple, source: tuple) -> Transform:
    """Theirs, of shape `source`, reshaped to `shape`."""
    return Transform(lambda w: w.reshape(shape), lambda v: v.reshape(source))


def transposed_to(shape: tuple, transposed: tuple) -> Transform:
    """Theirs transposed (to the 2-D `transposed` shape), then reshaped to `shape` (a
    PyTorch `Linear` weight to a Keras `EinsumDense` kernel)."""
    return Transform(lambda w: w.T.reshape(shape), lambda v: v.reshape(transposed).T)


def column_part(parts: int, index: int, shape: tuple, source: tuple) -> Transform:
    """The `index`-th of `parts` slices of theirs along the last axis (each of shape
    `source`), reshaped to `shape`."""
    def forward(w):
        size = w.shape[-1] // parts
        return w[..., index * size:(index + 1) * size].reshape(shape)

    return Transform(forward, lambda v: v.reshape(source), part=(index, parts))


def rows_after(offset: int) -> Transform:
    """Theirs without its first `offset` rows (exported as zeros)."""
    return Transform(lambda w: w[offset:], lambda v: np.concatenate(
        [np.zeros((offset,) + v.shape[1:], v.dtype), v]))


@dataclass
class ConversionMap:
    """`rows`: (our variable path, their tensor key, `Transform`).

    `skipped` lists source keys that are knowingly unused (buffers, tied heads).
    """

    rows: list = field(default_factory=list)
    skipped: set = field(default_factory=set)

    def add(self, variable: str, key: str, transform: Transform = IDENTITY) -> None:
        self.rows.append((variable, key, transform))

    def export(self, model, overrides: dict | None = None) -> dict:
        """Their tensors from `model`'s variables (or `overrides[path]`): every transform
        inverted, parts joined."""
        import keras

        variables = weight_variables(model)
        overrides = overrides or {}
        tensors, parts = {}, {}
        for path, key, transform in self.rows:
            value = overrides.get(path)
            if value is None:
                value = keras.ops.convert_to_numpy(variables[path].value)
            value = np.asarray(value)
            theirs = transform.inverse(value)
            if transform.part is None:
                tensors[key] = theirs
            else:
                index, count = transform.part
                parts.setdefault(key, [None] * count)[index] = theirs
        for key, pieces in parts.items():
            tensors[key] = np.concatenate(pieces, axis=-1)
        return {key: np.ascontiguousarray(value) for key, value in tensors.items()}


def build_checked(cls, config: dict, source: str, build=None):
    """`build(config)` (default `cls(**config)`), with a missing or unknown argument, or a bad
    value, reported as a ValueError naming `source` (the config file)."""
    parameters = inspect.signature(cls.__init__).parameters
    required = [name for name, p in parameters.items()
                if p.default is p.empty and name != "self"
                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    missing = [name for name in required if name not in config]
    if missing:
        raise ValueError(f"{source}: the {cls.__name__} config lacks {missing}.")
    try:
        return build(config) if build is not None else cls(**config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: cannot build {cls.__name__}: {error}") from None


def check_finite(variables, source: str) -> None:
    """Raise a ValueError naming every floating-point variable that holds NaN or infinity."""
    import keras

    bad = []
    for variable in variables:
        if "float" not in str(variable.dtype):
            continue
        if not bool(keras.ops.all(keras.ops.isfinite(variable.value))):
            bad.append(variable.path)
    if bad:
        raise ValueError(
            f"{source}: weights hold NaN or infinite values: {bad[:5]} ({len(bad)} total)."
        )


def _all_finite(value: np.ndarray) -> bool:
    if value.dtype.kind == "V":  # bfloat16 and friends (ml_dtypes)
        value = value.astype(np.float32)
    elif value.dtype.kind != "f":
        return True
    # A NaN or infinite element makes the sum NaN or infinite, and a sum is one read of the
    # tensor (2.3x faster than `isfinite().all()`, which writes a mask as large). Finite
    # values can overflow the sum too: only then is each element checked.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(value, axis=None)):
            return True
    return bool(np.isfinite(value).all())


def weight_variables(model) -> dict:
    """Weights by path, leaving out RNG state (dropout / sampler seeds)."""
    return {v.path: v for v in model.variables if "seed_generator" not in v.path}


def apply_conversion(model, checkpoint, conversion: ConversionMap, source: str = "") -> None:
    """Assign every mapped tensor; fail if a variable is unset, a shape differs, or a source
    tensor was neither used nor knowingly skipped."""
    variables = weight_variables(model)
    available = set(checkpoint.keys())
    assigned, used = set(), set()
    rows = conversion.rows
    if len(rows) >= 50 and sys.stderr.isatty():
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc=f"Loading {os.path.basename(source) or 'weights'}", unit="tensor")
    for path, key, transform in rows:
        if path not in variables:
            raise ValueError(f"Conversion map names unknown variable {path!r}")
        if key not in available:
            raise ValueError(f"{source}: checkpoint has no tensor {key!r} (needed for {path})")
        value = np.asarray(transform(checkpoint.get(key)))
        if not _all_finite(value):
            raise ValueError(f"{source}: tensor {key!r} holds NaN or infinite values.")
        variable = variables[path]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{source}: tensor {key!r} has shape {value.shape} after conversion, but "
                f"{path} needs {tuple(variable.shape)}"
            )
        if value.dtype.kind == "V":  # bfloat16: numpy cannot hand it over as is
            value = value.astype(np.float32)
        if not (value.flags.writeable and value.flags.c_contiguous):
            value = _owned_copy(value)  # one copy the backend can adopt, not two
        variable.assign(adopt(value))
        assigned.add(path)
        used.add(key)
    missing = sorted(set(variables) - assigned - _lora_paths(variables))
    if missing:
        raise ValueError(f"{source}: no checkpoint tensor for {missing[:5]} ({len(missing)} total)")
    unused = sorted(available - used - conversion.skipped)
    if unused:
        raise ValueError(
            f"{source}: checkpoint tensors were not used: {unused[:5]} ({len(unused)} total). "
            "The checkpoint does not match this architecture."
        )


def _owned_copy(value: np.ndarray) -> np.ndarray:
    out = aligned_empty(value.shape, value.dtype)
    out[...] = value
    return out


def _lora_paths(variables):
    return {p for p in variables if "lora_kernel" in p}
