"""`keras.RematScope` for our layers and models (gradient checkpointing on every backend).

Keras rematerializes a layer by wrapping its `call` in the backend's checkpoint function
with every argument passed through. Three things break there, and this mixin handles them:
- Python arguments (`training`, flags) become traced values on JAX, so `if training:`
  fails: they are bound before the wrapped function is made.
- TensorFlow's `recompute_grad` takes no keyword arguments in a graph: tensors passed by
  keyword are passed by position.
- Dropout advances a seed variable; inside a JAX checkpoint that leaks a traced value: the
  outermost rematerialized layer draws the seeds of the dropouts inside it beforehand and
  hands them in as inputs.
"""

import functools
import math

import keras


def _is_python_value(value) -> bool:
    leaves = keras.tree.flatten(value) if isinstance(value, (dict, list, tuple)) else [value]
    return all(v is None or isinstance(v, (bool, int, float, str)) for v in leaves)


def _is_float_tensor(value) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and hasattr(value, "shape") and "float" in str(dtype)


class StaticArgumentsRemat:
    """Mixin (listed before the Keras base class) making `keras.RematScope` work."""

    def rematerialized_call(self, layer_call, *args, **kwargs):
        if isinstance(self, keras.Model):
            # Recomputing a whole model saves nothing (and Keras cannot size a functional
            # model's output inside a JAX training step): its layers do the recomputing.
            return layer_call
        # Keras calls this with the very arguments it then calls the result with.
        static = {k: v for k, v in kwargs.items() if _is_python_value(v)}
        keys = [k for k in kwargs if k not in static]
        parts = list(args) + [kwargs[k] for k in keys]
        floating = [i for i, v in enumerate(parts) if _is_float_tensor(v)]
        dropouts = []
        if static.get("training") and keras.backend.backend() in ("jax", "tensorflow"):
            dropouts = [layer for layer in self._flatten_layers(include_self=True)
                        if isinstance(layer, Dropout) and layer.rate > 0]
        starts, used = [], []  # per dropout: (seed, uses so far) on entry; uses in this call

        def positional(*floats):
            # Only float tensors go through the checkpoint (TensorFlow differentiates every
            # input, and masks and ids have no gradient); the rest is bound here.
            values = list(parts)
            for i, value in zip(floating, floats, strict=True):
                values[i] = value
            before = [(layer.drawn_seed, layer.drawn_uses) for layer in dropouts]
            for layer, (seed, uses) in zip(dropouts, starts, strict=True):
                layer.drawn_seed, layer.drawn_uses = seed, uses
            try:
                return layer_call(*values[:len(args)],
                                  **dict(zip(keys, values[len(args):], strict=True)), **static)
            finally:
                # Runs again when TensorFlow recomputes: always restore what was there.
                used[:] = [layer.drawn_uses - uses
                           for layer, (_, uses) in zip(dropouts, starts, strict=True)]
                for layer, (seed, uses), n in zip(dropouts, before, used, strict=True):
                    layer.drawn_seed = seed
                    layer.drawn_uses = uses + n if seed is not None else uses

        if self._remat_mode.mode == "larger_than":
            # Keras sizes the output by tracing `call` in a scope of its own, where a JAX
            # training step's variables have no value; size it from the shapes instead.
            size = self._output_size(args, kwargs, [parts[i] for i in floating])
            big = size > self._remat_mode.output_size_threshold
            inner = keras.remat(positional) if big else positional
        else:
            inner = super().rematerialized_call(positional, *args, **kwargs)

        @functools.wraps(layer_call)
        def call(*call_args, **call_kwargs):
            # Seeds are drawn out here (a draw inside would leak from a JAX checkpoint, and be
            # drawn again when TensorFlow recomputes); a parent's drawn seed is continued.
            owned = [layer.drawn_seed is None for layer in dropouts]
            starts[:] = [(layer.seed_generator.next(), 0) if own
                         else (layer.drawn_seed, layer.drawn_uses)
                         for layer, own in zip(dropouts, owned, strict=True)]
            output = inner(*[parts[i] for i in floating])
            for layer, own, n in zip(dropouts, owned, used, strict=True):
                for _ in range(n - 1 if own else 0):  # n uses draw n seeds, as without remat
                    layer.seed_generator.next()
            return output

        return call

    def _output_size(self, args, kwargs, floats) -> int:
        """Elements of the output: from `compute_output_shape` where the layer has its own,
        else the largest float input (our blocks, attention and norms keep its shape)."""
        if type(self).compute_output_shape is not keras.layers.Layer.compute_output_shape:
            try:
                shape = self.compute_output_shape(*[tuple(a.shape) for a in args])
                return math.prod(d or 1 for d in shape)
            except Exception:  # noqa: BLE001 - fall back to the inputs' size
                pass
        return max((math.prod(v.shape) for v in floats), default=0)


class Dropout(StaticArgumentsRemat, keras.layers.Dropout):
    """`keras.layers.Dropout` that works inside `keras.RematScope` (see the module)."""

    drawn_seed = None  # set while a rematerialized parent runs (JAX)
    drawn_uses = 0

    def call(self, inputs, training=False):
        if training and self.rate > 0 and self.drawn_seed is not None:
            # Use n takes the n-th next seed, as `SeedGenerator.next()` would give it.
            seed = self.drawn_seed + keras.ops.convert_to_tensor([0, self.drawn_uses],
                                                                 self.drawn_seed.dtype)
            self.drawn_uses += 1
            return keras.random.dropout(inputs, self.rate, noise_shape=self.noise_shape,
                                        seed=_GivenSeed(seed))
        return super().call(inputs, training=training)


class _GivenSeed(keras.random.SeedGenerator):
    """A seed already drawn, where Keras' random functions take a `SeedGenerator`."""

    def __init__(self, value):  # no state variable: the seed is `value`
        self._value = value

    def next(self, ordered=True):
        return self._value
