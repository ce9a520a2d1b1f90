"""Conversion maps as data, and the one loader that applies and checks them."""

import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from keras_lm.backend.host_arrays import adopt, aligned_empty


@dataclass
class ConversionMap:
    """`rows`: (our variable path, their tensor key, transform(np.ndarray) -> np.ndarray).

    `skipped` lists source keys that are knowingly unused (buffers, tied heads).
    """

    rows: list = field(default_factory=list)
    skipped: set = field(default_factory=set)

    def add(self, variable: str, key: str, transform: Callable | None = None) -> None:
        self.rows.append((variable, key, transform or (lambda x: x)))


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
    if value.dtype.kind == "f":
        return bool(np.isfinite(value).all())
    if value.dtype.kind == "V":  # bfloat16 and friends (ml_dtypes)
        return bool(np.isfinite(value.astype(np.float32)).all())
    return True


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
