"""Choose a Keras backend before Keras is imported, so TensorFlow is never required."""

import importlib.util
import os
import sys

_PREFERENCE = ("jax", "torch", "tensorflow")


def choose_backend() -> str:
    """Set `KERAS_BACKEND` when the user has not, picking the first installed backend.

    Order: jax, torch, tensorflow. An explicit `KERAS_BACKEND` always wins. If Keras was
    already imported, its backend is kept.
    """
    if "KERAS_BACKEND" in os.environ:
        return os.environ["KERAS_BACKEND"]
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    for name in _PREFERENCE:
        if importlib.util.find_spec(name) is not None:
            os.environ["KERAS_BACKEND"] = name
            return name
    raise ImportError(
        "keras_lm needs one Keras backend: install jax (`pip install keras-lm[jax]`), "
        "torch (`pip install keras-lm[torch]`) or tensorflow."
    )
