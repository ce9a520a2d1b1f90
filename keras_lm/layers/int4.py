"""Keras' int4 layouts, read back: unpacking, dequantizing rows, and one common form.

Keras stores int4 weights packed two to a byte with either one scale per output (`q / scale`)
or, grouped along the contracted axis, a scale and zero point per group (`(q - zero) * scale`).
Layers hand their int4 weights to the backend kernels in one form, `int4_weights()`:
`(q [N, K] int8 in [-8, 7], scale [groups, N], offset [groups, N], block)` with
`w[n, k] = q[n, k] * scale[k // block, n] + offset[k // block, n]`.
"""

import keras
from keras.src.quantizers.quantization_config import get_block_size_for_layer

from keras_lm.backend import ops


def unpack(packed, length: int, axis: int):
    """int8 values in [-8, 7] from a packed int4 tensor (`length` along `axis`)."""
    return keras.quantizers.unpack_int4(packed, length, axis=axis, dtype="int8")


def dequantize_rows(q, scale, zero, block):
    """Float rows from int4 rows `q [..., K]` quantized along their last axis: one scale a row
    (`zero` None: Keras' `q / scale`), or `block`-wide groups (`(q - zero) * scale`)."""
    q = ops.cast(q, "float32")
    if zero is None:
        return q / ops.expand_dims(scale, -1)
    k = q.shape[-1]
    scale = ops.repeat(scale, block, axis=-1)[..., :k]
    zero = ops.repeat(ops.cast(zero, "float32"), block, axis=-1)[..., :k]
    return (q - zero) * scale


def multiply_form(q, scale, zero, block):
    """`int4_weights()` from Keras' int4 parameters of `q [N, K]`: `scale` and `zero`
    `[groups, N]` (`(q - zero) * scale`, groups of `block` along K), or `zero` None and a
    per-row `[N]` scale that divides (`q / scale`)."""
    if zero is None:
        scale = ops.reshape(1.0 / scale, (1, -1))
        return q, scale, ops.zeros_like(scale), q.shape[1]
    scale = ops.cast(scale, "float32")
    return q, scale, -ops.cast(zero, "float32") * scale, block


def layer_block(layer):
    """The layer's int4 group size, or None for one scale per output."""
    block = get_block_size_for_layer(layer, None)
    return block if block is not None and block > 0 else None


def dense_kernel(q, scale, offset, block):
    """The float `[N, K]` matrix of `int4_weights()`."""
    k = q.shape[1]
    scale = ops.repeat(ops.transpose(scale), block, axis=1)[:, :k]
    offset = ops.repeat(ops.transpose(offset), block, axis=1)[:, :k]
    return ops.cast(q, "float32") * scale + offset
