"""Skip Keras' per-call bookkeeping on the decode hot path.

`Layer.__call__` (name scopes, autocast, masking, tracking) costs more than the math of a
one-token decode step on CPU. Inside `direct_layer_calls()`, `invoke(layer, ...)` calls
`layer.call` directly. Only used where no autocast is needed (variable dtype == compute dtype).
"""

import contextlib
import threading

from keras_lm.backend import ops as fast_ops

_state = threading.local()


def invoke(layer, *args, **kwargs):
    """`layer(*args, **kwargs)`, or `layer.call(...)` inside `direct_layer_calls()`."""
    if getattr(_state, "direct", False):
        if layer.dtype_policy.quantization_mode is not None:
            return layer.quantized_call(*args, **kwargs)
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)


def invoke_together(layers, x) -> list:
    """`[invoke(layer, x) for layer in layers]` for projections of the same input, as one
    product where the backend has laid their kernels out side by side
    (`fast_ops.joint_projection`)."""
    if getattr(_state, "direct", False) and fast_ops.joint_projection is not None:
        outputs = fast_ops.joint_projection(layers, x)
        if outputs is not None:
            return outputs
    return [invoke(layer, x) for layer in layers]


@contextlib.contextmanager
def direct_layer_calls(enabled: bool = True):
    previous = getattr(_state, "direct", False)
    _state.direct = enabled
    try:
        yield
    finally:
        _state.direct = previous
