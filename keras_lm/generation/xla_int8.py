"""Faster int8 products for inference on the JAX backend.

Keras runs an int8 layer as `quantize(inputs) @ int8 kernel` with int32 accumulation. On XLA's
CPU backend that product is slow in two cases, measured on a 2-core AMD EPYC (twelve
`[3072, 768]` kernels, ms per pass):

- one row (a decode step at batch 1) takes a scalar loop: 53 ms, against 5.1 ms in float32;
  two rows take the vectorized kernel (an extra zero row costs nothing measurable);
- a kernel stored `[K, N]` (Keras' layout) reads at about float32 speed (5.1 ms); the same
  product against its row-major transpose `[N, K]` takes 2.1 ms.

So for inference the generation engine carries a row-major int8 copy of every quantized
kernel (`row_major_companions`, about the int8 size of the weights again, made once and
refreshed when the layer's kernel changes), and `int8_projection` uses it whenever the engine
has bound it; elsewhere it pads one row to two and uses Keras' kernel. Numerics are Keras':
inputs quantized per row (abs-max), int32 products, `/ (input_scale * kernel_scale)`.
"""

import weakref

import keras

from keras_lm.layers import fast_ops

_jax = None
# layer -> (companion variable, weak reference to the kernel value it was made from)
_companions = weakref.WeakKeyDictionary()


def _source_kernel(layer):
    """`(int8 kernel value, K)` for a layer whose kernel needs a row-major copy, or None (a
    tied head's embeddings are already row-major)."""
    from keras_lm.layers.embedding import ReversibleEmbedding
    from keras_lm.layers.projection import Projection

    if layer.quantization_mode != "int8":
        return None
    if isinstance(layer, Projection) and getattr(layer, "_kernel_rows", None):
        return layer._kernel.value, layer._kernel_rows
    if isinstance(layer, ReversibleEmbedding) and not layer.tie_weights:
        return layer.reverse_embeddings.value, layer.output_dim
    return None


def row_major_companions(backbone) -> list:
    """Row-major int8 copies of the quantized kernels of `backbone` (empty off JAX or when
    nothing is quantized), created on first use and refreshed when a kernel was reassigned.
    The generation engine passes them to its compiled functions with the model's variables.
    """
    if _jax is None:
        return []
    found = []
    for layer in backbone._flatten_layers():
        source = _source_kernel(layer)
        if source is None:
            continue
        kernel, k = source
        entry = _companions.get(layer)
        if entry is None or entry[1]() is not kernel:
            rows = _jax.numpy.transpose(_jax.numpy.reshape(kernel, (k, -1)))
            if entry is None:
                # Not an attribute of the layer: it must not join its weights or presets.
                variable = keras.Variable(rows, dtype="int8", trainable=False,
                                          name=f"{layer.name}_int8_rows")
            else:
                variable = entry[0]
                variable.assign(rows)
            entry = _companions[layer] = (variable, weakref.ref(kernel))
        found.append(entry[0])
    return found


def _bound_companion(layer):
    """The traced row-major copy of `layer`'s kernel if the running scope binds it."""
    entry = _companions.get(layer)
    if entry is None:
        return None
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    scope = get_stateless_scope()
    return None if scope is None else scope.get_current_value(entry[0])


def int8_projection(layer, inputs, kernel=None, scale=None):
    """`inputs [..., K]` times `layer`'s int8 kernel, dequantized, as Keras computes it, or
    None to leave the call to Keras (training, or no input quantizer: weight-only mode).
    `kernel`/`scale` default to a `Projection`'s `_kernel`/`kernel_scale`."""
    from keras_lm.layers.embedding import ReversibleEmbedding

    quantize = keras.quantizers.abs_max_quantize
    if kernel is None:
        quantize = getattr(layer, "inputs_quantizer", None)
        if quantize is None:
            return None
        kernel, scale = layer._kernel.value, layer.kernel_scale.value
    lax = _jax.lax
    shape = tuple(inputs.shape)
    k = shape[-1]
    rows = 1
    for size in shape[:-1]:
        rows *= size
    quantized, input_scale = quantize(fast_ops.reshape(inputs, (rows, k)), axis=-1)
    if rows == 1:
        quantized = _jax.numpy.pad(quantized, ((0, 1), (0, 0)))
    row_major = _bound_companion(layer)
    if row_major is None and isinstance(layer, ReversibleEmbedding) and layer.tie_weights:
        row_major = layer._embeddings.value
    if row_major is not None:
        product = lax.dot_general(quantized, row_major, (((1,), (1,)), ((), ())),
                                  preferred_element_type="int32")
    else:
        product = lax.dot_general(quantized, fast_ops.reshape(kernel, (k, -1)),
                                  (((1,), (0,)), ((), ())), preferred_element_type="int32")
    product = fast_ops.cast(product[:rows], layer.compute_dtype)
    out = product / (input_scale * fast_ops.reshape(scale, (-1,)))
    return fast_ops.reshape(out, shape[:-1] + (-1,))


def install() -> bool:
    """Route `fast_ops.int8_projection` through here when the backend is JAX."""
    global _jax
    if keras.backend.backend() != "jax":
        return False
    import jax

    _jax = jax
    fast_ops.int8_projection = int8_projection
    return True
