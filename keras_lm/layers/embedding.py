"""Token embeddings that double as the output head, and learned position embeddings."""

import math

import keras

from keras_lm.backend import ops
from keras_lm.layers.initializers import fresh_initializer


@keras.saving.register_keras_serializable(package="keras_lm")
class ReversibleEmbedding(keras.layers.Embedding):
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
            int8 = self.quantization_mode == "int8"
            self.reverse_embeddings = self.add_weight(
                name="reverse_embeddings",
                shape=(self.output_dim, self.input_dim),
                initializer="zeros" if int8 else fresh_initializer(self.embeddings_initializer),
                dtype="int8" if int8 else None,
                trainable=not int8,
            )
            if int8:
                self._build_reverse_scale()

    def _build_reverse_scale(self):
        self.reverse_embeddings_scale = self.add_weight(
            name="reverse_embeddings_scale", shape=(self.input_dim,), initializer="ones",
            trainable=False,
        )

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built and not self.tie_weights:
            store["reverse_embeddings"] = self.reverse_embeddings
            if self.quantization_mode == "int8":
                store["reverse_embeddings_scale"] = self.reverse_embeddings_scale

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if not self.tie_weights:
            self.reverse_embeddings.assign(store["reverse_embeddings"])
            if self.quantization_mode == "int8":
                self.reverse_embeddings_scale.assign(store["reverse_embeddings_scale"])

    def quantize(self, mode=None, type_check=True, config=None):
        """int8 only: rows of the embedding (and columns of a separate head) get one scale
        each; the head then runs as an int8 matmul. Other modes are left to float."""
        if mode != "int8":
            raise NotImplementedError(f"ReversibleEmbedding supports int8 only, not {mode!r}.")
        reverse = None
        if not self.tie_weights:
            reverse, reverse_scale = keras.quantizers.abs_max_quantize(
                self.reverse_embeddings, axis=0, to_numpy=True
            )
            del self.reverse_embeddings  # Keras' quantize wrapper unlocks the tracker for us
        super().quantize(mode, type_check=False, config=config)
        if reverse is not None:
            self.reverse_embeddings = self.add_weight(
                name="reverse_embeddings", shape=(self.output_dim, self.input_dim),
                initializer="zeros", dtype="int8", trainable=False,
            )
            self._build_reverse_scale()
            self.reverse_embeddings.assign(reverse)
            self.reverse_embeddings_scale.assign(keras.ops.reshape(reverse_scale, (-1,)))

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
        logits = None
        if ops.int8_projection is not None:
            logits = ops.int8_projection(self, inputs, kernel, scale)
        if logits is None:
            quantized, input_scale = keras.quantizers.abs_max_quantize(inputs, axis=-1)
            logits = ops.matmul(quantized, kernel)
            logits = ops.cast(logits, self.compute_dtype) / (input_scale * scale)
        return self._soft_cap(logits)

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
class PositionEmbedding(keras.layers.Layer):
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
