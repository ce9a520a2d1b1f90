"""Token embeddings that double as the output head, and learned position embeddings."""

import math

import keras

from keras_lm.backend import ops
from keras_lm.layers.initializers import fresh_initializer
from keras_lm.layers.int4 import (
    dense_kernel,
    dequantize_rows,
    fit_groups,
    layer_block,
    multiply_form,
    unpack,
    zero_points,
)
from keras_lm.layers.remat import StaticArgumentsRemat
from keras_lm.layers.variable_release import ReleasesVariablesWithoutCollecting


@keras.saving.register_keras_serializable(package="keras_lm")
class ReversibleEmbedding(
    ReleasesVariablesWithoutCollecting, StaticArgumentsRemat, keras.layers.Embedding
):
    """An embedding whose `reverse=True` call maps hidden states to vocabulary logits.

    With `tie_weights=False` the head has its own `reverse_embeddings` matrix. `scale_by_sqrt_dim`
    multiplies forward outputs by `sqrt(output_dim)` (Gemma), and `logit_soft_cap` applies
    `cap * tanh(logits / cap)` to the reverse output.

    Example:
    >>> emb = ReversibleEmbedding(100, 16)
    >>> hidden = emb(keras.ops.ones((1, 3), "int32"))
    >>> emb(hidden, reverse=True).shape
    (1, 3, 100)
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        tie_weights: bool = True,
        scale_by_sqrt_dim: bool = False,
        logit_soft_cap: float | None = None,
        **kwargs,
    ):
        super().__init__(input_dim, output_dim, **kwargs)
        self.tie_weights = tie_weights
        self.scale_by_sqrt_dim = scale_by_sqrt_dim
        self.logit_soft_cap = logit_soft_cap

    def build(self, input_shape=None):
        # Keras' Embedding draws from `embeddings_initializer` itself; a fresh copy gives
        # zeros when the weights are about to be loaded, and the configured one is kept.
        configured = self.embeddings_initializer
        self.embeddings_initializer = fresh_initializer(configured)
        try:
            super().build(input_shape)
        finally:
            self.embeddings_initializer = configured
        if not self.tie_weights:
            mode = self.quantization_mode
            if mode == "int4":
                self._build_reverse_int4(layer_block(self))
                return
            int8 = mode == "int8"
            self.reverse_embeddings = self.add_weight(
                name="reverse_embeddings",
                shape=(self.output_dim, self.input_dim),
                initializer="zeros" if int8 else fresh_initializer(self.embeddings_initializer),
                dtype="int8" if int8 else None,
                trainable=not int8,
            )
            if int8:
                self._build_reverse_scale()

    def add_weight(self, *args, **kwargs):
        if kwargs.get("name") == "embeddings_zero":
            kwargs["dtype"] = "float32"  # fractional zero points (see `keras_lm.layers.int4`)
        return super().add_weight(*args, **kwargs)

    def _build_reverse_scale(self):
        self.reverse_embeddings_scale = self.add_weight(
            name="reverse_embeddings_scale", shape=(self.input_dim,), initializer="ones",
            trainable=False,
        )

    def _build_reverse_int4(self, block_size):
        """A separate head as Keras stores it in int4: `[ceil(hidden / 2), vocab]` packed along
        the hidden axis, scales (and zero points when grouped) per block of hidden rows."""
        self.reverse_embeddings = self.add_weight(
            name="reverse_embeddings", shape=((self.output_dim + 1) // 2, self.input_dim),
            initializer="zeros", dtype="int8", trainable=False,
        )
        grouped = block_size is not None and block_size > 0
        shape = ((math.ceil(self.output_dim / block_size), self.input_dim) if grouped
                 else (self.input_dim,))
        self.reverse_embeddings_scale = self.add_weight(
            name="reverse_embeddings_scale", shape=shape, initializer="ones", trainable=False)
        if grouped:
            self.reverse_embeddings_zero = self.add_weight(
                name="reverse_embeddings_zero", shape=shape, initializer="zeros",
                trainable=False)

    def _reverse_variables(self) -> list:
        names = {"int8": ["reverse_embeddings", "reverse_embeddings_scale"],
                 "int4": ["reverse_embeddings", "reverse_embeddings_scale",
                          "reverse_embeddings_zero"]}.get(self.quantization_mode,
                                                           ["reverse_embeddings"])
        return [name for name in names if hasattr(self, name)]

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built and not self.tie_weights:
            for name in self._reverse_variables():
                store[name] = getattr(self, name)

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if not self.tie_weights:
            for name in self._reverse_variables():
                getattr(self, name).assign(store[name])

    def quantize(self, mode=None, type_check=True, config=None):
        """int8 (one scale per row of the table and per column of a separate head) or int4
        (Keras' layouts: grouped along the hidden axis with zero points, or one scale per row
        with `Int4QuantizationConfig(block_size=-1)`). The head then runs on the quantized
        table. Example: `lm.quantize("int4")`."""
        if mode not in ("int8", "int4"):
            raise NotImplementedError(
                f"ReversibleEmbedding supports int8 and int4, not {mode!r}.")
        reverse = None
        if not self.tie_weights:
            reverse = (_quantize_head_int8(self.reverse_embeddings) if mode == "int8"
                       else _quantize_head_int4(self.reverse_embeddings, _config_block(config)))
            del self.reverse_embeddings  # Keras' quantize wrapper unlocks the tracker for us
        table = ops.convert_to_numpy(self._embeddings.value) if mode == "int4" else None
        super().quantize(mode, type_check=False, config=config)
        if mode == "int4" and layer_block(self) is not None:
            # Our least-squares groups in place of Keras' min/max ones (`fit_groups`).
            q, scale, zero = zero_points(*fit_groups(table, layer_block(self)))
            del table
            self._embeddings.assign(keras.quantizers.pack_int4(q, axis=-1)[0])
            self.embeddings_scale.assign(scale)
            self.embeddings_zero.assign(zero)
        if reverse is None:
            return
        if mode == "int8":
            self.reverse_embeddings = self.add_weight(
                name="reverse_embeddings", shape=(self.output_dim, self.input_dim),
                initializer="zeros", dtype="int8", trainable=False,
            )
            self._build_reverse_scale()
        else:
            self._build_reverse_int4(_config_block(config))
        for name, value in zip(self._reverse_variables(), reverse, strict=True):
            getattr(self, name).assign(value)

    # -- hooks for the backend kernels (keras_lm.backend) -------------------------------------
    def decode_kernel(self):
        """`(head kernel variable, rows)` of an untied head (`[hidden, vocab]`), else None."""
        if self.tie_weights or not hasattr(self, "reverse_embeddings"):
            return None
        return self.reverse_embeddings, self.output_dim

    def row_major_head(self):
        """A tied head's table (`[vocab, hidden]`: already row-major for the product)."""
        return self._embeddings if self.tie_weights else None

    def _int8_call(self, inputs, reverse: bool = False, training=None):
        if not reverse:
            x = super()._int8_call(inputs)
            if self.scale_by_sqrt_dim:
                x = x * ops.cast(math.sqrt(self.output_dim), x.dtype)
            return x
        if self.tie_weights:
            kernel, scale = ops.transpose(self._embeddings.value), self.embeddings_scale.value
        else:
            kernel, scale = self.reverse_embeddings.value, self.reverse_embeddings_scale.value

        fast = not ops.records_gradients()  # inside the custom gradient torch records none

        def product(inputs):
            logits = None
            if fast and ops.int8_projection is not None:
                logits = ops.int8_projection(self, inputs, kernel, scale)
            if logits is None:
                quantized, input_scale = keras.quantizers.abs_max_quantize(inputs, axis=-1)
                logits = ops.matmul(quantized, kernel)
                logits = ops.cast(logits, self.compute_dtype) / (input_scale * scale)
            return logits

        dequantized = lambda: ops.cast(kernel, self.compute_dtype) / scale  # noqa: E731
        return self._soft_cap(_dequantized_gradient(product, inputs, dequantized))

    def _int4_call(self, inputs, reverse: bool = False, training=None):
        if not reverse:
            ids = ops.cast(inputs, "int32")
            rows = unpack(ops.take(self._embeddings, ids, axis=0), self.output_dim, -1)
            x = dequantize_rows(rows, ops.take(self.embeddings_scale, ids, axis=0),
                            self._int4_zero_rows(ids), layer_block(self))
            if self.lora_enabled:  # as Keras' int4 embedding adds it
                lora = ops.matmul(ops.take(self.lora_embeddings_a, ids, axis=0),
                                  self.lora_embeddings_b)
                x = x + ops.cast(self.lora_alpha / self.lora_rank, x.dtype) * lora
            if self.scale_by_sqrt_dim:
                x = x * ops.cast(math.sqrt(self.output_dim), x.dtype)
            return x
        def dequantized():  # [hidden, vocab]
            return ops.transpose(ops.cast(dense_kernel(*self.int4_weights()), self.compute_dtype))

        fast = not ops.records_gradients()

        def product(inputs):
            logits = None
            if fast and ops.int4_projection is not None:
                logits = ops.int4_projection(self, inputs)
            return ops.matmul(inputs, dequantized()) if logits is None else logits

        return self._soft_cap(_dequantized_gradient(product, inputs, dequantized))

    def _int4_zero_rows(self, ids):
        return ops.take(self.embeddings_zero, ids, axis=0) if hasattr(
            self, "embeddings_zero") else None

    def decode_source(self):
        """The head's stored variable (its reassignment invalidates the backend's copies)."""
        return self._embeddings if self.tie_weights else self.reverse_embeddings

    def int4_weights(self):
        """The int4 head as `(q [vocab, hidden] int8 in [-8, 7], scale, offset, block)` with
        `w[n, k] = q[n, k] * scale[k // block, n] + offset[k // block, n]` (see
        `keras_lm.layers.projection.int4_weights`)."""
        hidden = self.output_dim
        if self.tie_weights:
            q = unpack(self._embeddings.value, hidden, -1)
            scale = ops.transpose(ops.reshape(self.embeddings_scale.value,
                                              (self.input_dim, -1)))
            zero = getattr(self, "embeddings_zero", None)
            zero = None if zero is None else ops.transpose(zero.value)
        else:
            q = ops.transpose(unpack(self.reverse_embeddings.value, hidden, 0))
            scale = ops.reshape(self.reverse_embeddings_scale.value, (-1, self.input_dim))
            zero = getattr(self, "reverse_embeddings_zero", None)
            zero = None if zero is None else zero.value
        return multiply_form(q, scale, zero, layer_block(self))

    def _soft_cap(self, logits):
        if self.logit_soft_cap is not None:
            cap = self.logit_soft_cap
            logits = ops.tanh(ops.cast(logits, "float32") / cap) * cap
        return logits

    def call(self, inputs, reverse: bool = False):
        if not reverse:
            x = super().call(inputs)
            if self.scale_by_sqrt_dim:
                x = x * ops.cast(math.sqrt(self.output_dim), x.dtype)
            return x
        if self.tie_weights:
            kernel = ops.transpose(ops.convert_to_tensor(self.embeddings))
        else:
            kernel = self.reverse_embeddings
        return self._soft_cap(ops.matmul(inputs, ops.cast(kernel, inputs.dtype)))

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            shape = tuple(inputs.shape[:-1]) + (self.input_dim,)
            return keras.KerasTensor(shape, dtype=self.compute_dtype)
        return super().compute_output_spec(inputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            tie_weights=self.tie_weights,
            scale_by_sqrt_dim=self.scale_by_sqrt_dim,
            logit_soft_cap=self.logit_soft_cap,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_lm")
class PositionEmbedding(StaticArgumentsRemat, keras.layers.Layer):
    """Learned absolute position embeddings, looked up at explicit or implicit positions.

    Example:
    >>> pos = PositionEmbedding(sequence_length=32)
    >>> pos(keras.ops.zeros((2, 5, 8))).shape
    (1, 5, 8)
    """

    def __init__(self, sequence_length: int, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = sequence_length
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, input_shape[-1]),
            initializer=fresh_initializer(self.initializer),
        )
        self.built = True

    def call(self, inputs, positions=None):
        table = ops.convert_to_tensor(self.position_embeddings)
        if positions is None:
            length = ops.shape(inputs)[1]
            return ops.expand_dims(table[:length], 0)
        return ops.take(table, positions, axis=0)

    def compute_output_spec(self, inputs, positions=None):
        if positions is None:
            shape = (1,) + tuple(inputs.shape[1:])
        else:
            shape = tuple(positions.shape) + (inputs.shape[-1],)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            sequence_length=self.sequence_length,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config


_TORCH = keras.backend.backend() == "torch"


def _dequantized_gradient(product, inputs, dequantized_kernel):
    """`product(inputs)` (a quantized head's logits, whatever kernel computes them), with the
    gradient of a float product with the dequantized `[hidden, vocab]` kernel: rounding
    activations to int8 has no useful gradient, and the fast kernels have none at all, so
    without this nothing upstream of the head would train (LoRA on a quantized base).

    Where torch records no gradients the product runs bare: a custom gradient is an autograd
    `Function`, which TorchScript's tracer cannot record, so the traced decode step of every
    quantized model fell back to eager calls (the real Gemma 3 270M int8: 15.6 tok/s, less
    than its float32 24.8)."""
    if _TORCH and not ops.records_gradients():
        return product(inputs)

    @keras.ops.custom_gradient
    def head(inputs):
        def grad_fn(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            kernel = dequantized_kernel()
            return ops.matmul(upstream, ops.transpose(ops.cast(kernel, upstream.dtype)))

        return product(inputs), grad_fn

    return head(inputs)


def _quantize_head_int8(head):
    """A separate head `[hidden, vocab]` in int8, one scale per vocabulary column."""
    values, scale = keras.quantizers.abs_max_quantize(head, axis=0, to_numpy=True)
    return values, keras.ops.reshape(scale, (-1,))


def _config_block(config):
    """The group size an int4 `quantize()` config asks for, or None (as Keras' layers read it:
    no config means one scale per row)."""
    block = getattr(config, "block_size", None)
    return block if block is not None and block > 0 else None


def _quantize_head_int4(head, block_size):
    """A separate head `[hidden, vocab]` in Keras' int4 layout (packed along hidden)."""
    if block_size is None:
        values, scale = keras.quantizers.abs_max_quantize(
            head, axis=0, value_range=(-8, 7), dtype="int8", to_numpy=True)
        parts = [keras.ops.reshape(scale, (-1,))]
    else:  # groups along hidden: `fit_groups` of the [vocab, hidden] transpose
        q, scale, zero = zero_points(*fit_groups(ops.convert_to_numpy(head).T, block_size))
        values, parts = q.T, [scale.T, zero.T]
    packed, _, _ = keras.quantizers.pack_int4(values, axis=0)
    return [packed] + parts

