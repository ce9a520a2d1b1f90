"""`keras.ops` for the hot paths, with each backend's faster kernels chosen on import.

Every `keras.ops` call first flattens its arguments to look for symbolic `KerasTensor`s. Inside
`Layer.call` and the generation loop the arguments are always concrete backend tensors (or
backend tracers), so that check is pure overhead, and on eager torch it costs more than the
math of a one-token decode step. This module binds the hot functions to the active backend's
implementations and forwards every other name to `keras.ops`.

Backend-specific kernels, chosen once here (never patched in from elsewhere):
- `matmul`: on torch with oneDNN, fast CPU inference products (`torch_kernels`).
- `int8_projection(layer, flat_inputs)`: an inference-only int8 product (FBGEMM on torch,
  row-major int8 copies on JAX), or None to use Keras' int8 path.
- `int4_projection(layer, flat_inputs)`: the same for int4 layers (and int4 heads), or None.
- `joint_projection(layers, inputs)`: projections of one input whose kernels share storage
  as one product (torch), or None to call them one by one.
- `write_cache(cache, start, update)`: a KV-cache write (in place on torch).
- `first_argmax(logits)`: greedy choice (a cheaper reduction on JAX).
- `fuse_optimizer(optimizer)`: Keras' Adam/AdamW updated by torch's fused CPU kernel (torch);
  returns whether it applied.
- `materialized_gradient(x)`: identity; on JAX its gradient is computed once instead of
  being fused into (and recomputed by) every consumer (`jax_gradients`).
- `records_gradients()`: True where eager autograd is recording (torch), so inference-only
  kernels must stay out of the way even inside a custom gradient's forward.

Example:
>>> from keras_lm.backend import ops
>>> ops.first_argmax(ops.convert_to_tensor([[0.1, 3.0, 3.0]])).tolist()  # doctest: +SKIP
[1]
"""

import keras
from keras import ops as _keras_ops

_HOT = {
    "numpy": ["reshape", "matmul", "einsum", "where", "mean", "square", "concatenate", "cos",
              "sin", "tanh", "arange", "logical_and", "logical_or", "logical_not", "any",
              "all", "argmax", "take", "take_along_axis", "transpose", "zeros_like",
              "expand_dims", "maximum", "repeat", "cumsum", "max", "full", "zeros", "ones"],
    "core": ["cast", "convert_to_tensor", "slice_update", "shape"],
    "nn": ["softmax", "log_softmax", "gelu", "silu", "relu", "one_hot"],
    "math": ["rsqrt", "top_k"],
}


def _bind():
    bound = {}
    try:
        from keras.src import backend
    except ImportError:  # a future Keras layout: fall back to the public ops
        return bound
    for module_name, names in _HOT.items():
        module = getattr(backend, module_name, None)
        for name in names:
            function = getattr(module, name, None)
            if function is not None:
                bound[name] = function
    return bound


_bound = _bind()
globals().update(_bound)
_cast = _bound.get("cast", _keras_ops.cast)
_argmax = _bound.get("argmax", _keras_ops.argmax)
_slice_update = _bound.get("slice_update", _keras_ops.slice_update)


def write_cache(cache, start, update):
    """Write `update` into `cache` at `[:, start:start + len]` (`[start:start + len]` for a
    cache of rank 2) and return the cache. The functional update; XLA performs it in place
    inside compiled loops."""
    update = _cast(update, cache.dtype)
    origin = (start, 0) if len(cache.shape) == 2 else (0, start, 0)
    return _slice_update(cache, origin, update)


def first_argmax(logits):
    """`argmax(logits, axis=-1)` as int32 (the first maximum wins)."""
    return _cast(_argmax(logits, axis=-1), "int32")


def records_gradients() -> bool:
    return False


def fuse_optimizer(optimizer) -> bool:
    return False


def materialized_gradient(x):
    return x


int8_projection = None
int4_projection = None
joint_projection = None
distribute = None  # (tensor, device_mesh, axes) -> placed tensor; axes may join mesh axes

_BACKEND = keras.backend.backend()
if _BACKEND == "torch":
    from keras_lm.backend import torch_kernels as _torch_kernels

    write_cache = _torch_kernels.write_cache
    records_gradients = _torch_kernels.records_gradients
    from keras_lm.backend import torch_optimizers as _torch_optimizers

    fuse_optimizer = _torch_optimizers.fuse_adam
    if _torch_kernels.ONEDNN:
        matmul = _torch_kernels.matmul
        int8_projection = _torch_kernels.int8_projection
        int4_projection = _torch_kernels.int4_projection
        joint_projection = _torch_kernels.joint_projection
elif _BACKEND == "jax":
    from keras_lm.backend import xla_kernels as _xla_kernels

    int8_projection = _xla_kernels.int8_projection
    int4_projection = _xla_kernels.int4_projection
    first_argmax = _xla_kernels.first_argmax
    from keras_lm.backend import jax_gradients as _jax_gradients

    materialized_gradient = _jax_gradients.materialized_gradient
    from keras_lm.backend import jax_sharding as _jax_sharding

    distribute = _jax_sharding.distribute


def __getattr__(name):
    return getattr(_keras_ops, name)
