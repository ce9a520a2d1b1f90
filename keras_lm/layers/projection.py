"""`Projection`: an `EinsumDense` whose float path is one reshaped matmul.

All projections in this package contract the trailing input axes with the leading kernel axes
("btd,dnh->btnh", "btnh,nhd->btd", "btd,df->btf"). A 2-D matmul is faster than a general
einsum on every backend for one-token decode steps, and keeps LoRA and quantization from
`EinsumDense` (quantized calls go through Keras' own path).
"""

import math

import keras

from keras_lm.backend import ops
from keras_lm.layers.int4 import (
    FILE_BLOCK,
    FILE_GROUPS,
    fit_groups,
    layer_block,
    multiply_form,
    unpack,
    zero_points,
)
from keras_lm.layers.remat import StaticArgumentsRemat
from keras_lm.layers.variable_release import ReleasesVariablesWithoutCollecting


@keras.saving.register_keras_serializable(package="keras_lm")
class Projection(
    ReleasesVariablesWithoutCollecting, StaticArgumentsRemat, keras.layers.EinsumDense
):
    """EinsumDense for "prefix + contracted -> prefix + kernel rest" equations.

    Example:
    >>> proj = Projection("btd,dnh->btnh", output_shape=(None, 4, 8))
    >>> proj(keras.ops.ones((1, 3, 16))).shape
    (1, 3, 4, 8)
    """

    def build(self, input_shape):
        super().build(input_shape)
        inputs, rest = self.equation.split(",")
        kernel_spec, output_spec = rest.split("->")
        contracted = [c for c in inputs if c in kernel_spec and c not in output_spec]
        if kernel_spec[: len(contracted)] != "".join(contracted) or not inputs.endswith(
            "".join(contracted)
        ):
            raise ValueError(f"Projection cannot flatten the equation {self.equation!r}")
        kernel_shape = tuple(self._kernel.shape) if hasattr(self, "_kernel") else None
        self.contracted_axes = len(contracted)
        self.kernel_rows = math.prod(kernel_shape[: len(contracted)]) if kernel_shape else None
        self.kernel_out_shape = kernel_shape[len(contracted):] if kernel_shape else None

    # -- hooks for the backend kernels (keras_lm.backend) -------------------------------------
    # `contracted_axes`: how many trailing input axes the kernel contracts; `kernel_rows`: their
    # product (the kernel as a `[kernel_rows, -1]` matrix); `kernel_out_shape`: the rest.

    @property
    def stored_kernel(self):
        """The kernel variable as stored: float, or int8 after `quantize("int8")`."""
        return self._kernel

    def decode_kernel(self):
        """`(stored kernel, kernel_rows)`, or None when the equation cannot be flattened."""
        return None if self.kernel_rows is None else (self._kernel, self.kernel_rows)

    def finish(self, x):
        """Bias and activation, applied to the product's output."""
        if self.bias is not None:
            x = x + self.bias
        if self.activation is not None:
            x = self.activation(x)
        return x

    def add_weight(self, *args, **kwargs):
        if kwargs.get("name") == "kernel_zero":
            kwargs["dtype"] = "float32"  # fractional zero points (see `keras_lm.layers.int4`)
        return super().add_weight(*args, **kwargs)

    def quantize(self, mode=None, type_check=True, config=None):
        # EinsumDense refuses subclasses unless `type_check=False`; our float path differs
        # from EinsumDense's only in speed, so its quantized paths apply unchanged.
        groups = None
        if mode == "int4" and _grouped(config):
            groups = FILE_GROUPS.pop(self, None)
            if groups is not None:  # the file's own 4-bit groups, not a second rounding
                config = keras.quantizers.Int4QuantizationConfig(block_size=FILE_BLOCK)
            else:  # our least-squares groups instead of Keras' min/max ones
                kernel = ops.convert_to_numpy(self._kernel.value).reshape(self.kernel_rows, -1)
                groups = lambda: fit_groups(kernel.T, self._int4_block_size)  # noqa: E731
        super().quantize(mode, type_check=False, config=config)
        if groups is not None:
            self._assign_groups(*groups())

    def _assign_groups(self, q, scale, offset):
        q, scale, zero = zero_points(q, scale, offset)  # q [N, K], scale/zero [N, groups]
        packed, _, _ = keras.quantizers.pack_int4(q.T, axis=-1)
        self._kernel.assign(packed)
        self.kernel_scale.assign(scale.T)
        self.kernel_zero.assign(zero.T)

    def _fast_quantized_call(self, fast, inputs, training):
        """`fast(self, flat_inputs)` (a backend's quantized product) reshaped, with LoRA as
        Keras' quantized paths add it, bias and activation; None when it does not apply."""
        if fast is None or training or self.kernel_rows is None:
            return None
        shape = ops.shape(inputs)
        batch_shape = tuple(shape[: len(shape) - self.contracted_axes])
        x = fast(self, ops.reshape(inputs, batch_shape + (self.kernel_rows,)))
        if x is None:
            return None
        x = ops.reshape(x, batch_shape + tuple(self.kernel_out_shape))
        if self.lora_enabled:
            lora = ops.matmul(ops.einsum(self.equation, inputs, self.lora_kernel_a),
                              self.lora_kernel_b)
            x = x + ops.cast(self.lora_alpha / self.lora_rank, x.dtype) * lora
        return self.finish(x)

    def _int8_call(self, inputs, training=None):
        x = self._fast_quantized_call(ops.int8_projection, inputs, training)
        return super()._int8_call(inputs, training=training) if x is None else x

    def _int4_call(self, inputs, training=None):
        x = self._fast_quantized_call(ops.int4_projection, inputs, training)
        return super()._int4_call(inputs, training=training) if x is None else x

    def decode_source(self):
        """The variable whose reassignment invalidates the backend's copies of the kernel."""
        return self._kernel

    def int4_weights(self):
        """The int4 kernel in the common form of `keras_lm.layers.int4` (`q [N, K]`: the
        kernel's output units by its contracted rows)."""
        columns = self._int4_unpacked_column_size
        q = ops.transpose(unpack(self._kernel.value, columns, -1))
        zero = getattr(self, "kernel_zero", None)
        return multiply_form(q, self.kernel_scale.value, None if zero is None else zero.value,
                             layer_block(self))

    def call(self, inputs, training=None):
        if self.kernel_rows is None:
            return super().call(inputs, training=training)
        shape = ops.shape(inputs)
        batch_shape = tuple(shape[: len(shape) - self.contracted_axes])
        flat = ops.reshape(inputs, batch_shape + (self.kernel_rows,))
        kernel = ops.reshape(self._kernel, (self.kernel_rows, -1))
        x = ops.reshape(ops.matmul(flat, kernel), batch_shape + tuple(self.kernel_out_shape))
        if self.lora_enabled:
            x = x + self._low_rank_update(flat, batch_shape)
        return self.finish(x)

    def _low_rank_update(self, flat, batch_shape):
        # `(x A) B` rather than `x (W + A B)`: training then never forms a kernel-sized
        # gradient (or keeps a merged kernel for backward), the point of LoRA.
        a = self.lora_kernel_a
        middle = ops.matmul(flat, ops.reshape(a, (self.kernel_rows, -1)))
        middle = ops.reshape(middle, batch_shape + tuple(a.shape[self.contracted_axes:]))
        scale = ops.cast(self.lora_alpha / self.lora_rank, middle.dtype)
        return ops.matmul(middle, self.lora_kernel_b) * scale


def _grouped(config) -> bool:
    """Whether an int4 `quantize()` config asks for groups (Keras' default does; a block size
    of -1 asks for one scale per output)."""
    block = getattr(config, "block_size", None)
    return block is None or block > 0
