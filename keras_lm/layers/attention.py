"""Multi-head / grouped-query attention with RoPE, sliding windows, soft-cap and a KV cache."""

import keras

from keras_lm.backend import ops
from keras_lm.backend.direct_call import invoke, invoke_together
from keras_lm.layers.initializers import fresh_initializer
from keras_lm.layers.normalization import Normalization
from keras_lm.layers.projection import Projection
from keras_lm.layers.remat import Dropout, StaticArgumentsRemat
from keras_lm.layers.rotary import apply_rope, rope_cos_sin, rope_inverse_frequencies

_MASKED = -1e9  # finite, so fully-masked (padding) rows never turn into NaN


@keras.saving.register_keras_serializable(package="keras_lm")
class CachedAttention(StaticArgumentsRemat, keras.layers.Layer):
    """Causal self-attention whose key/value cache is passed in and returned.

    The cache for one layer is a `(keys, values)` pair (`generation.cache.LayerCache`) of shape
    `[batch * num_key_value_heads, capacity, head_dim]` (row `b * num_key_value_heads + k` holds
    head `k` of sequence `b`, its slots contiguous, so the attention products read the cache in
    place); new keys are written at slot `cache_update_index`, and `(output, cache)` is
    returned; without a cache only the output. When `batch * num_key_value_heads` is 1 the cache
    may also be `[capacity, head_dim]` (see `generation.cache.squeeze_single_row`).
    `attention_mask` is `[batch, query_len, key_len]` (True = attend).

    Example:
    >>> attn = CachedAttention(num_query_heads=4, num_key_value_heads=2, head_dim=8)
    >>> x = keras.ops.ones((1, 3, 32))
    >>> out = attn(x, attention_mask=keras.ops.ones((1, 3, 3), "bool"))
    >>> out.shape
    (1, 3, 32)
    """

    def __init__(
        self,
        num_query_heads: int,
        num_key_value_heads: int,
        head_dim: int,
        use_bias: bool = False,
        output_bias: bool | None = None,
        use_rope: bool = False,
        rope_max_wavelength: float = 10000.0,
        rope_scaling_factor: float = 1.0,
        rope_llama3_scaling: dict | None = None,
        sliding_window: int | None = None,
        logit_soft_cap: float | None = None,
        query_scale: float | None = None,
        qk_norm_epsilon: float | None = None,
        qk_norm_unit_offset: bool = True,
        dropout: float = 0.0,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_query_heads % num_key_value_heads:
            raise ValueError(
                "`num_query_heads` must be a multiple of `num_key_value_heads`. Received: "
                f"num_query_heads={num_query_heads}, num_key_value_heads={num_key_value_heads}"
            )
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.use_bias = use_bias
        self.output_bias = use_bias if output_bias is None else output_bias
        self.use_rope = use_rope
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_scaling_factor = rope_scaling_factor
        self.rope_llama3_scaling = rope_llama3_scaling
        self.sliding_window = sliding_window
        self.logit_soft_cap = logit_soft_cap
        self.query_scale = query_scale if query_scale is not None else head_dim**-0.5
        self.qk_norm_epsilon = qk_norm_epsilon
        self.qk_norm_unit_offset = qk_norm_unit_offset
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._inverse_frequencies = None
        if use_rope:
            self._inverse_frequencies = rope_inverse_frequencies(
                head_dim, rope_max_wavelength, rope_scaling_factor, rope_llama3_scaling
            )

    def _projection(self, equation, output_shape, bias_axes, name):
        return Projection(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes,
            kernel_initializer=fresh_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        n, k, h = self.num_query_heads, self.num_key_value_heads, self.head_dim
        bias = "nh" if self.use_bias else None
        self.query = self._projection("btd,dnh->btnh", (None, n, h), bias, "query")
        self.key = self._projection("btd,dnh->btnh", (None, k, h), bias, "key")
        self.value = self._projection("btd,dnh->btnh", (None, k, h), bias, "value")
        out_bias = "d" if self.output_bias else None
        self.attention_output = self._projection(
            "btnh,nhd->btd", (None, hidden_dim), out_bias, "attention_output"
        )
        for layer in (self.query, self.key, self.value):
            layer.build(input_shape)
        self.attention_output.build((None, None, n, h))
        self.query_norm = self.key_norm = None
        if self.qk_norm_epsilon is not None:
            self.query_norm = Normalization(
                "rms", self.qk_norm_epsilon, unit_offset=self.qk_norm_unit_offset,
                dtype=self.dtype_policy,
                name="query_norm",
            )
            self.key_norm = Normalization(
                "rms", self.qk_norm_epsilon, unit_offset=self.qk_norm_unit_offset,
                dtype=self.dtype_policy,
                name="key_norm",
            )
            self.query_norm.build((None, None, n, h))
            self.key_norm.build((None, None, k, h))
        self.dropout_layer = Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def call(
        self,
        x,
        attention_mask,
        positions=None,
        cache=None,
        cache_update_index=None,
        training=False,
    ):
        query, key, value = invoke_together((self.query, self.key, self.value), x)
        if self.query_norm is not None:
            query, key = invoke(self.query_norm, query), invoke(self.key_norm, key)
        if self.use_rope:
            if positions is None:
                positions = ops.arange(ops.shape(x)[1])[None, :]
            cos, sin = rope_cos_sin(positions, self._inverse_frequencies)
            query, key = apply_rope(query, cos, sin), apply_rope(key, cos, sin)
        key, value = _rows_per_head(key), _rows_per_head(value)
        start = 0
        if cache is not None:
            start = cache_update_index
            key_cache, value_cache = cache
            if len(ops.shape(key_cache)) == 2:  # the one cached head row, without its axis
                key, value = key[0], value[0]
            key = ops.write_cache(key_cache, start, key)
            value = ops.write_cache(value_cache, start, value)
            cache = (key, value)
        if self.sliding_window is not None:
            attention_mask = self._window(attention_mask, start)
        attended = invoke(
            self.attention_output, self._attend(query, key, value, attention_mask, training)
        )
        return attended if cache is None else (attended, cache)

    def _window(self, attention_mask, start):
        query_len, key_len = ops.shape(attention_mask)[1], ops.shape(attention_mask)[2]
        query_slots = ops.arange(query_len)[:, None] + start
        key_slots = ops.arange(key_len)[None, :]
        in_window = (query_slots - key_slots) < self.sliding_window
        return ops.logical_and(attention_mask, in_window[None])

    def _attend(self, query, key, value, attention_mask, training):
        # One product per cached head row: `[b * k, t * g, h]` queries against `[b * k, s, h]`
        # keys. The cache is read as stored: on JAX a reshaped view of a freshly written cache
        # makes XLA write it twice and copy the whole cache every step.
        batch, length = ops.shape(query)[0], ops.shape(query)[1]
        kv_heads, head_dim = self.num_key_value_heads, self.head_dim
        groups = self.num_query_heads // kv_heads
        query = query * ops.cast(self.query_scale, query.dtype)
        query = ops.reshape(query, (batch, length, kv_heads, groups, head_dim))
        query = ops.reshape(
            ops.transpose(query, (0, 2, 1, 3, 4)), (batch * kv_heads, length * groups, head_dim)
        )
        # A single cached row comes without its axis: XLA turns an axis of 1 into a reshape
        # that it fuses into the cache write, writing it twice and copying it every step.
        rows = "n" if len(ops.shape(key)) == 3 else ""
        scores = ops.einsum(f"nqh,{rows}sh->nqs", query, ops.cast(key, query.dtype))
        scores = ops.cast(scores, "float32")
        if self.logit_soft_cap is not None:
            scores = ops.tanh(scores / self.logit_soft_cap) * self.logit_soft_cap
        key_len = ops.shape(attention_mask)[-1]
        mask = ops.cast(attention_mask, "bool")[:, None, :, None, :]
        mask = ops.broadcast_to(mask, (batch, kv_heads, length, groups, key_len))
        mask = ops.reshape(mask, (batch * kv_heads, length * groups, key_len))
        scores = ops.where(mask, scores, _MASKED)
        weights = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        weights = invoke(self.dropout_layer, weights, training=training)
        out = ops.einsum(f"nqs,{rows}sh->nqh", weights, ops.cast(value, weights.dtype))
        out = ops.reshape(out, (batch, kv_heads, length, groups, head_dim))
        out = ops.transpose(out, (0, 2, 1, 3, 4))
        return ops.reshape(out, (batch, length, self.num_query_heads, head_dim))

    def get_config(self):
        config = super().get_config()
        config.update(
            num_query_heads=self.num_query_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            use_bias=self.use_bias,
            output_bias=self.output_bias,
            use_rope=self.use_rope,
            rope_max_wavelength=self.rope_max_wavelength,
            rope_scaling_factor=self.rope_scaling_factor,
            rope_llama3_scaling=self.rope_llama3_scaling,
            sliding_window=self.sliding_window,
            logit_soft_cap=self.logit_soft_cap,
            query_scale=self.query_scale,
            qk_norm_epsilon=self.qk_norm_epsilon,
            qk_norm_unit_offset=self.qk_norm_unit_offset,
            dropout=self.dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def _rows_per_head(x):
    """`[batch, length, heads, head_dim]` -> `[batch * heads, length, head_dim]`."""
    batch, length, heads, head_dim = ops.shape(x)
    return ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (batch * heads, length, head_dim))
