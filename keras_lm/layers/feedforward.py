"""The position-wise MLP: plain (GELU/ReLU) or gated (SwiGLU/GeGLU)."""

import keras

from keras_lm.backend import ops
from keras_lm.backend.direct_call import invoke, invoke_together
from keras_lm.layers.initializers import fresh_initializer
from keras_lm.layers.projection import Projection
from keras_lm.layers.remat import StaticArgumentsRemat

_ACTIVATIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=False),
    "gelu_approximate": lambda x: ops.gelu(x, approximate=True),
    "relu": lambda x: ops.relu(x),
    "silu": lambda x: ops.silu(x),
}


@keras.saving.register_keras_serializable(package="keras_lm")
class FeedForward(StaticArgumentsRemat, keras.layers.Layer):
    """`down(act(gate(x)) * up(x))` when `gated`, else `output(act(intermediate(x)))`.

    Example:
    >>> ffw = FeedForward(intermediate_dim=32, activation="silu", gated=True)
    >>> ffw(keras.ops.ones((1, 2, 8))).shape
    (1, 2, 8)
    """

    def __init__(
        self,
        intermediate_dim: int,
        activation: str = "gelu_approximate",
        gated: bool = False,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"`activation` must be one of {sorted(_ACTIVATIONS)}. Received: {activation!r}"
            )
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.gated = gated
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _dense(self, units, name):
        return Projection(
            "btd,df->btf",
            output_shape=(None, units),
            bias_axes="f" if self.use_bias else None,
            kernel_initializer=fresh_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        inner_shape = tuple(input_shape[:-1]) + (self.intermediate_dim,)
        if self.gated:
            self.gate = self._dense(self.intermediate_dim, "gate")
            self.gate.build(input_shape)
        self.intermediate = self._dense(self.intermediate_dim, "intermediate")
        self.intermediate.build(input_shape)
        self.output_dense = self._dense(hidden_dim, "output")
        self.output_dense.build(inner_shape)
        self.built = True

    def call(self, x):
        act = _ACTIVATIONS[self.activation]
        if self.gated:
            gate, up = invoke_together((self.gate, self.intermediate), x)
            hidden = act(gate) * up
        else:
            hidden = act(invoke(self.intermediate, x))
        return invoke(self.output_dense, ops.cast(hidden, self.compute_dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            gated=self.gated,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
