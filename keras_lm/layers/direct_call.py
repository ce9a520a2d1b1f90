"""Skip Keras' per-call bookkeeping on the decode hot path.

`Layer.__call__` (name scopes, autocast, masking, tracking) costs more than the math of a
one-token decode step on CPU. Inside `direct_layer_calls()`, `invoke(layer, ...)` calls
`layer.call` directly. Only used where no autocast is needed (variable dtype == compute dtype).
"""

import contextlib
import threading

_state = threading.local()


def invoke(layer, *args, **kwargs):
    """`layer(*args, **kwargs)`, or `layer.call(...)` inside `direct_layer_calls()`."""
    if getattr(_state, "direct", False):
        if layer.dtype_policy.quantization_mode is not None:
            return layer.quantized_call(*args, **kwargs)
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)


@contextlib.contextmanager
def direct_layer_calls(enabled: bool = True):
    previous = getattr(_state, "direct", False)
    _state.direct = enabled
    try:
        yield
    finally:
        _state.direct = previous
