"""Faster kernels for inference on the JAX backend: int8 products and the greedy choice.

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

Layers are reached through their public hooks: `decode_kernel()` (the stored kernel and its
contracted rows) and, for a tied head, `row_major_head()`.
"""

import weakref

import jax
import jax.numpy as jnp
import keras

# layer -> (companion variables, weak reference to the kernel value they were made from)
_companions = weakref.WeakKeyDictionary()


def _source_kernel(layer):
    """The stored kernel value of a layer that needs a row-major copy, or None (a tied int8
    head's embeddings are already row-major)."""
    if layer.quantization_mode == "int4" and hasattr(layer, "int4_weights"):
        return layer.decode_source().value
    hook = getattr(layer, "decode_kernel", None)
    if layer.quantization_mode != "int8" or hook is None:
        return None
    source = hook()
    return None if source is None else source[0].value


def _row_major_copy(layer):
    """`[rows [N, K] int8, scale [N] or None]`: the int8 kernel transposed, or an int4
    layer's weights requantized to int8 with one scale per output (Keras' `q / scale`)."""
    if layer.quantization_mode == "int4":
        from keras_lm.layers.int4 import dense_kernel

        weights = dense_kernel(*layer.int4_weights())
        rows, scale = keras.quantizers.abs_max_quantize(weights, axis=-1)
        return [rows, jnp.reshape(scale, (-1,))]
    kernel, k = layer.decode_kernel()
    return [jnp.transpose(jnp.reshape(kernel.value, (k, -1))), None]


def row_major_companions(backbone) -> list:
    """Row-major int8 copies of the quantized kernels of `backbone` (empty when
    nothing is quantized), created on first use and refreshed when a kernel was reassigned.
    The generation engine passes them to its compiled functions with the model's variables.
    """
    found = []
    for layer in backbone._flatten_layers():
        kernel = _source_kernel(layer)
        if kernel is None:
            continue
        entry = _companions.get(layer)
        if entry is None or entry[1]() is not kernel:
            values = _row_major_copy(layer)
            if entry is None:
                # Not attributes of the layer: they must not join its weights or presets.
                variables = [None if value is None else keras.Variable(
                    value, dtype=value.dtype, trainable=False, name=f"{layer.name}_{name}")
                    for value, name in zip(values, ("int8_rows", "int8_scale"), strict=True)]
            else:
                variables = entry[0]
                for variable, value in zip(variables, values, strict=True):
                    if variable is not None:
                        variable.assign(value)
            entry = _companions[layer] = (variables, weakref.ref(kernel))
        found.extend(v for v in entry[0] if v is not None)
    return found


def _bound_companion(layer):
    """The traced `[row-major copy, its scale or None]` of `layer`'s kernel if the running
    scope binds them, else None."""
    entry = _companions.get(layer)
    if entry is None:
        return None
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    scope = get_stateless_scope()
    if scope is None:
        return None
    return [None if v is None else scope.get_current_value(v) for v in entry[0]]


def int4_projection(layer, inputs):
    """`inputs [..., K] @ W.T` for an int4 layer from its int8 companion (XLA:CPU has no
    fused 4-bit product: dequantizing in the step costs ~3x a float32 product, measured),
    or None outside generation (Keras' int4 path)."""
    bound = _bound_companion(layer)
    if bound is None or bound[0] is None:
        return None
    return _int8_rows_product(layer, inputs, keras.quantizers.abs_max_quantize, *bound)


def int8_projection(layer, inputs, kernel=None, scale=None):
    """`inputs [..., K]` times `layer`'s int8 kernel, dequantized, as Keras computes it, or
    None to leave the call to Keras (training, or no input quantizer: weight-only mode).
    `kernel`/`scale` default to a `Projection`'s `stored_kernel`/`kernel_scale`."""
    quantize = keras.quantizers.abs_max_quantize
    if kernel is None:
        quantize = getattr(layer, "inputs_quantizer", None)
        if quantize is None:
            return None
        kernel, scale = layer.stored_kernel.value, layer.kernel_scale.value
    row_major = _bound_companion(layer)
    row_major = None if row_major is None else row_major[0]
    head = getattr(layer, "row_major_head", None)
    if row_major is None and head is not None and head() is not None:
        row_major = head().value
    return _int8_rows_product(layer, inputs, quantize, row_major, scale, kernel)


def _int8_rows_product(layer, inputs, quantize, row_major, scale, kernel=None):
    """Inputs quantized per row, int32 products with `row_major [N, K]` (or Keras'
    `kernel [K, N]`), `/ (input_scale * scale)`."""
    lax = jax.lax
    shape = tuple(inputs.shape)
    k = shape[-1]
    rows = 1
    for size in shape[:-1]:
        rows *= size
    quantized, input_scale = quantize(jnp.reshape(inputs, (rows, k)), axis=-1)
    if rows == 1:
        quantized = jax.numpy.pad(quantized, ((0, 1), (0, 0)))
    if row_major is not None:
        product = lax.dot_general(quantized, row_major, (((1,), (1,)), ((), ())),
                                  preferred_element_type="int32")
    else:
        product = lax.dot_general(quantized, jnp.reshape(kernel, (k, -1)),
                                  (((1,), (0,)), ((), ())), preferred_element_type="int32")
    product = product[:rows].astype(layer.compute_dtype)
    out = product / (input_scale * jnp.reshape(scale, (-1,)))
    return jnp.reshape(out, shape[:-1] + (-1,))


def first_argmax(logits):
    """`argmax(logits, axis=-1)` as int32 (the first maximum wins).

    XLA's CPU argmax is a (value, index) reduction that runs ~4x slower than a max followed
    by a min over matching indices (1.26 vs 0.30 ms over a 262k vocabulary), a whole
    percent of a small model's decode step.
    """
    vocab = int(logits.shape[-1])
    best = jnp.max(logits, axis=-1, keepdims=True)
    index = jnp.where(logits == best, jnp.arange(vocab, dtype="int32"), vocab)
    # A NaN row matches nowhere; stay in range as argmax does.
    return jnp.minimum(jnp.min(index, axis=-1), vocab - 1)
