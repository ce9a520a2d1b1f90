"""`DecoderBackbone`: the one embed → blocks → norm forward path every family shares.

A family is a frozen dataclass of its public (KerasHub) arguments with a method
`decoder_options()` mapping them to `DecoderOptions`; `DecoderBackbone` subclasses name it as
`arguments`, and get `__init__`, attributes, `get_config` and the signature `help()` shows from
it. A new architecture knob is one `DecoderOptions` field plus its use.
"""

import dataclasses
import inspect

import keras

from keras_lm.backend import ops
from keras_lm.backend.direct_call import invoke
from keras_lm.generation import cache as kv_cache
from keras_lm.generation.cache import LayerCache
from keras_lm.layers.decoder_block import DecoderBlock
from keras_lm.layers.embedding import PositionEmbedding, ReversibleEmbedding
from keras_lm.layers.normalization import Normalization
from keras_lm.layers.remat import Dropout
from keras_lm.models.backbone import Backbone
from keras_lm.models.layout import cache_layout, fit_active_layout

# Keyword arguments every Keras model takes besides a family's own.
_KERAS_KEYWORDS = ("name", "trainable")


@dataclasses.dataclass(frozen=True)
class DecoderOptions:
    """Everything that distinguishes one family's decoder from another's."""

    vocabulary_size: int
    num_layers: int
    num_query_heads: int
    num_key_value_heads: int
    hidden_dim: int
    intermediate_dim: int
    head_dim: int | None = None
    norm: str = "layer"  # "layer" (with bias), "rms" (x * w) or "rms_unit_offset" (x * (1 + w))
    norm_epsilon: float = 1e-5
    activation: str = "gelu_approximate"
    gated_mlp: bool = False
    mlp_bias: bool = True
    attention_bias: bool = True  # query, key and value biases
    attention_output_bias: bool | None = None  # None: as `attention_bias`
    learned_positions: bool = False
    max_sequence_length: int = 2048
    use_rope: bool = False
    rope_max_wavelength: float = 10000.0
    rope_scaling_factor: float = 1.0
    rope_llama3_scaling: dict | None = None
    local_rope_max_wavelength: float | None = None  # sliding-window layers' own RoPE
    local_rope_scaling_factor: float = 1.0
    sliding_window: int | None = None
    sliding_window_layers: tuple | None = None  # per layer; None: every layer when windowed
    attention_logit_soft_cap: float | None = None
    final_logit_soft_cap: float | None = None
    query_scale: float | None = None  # None: head_dim ** -0.5
    qk_norm: bool = False  # RMS-normalize each query and key head (the block's norm kind)
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(hidden_dim)
    tie_word_embeddings: bool = True
    post_attention_norm: bool = False
    post_ffw_norm: bool = False
    dropout: float = 0.0
    kernel_initializer: object = "glorot_uniform"


# Option groups several families start from; a family file names one and lists the rest.
LLAMA_LAYOUT = dict(  # RMSNorm (x * w), SwiGLU MLP, RoPE, no biases
    norm="rms", activation="silu", gated_mlp=True, mlp_bias=False, attention_bias=False,
    use_rope=True, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02))
GEMMA_LAYOUT = dict(  # RMSNorm x * (1 + w), GeGLU MLP, RoPE, no biases, embeddings * sqrt(d)
    LLAMA_LAYOUT, norm="rms_unit_offset", activation="gelu_approximate",
    scale_embeddings=True)


def decoder_options(layout: dict, *sizes, **differences) -> DecoderOptions:
    """`DecoderOptions` from a layout (e.g. `LLAMA_LAYOUT`), the sizes, and what differs.

    Example:
    >>> decoder_options(LLAMA_LAYOUT, 100, 2, 4, 2, 32, 64, norm_epsilon=1e-5).norm
    'rms'
    """
    return DecoderOptions(*sizes, **{**layout, **differences})


class DecoderBackbone(Backbone):
    """A decoder-only transformer whose family differences are `DecoderOptions`.

    Subclasses set `arguments` to their frozen dataclass of public arguments; the constructor,
    attributes, `get_config` and signature follow from it. Training, scoring and cached
    decoding all run `decode`.
    """

    arguments: type | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "arguments" in cls.__dict__ and "__init__" not in cls.__dict__:
            cls.__init__ = _family_init(cls.arguments)

    def get_config(self):
        config = super().get_config()
        # Our arguments beyond KerasHub's are written only when they differ from their default,
        # so a preset that uses none of them loads in KerasHub.
        beyond = getattr(self.arguments, "beyond_keras_hub", ())
        for f in dataclasses.fields(self._arguments):
            value = getattr(self._arguments, f.name)
            if f.name not in beyond or value != f.default:
                config[f.name] = value
        config["dtype"] = self.serialized_dtype()
        return config

    def _build_decoder(self, options: DecoderOptions, dtype=None, **kwargs):
        (vocabulary_size, num_layers, num_query_heads, num_key_value_heads, hidden_dim,
         intermediate_dim, head_dim, norm, norm_epsilon, activation, gated_mlp, mlp_bias,
         attention_bias, attention_output_bias, learned_positions, max_sequence_length,
         use_rope, rope_max_wavelength, rope_scaling_factor, rope_llama3_scaling,
         local_rope_max_wavelength, local_rope_scaling_factor, sliding_window,
         sliding_window_layers, attention_logit_soft_cap, final_logit_soft_cap, query_scale,
         qk_norm, scale_embeddings, tie_word_embeddings, post_attention_norm, post_ffw_norm,
         dropout, kernel_initializer) = [getattr(options, f.name)
                                          for f in dataclasses.fields(options)]
        _check_positive(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_query_heads=num_query_heads,
            num_key_value_heads=num_key_value_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            max_sequence_length=max_sequence_length,
        )
        _check_heads(hidden_dim, num_query_heads, num_key_value_heads, head_dim)
        fit_active_layout(options)
        head_dim = head_dim or hidden_dim // num_query_heads
        norm_kind = "layer" if norm == "layer" else "rms"
        policy = keras.dtype_policies.get(dtype) if dtype is not None else None

        token_embedding = ReversibleEmbedding(
            vocabulary_size,
            hidden_dim,
            tie_weights=tie_word_embeddings,
            scale_by_sqrt_dim=scale_embeddings,
            logit_soft_cap=final_logit_soft_cap,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=policy,
            name="token_embedding",
        )
        position_embedding = None
        if learned_positions:
            position_embedding = PositionEmbedding(
                max_sequence_length,
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                dtype=policy,
                name="position_embedding",
            )
        blocks = []
        for i in range(num_layers):
            local = bool(sliding_window) and (
                sliding_window_layers is None or bool(sliding_window_layers[i])
            )
            wavelength = rope_max_wavelength
            if local and local_rope_max_wavelength is not None:
                wavelength = local_rope_max_wavelength
            attention_options = dict(
                use_bias=attention_bias,
                output_bias=attention_output_bias,
                use_rope=use_rope,
                rope_max_wavelength=wavelength,
                rope_scaling_factor=local_rope_scaling_factor if local else rope_scaling_factor,
                rope_llama3_scaling=None if local else rope_llama3_scaling,
                sliding_window=sliding_window if local else None,
                logit_soft_cap=attention_logit_soft_cap,
                query_scale=query_scale,
                qk_norm_epsilon=norm_epsilon if qk_norm else None,
                qk_norm_unit_offset=norm == "rms_unit_offset",
            )
            blocks.append(
                DecoderBlock(
                    intermediate_dim,
                    num_query_heads,
                    num_key_value_heads,
                    head_dim,
                    norm=norm,
                    norm_epsilon=norm_epsilon,
                    activation=activation,
                    gated_mlp=gated_mlp,
                    mlp_bias=mlp_bias,
                    post_attention_norm=post_attention_norm,
                    post_ffw_norm=post_ffw_norm,
                    dropout=dropout,
                    attention_options=attention_options,
                    kernel_initializer=kernel_initializer,
                    dtype=policy,
                    name=f"transformer_layer_{i}",
                )
            )
        final_norm = Normalization(
            norm_kind,
            norm_epsilon,
            unit_offset=norm == "rms_unit_offset",
            dtype=policy,
            name="final_norm",
        )
        embedding_dropout = Dropout(dropout, dtype=policy, name="embedding_dropout")

        # Layers must exist before the functional graph is traced through `forward`.
        self._token_embedding = token_embedding
        self.position_embedding = position_embedding
        self.transformer_layers = blocks
        self.final_norm = final_norm
        self.embedding_dropout = embedding_dropout

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        hidden, _ = self.decode(token_ids, padding_mask=padding_mask)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=hidden,
            dtype=policy,
            **kwargs,
        )
        if policy is not None:
            # Functional construction ignores `dtype`; keep it so get_config round-trips.
            self.dtype_policy = policy
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.head_dim = head_dim
        self.max_sequence_length = max_sequence_length
        self.learned_positions = learned_positions
        self.tie_word_embeddings = tie_word_embeddings

    def decode(
        self,
        token_ids,
        padding_mask=None,
        positions=None,
        attention_mask=None,
        caches=None,
        cache_update_index=None,
        layer_intercept_fn=None,
        training=False,
    ):
        """Run the decoder. Returns `(hidden_states, caches)`.

        With `caches` (a list of per-layer `(keys, values)`), new keys are written at slot
        `cache_update_index` and `attention_mask` `[batch, query, capacity]` says which slots
        each query sees. `positions` `[batch, query]` are per-row token positions (left padding).
        `layer_intercept_fn(x, i)` may replace activations: i = -1 after the embedding, then
        0..num_layers-1 after each block.
        """
        x = invoke(self._token_embedding, token_ids)
        if self.position_embedding is not None:
            x = x + invoke(self.position_embedding, x, positions=positions)
        x = invoke(self.embedding_dropout, x, training=training)
        if layer_intercept_fn is not None:
            x = layer_intercept_fn(x, -1)
        new_caches = [] if caches is not None else None
        for i, block in enumerate(self.transformer_layers):
            out = invoke(
                block,
                x,
                padding_mask=padding_mask,
                attention_mask=attention_mask,
                positions=positions,
                cache=None if caches is None else caches[i],
                cache_update_index=cache_update_index,
                training=training,
            )
            if new_caches is None:
                x = out
            else:
                x, (keys, values) = out
                new_caches.append(LayerCache(keys, values))
            if layer_intercept_fn is not None:
                x = layer_intercept_fn(x, i)
        return invoke(self.final_norm, x), new_caches

    def logits(self, hidden_states):
        """Vocabulary logits for hidden states (tied or separate head, final soft-cap)."""
        return invoke(self._token_embedding, hidden_states, reverse=True)

    def empty_cache(self, batch_size: int, capacity: int) -> list:
        """Zeroed KV caches for `batch_size` sequences of `capacity` slots (the layout is
        `keras_lm.generation.cache`'s)."""
        caches = kv_cache.empty(self.num_layers, batch_size * self.num_key_value_heads,
                                capacity, self.head_dim, self.compute_dtype)
        layout = cache_layout(batch_size, self.num_key_value_heads)
        if layout is None or ops.distribute is None:
            return caches
        return [LayerCache(*(ops.distribute(t, *layout) for t in layer)) for layer in caches]


def _check_heads(hidden_dim, num_query_heads, num_key_value_heads, head_dim):
    if head_dim is not None:
        _check_positive(head_dim=head_dim)
    elif hidden_dim % num_query_heads:
        raise ValueError(
            f"`hidden_dim`={hidden_dim} must be divisible by the number of query heads "
            f"({num_query_heads}) when `head_dim` is not given."
        )
    if num_query_heads % num_key_value_heads:
        raise ValueError(
            f"The number of query heads ({num_query_heads}) must be a multiple of the number "
            f"of key/value heads ({num_key_value_heads})."
        )


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")


def _family_init(arguments):
    """`__init__` for a backbone whose public arguments are the dataclass `arguments`."""
    fields = dataclasses.fields(arguments)

    def __init__(self, *args, dtype=None, **kwargs):
        keras_kwargs = {k: kwargs.pop(k) for k in _KERAS_KEYWORDS if k in kwargs}
        try:
            values = arguments(*args, **kwargs)
        except TypeError as error:  # a missing or unknown argument: name the class
            raise TypeError(f"{type(self).__name__}: {error}".replace(
                f"{arguments.__name__}.__init__() ", "")) from None
        self._build_decoder(values.decoder_options(), dtype=dtype, **keras_kwargs)
        self._arguments = values
        for field in fields:
            value = getattr(values, field.name)
            if value is None and getattr(self, field.name, None) is not None:
                continue  # keep what the decoder resolved (e.g. `head_dim=None`: width / heads)
            setattr(self, field.name, value)

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for field in fields:
        default = field.default if field.default is not dataclasses.MISSING \
            else inspect.Parameter.empty
        parameters.append(inspect.Parameter(field.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                            default=default, annotation=field.type))
    parameters.append(inspect.Parameter("dtype", inspect.Parameter.KEYWORD_ONLY, default=None))
    parameters.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    __init__.__signature__ = inspect.Signature(parameters)
    __init__.__doc__ = arguments.__doc__
    return __init__
