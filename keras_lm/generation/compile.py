"""The one place that compiles generation functions per backend (jit / tf.function / no_grad).

A compiled function is `fn(model_values, *args)`. On JAX `model_values` are the current
variable values passed as arguments (so weights are never baked into the program); elsewhere
it is None and the layers read their variables directly.
"""

import keras


class CompiledFunction:
    """Wrap `fn` for the active backend; `trace_count` counts (re)compilations on JAX and TF."""

    def __init__(self, fn, variables):
        self._fn = fn
        self._variables = variables
        self.trace_count = 0
        backend = keras.backend.backend()
        self.backend = backend
        if backend == "jax":
            import jax

            self._compiled = jax.jit(self._traced)
        elif backend == "tensorflow":
            import tensorflow as tf

            self._compiled = tf.function(self._traced, reduce_retracing=True)
        else:
            self._compiled = None

    def _traced(self, model_values, *args):
        self.trace_count += 1
        return self._fn(model_values, *args)

    def __call__(self, *args):
        if self.backend == "jax":
            return self._compiled([v.value for v in self._variables], *args)
        if self.backend == "tensorflow":
            return self._compiled(None, *args)
        if self.backend == "torch":
            import torch

            with torch.no_grad():
                return self._fn(None, *args)
        return self._fn(None, *args)


def to_numpy(x):
    """A backend tensor as a numpy array."""
    return keras.ops.convert_to_numpy(x)


def write_cache(cache, start, update):
    """Write `update` into `cache` at `[:, start:start + len]` and return the cache.

    Torch writes in place (generation runs under no_grad and never reuses the old cache);
    `keras.ops.slice_update` would copy the whole cache every step. Elsewhere the functional
    update is used, which XLA performs in place inside compiled loops.
    """
    update = keras.ops.cast(update, cache.dtype)
    if keras.backend.backend() == "torch" and not cache.requires_grad and cache.is_contiguous():
        length = update.shape[1]
        cache[:, start : start + length] = update
        return cache
    return keras.ops.slice_update(cache, (0, start, 0, 0), update)
