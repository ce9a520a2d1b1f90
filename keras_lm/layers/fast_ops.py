"""`keras.ops` without the symbolic-tensor dispatch, for code that only sees backend tensors.

Every `keras.ops` call first flattens its arguments to look for symbolic `KerasTensor`s. Inside
`Layer.call` and the generation loop the arguments are always concrete backend tensors (or
backend tracers), so that check is pure overhead, and on eager torch it costs more than the
math of a one-token decode step. This module binds the hot functions to the active backend's
implementations and forwards every other name to `keras.ops`.
"""

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


globals().update(_bind())

# A backend module may install a faster inference-only int8 projection here:
# `int8_projection(layer, flat_inputs)` → outputs, or None to use Keras' int8 path.
int8_projection = None
# ... and a joint product for projections of one input whose kernels share storage:
# `joint_projection(layers, inputs)` → list of outputs, or None to call them one by one.
joint_projection = None


def __getattr__(name):
    return getattr(_keras_ops, name)
