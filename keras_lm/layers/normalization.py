"""Layer and RMS normalization, always computed in float32."""

import keras

from keras_lm.backend import ops
from keras_lm.layers.remat import StaticArgumentsRemat


@keras.saving.register_keras_serializable(package="keras_lm")
class Normalization(StaticArgumentsRemat, keras.layers.Layer):
    """LayerNorm (`kind="layer"`) or RMSNorm (`kind="rms"`) over the last axis.

    `unit_offset=True` stores the scale as an offset from one (Gemma's `1 + w`).

    Example:
    >>> norm = Normalization("rms", epsilon=1e-6)
    >>> norm(keras.ops.ones((1, 2, 8))).shape
    (1, 2, 8)
    """

    def __init__(
        self,
        kind: str = "layer",
        epsilon: float = 1e-5,
        use_bias: bool = True,
        unit_offset: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kind not in ("layer", "rms"):
            raise ValueError(f"`kind` must be 'layer' or 'rms'. Received: kind={kind!r}")
        self.kind = kind
        self.epsilon = epsilon
        self.use_bias = use_bias and kind == "layer"
        self.unit_offset = unit_offset

    def build(self, input_shape):
        dim = input_shape[-1]
        init = "zeros" if self.unit_offset else "ones"
        name = "gamma" if self.kind == "layer" else "scale"
        self.scale = self.add_weight(name=name, shape=(dim,), initializer=init)
        self.beta = None
        if self.use_bias:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        self.built = True

    def call(self, x):
        x32 = ops.cast(x, "float32")
        if self.kind == "layer":
            mean = ops.mean(x32, axis=-1, keepdims=True)
            centered = x32 - mean
            var = ops.mean(ops.square(centered), axis=-1, keepdims=True)
            normed = centered * ops.rsqrt(var + self.epsilon)
        else:
            mean_square = ops.mean(ops.square(x32), axis=-1, keepdims=True)
            normed = x32 * ops.rsqrt(mean_square + self.epsilon)
        scale = ops.cast(self.scale, "float32")
        if self.unit_offset:
            scale = scale + 1.0
        normed = normed * scale
        if self.beta is not None:
            normed = normed + ops.cast(self.beta, "float32")
        return ops.cast(normed, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            kind=self.kind,
            epsilon=self.epsilon,
            use_bias=self.use_bias,
            unit_offset=self.unit_offset,
        )
        return config
