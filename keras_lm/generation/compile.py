"""The one place that compiles generation functions per backend (jit / tf.function / no_grad).

A compiled function is `fn(model_values, *args)`. On JAX `model_values` are the current
variable values passed as arguments (so weights are never baked into the program); elsewhere
it is None and the layers read their variables directly.

Torch runs the decode loop eagerly, where Python and Keras dispatch cost more than the math of
a one-token step; `TracedStep` records that step once per input shapes with TorchScript and
replays it (weights are again arguments, so the recording never goes stale).
"""

import warnings

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


class TracedStep:
    """`fn(*tensors)` on torch, recorded by `torch.jit.trace` once per input shapes and dtypes.

    `fn` runs with the model's variables mapped to traced inputs, and must write caches in
    place (see `write_cache`) and return tensors. Tracing failures fall back to eager calls.
    Other backends (and `enabled=False`) call `fn` eagerly.
    """

    def __init__(self, fn, variables, enabled: bool = True):
        self._fn = fn
        self._variables = variables
        self._traced = {}
        self.trace_count = 0
        self.enabled = enabled and keras.backend.backend() == "torch"

    def _with_values(self, *flat):
        values, args = flat[: len(self._variables)], flat[len(self._variables) :]
        with keras.StatelessScope(state_mapping=list(zip(self._variables, values, strict=True))):
            return self._fn(*args)

    def __call__(self, *args):
        if not self.enabled:
            return self._fn(*args)
        import torch

        values = [v.value for v in self._variables]
        # Versions change on in-place writes: packed int8 weights are constants of a recording.
        key = (tuple((tuple(a.shape), a.dtype) for a in args), tuple(v._version for v in values))
        traced = self._traced.get(key)
        if traced is None:
            traced = self._traced[key] = self._trace(values, args)
        if traced is False:
            return self._fn(*args)
        # The profiling executor's re-optimisation costs ~0.4 s and gains nothing here.
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return traced(*values, *args)

    def _trace(self, values, args):
        import torch

        from keras_lm.generation import torch_matmul

        self.trace_count += 1
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._fn(*args)  # eager first: packs int8 weights (cache writes are idempotent)
                # TorchScript only records custom objects (packed weights) owned by a module.
                module = torch.nn.Module()
                for i, packed in enumerate(torch_matmul.packed_weights()):
                    setattr(module, f"packed_{i}", packed)
                module.forward = self._with_values
                return torch.jit.trace(module, (*values, *args), check_trace=False)
        except Exception as error:  # noqa: BLE001 - any tracer limitation means "run eagerly"
            warnings.warn(f"Decode step runs eagerly (tracing failed: {error})", stacklevel=3)
            return False


def to_numpy(x):
    """A backend tensor as a numpy array."""
    return keras.ops.convert_to_numpy(x)


def write_cache(cache, start, update):
    """Write `update` into `cache` at `[:, start:start + len]` and return the cache.

    Torch writes in place (generation runs under no_grad and never reuses the old cache);
    `keras.ops.slice_update` would copy the whole cache every step. `index_copy_` with a
    tensor of slots keeps a tensor `start` symbolic when `TracedStep` records the step.
    Elsewhere the functional update is used, which XLA performs in place inside compiled loops.
    """
    update = keras.ops.cast(update, cache.dtype)
    if keras.backend.backend() == "torch" and not cache.requires_grad and cache.is_contiguous():
        import torch

        slots = torch.arange(update.shape[1], device=cache.device) + start
        cache.index_copy_(1, slots, update)
        return cache
    return keras.ops.slice_update(cache, (0, start, 0, 0), update)
