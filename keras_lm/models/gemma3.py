"""Gemma 3 (text): Gemma's 1+w RMSNorms before and after attention and MLP, qk-norm, GeGLU,
sqrt(d)-scaled tied embeddings, and 5 sliding-window layers per global layer."""

import keras

from keras_lm.models.causal_lm import CausalLM
from keras_lm.models.causal_lm_preprocessor import CausalLMPreprocessor
from keras_lm.models.decoder import DecoderBackbone
from keras_lm.tokenizers.sentence_piece_tokenizer import SentencePieceTokenizer


def local_layer_pattern(num_layers: int, use_sliding_window: bool, pattern: int) -> list[bool]:
    """Which layers use the sliding window: all but every `pattern`-th one."""
    return [use_sliding_window and (i + 1) % pattern != 0 for i in range(num_layers)]


@keras.saving.register_keras_serializable(package="keras_lm")
class Gemma3Backbone(DecoderBackbone):
    """The Gemma 3 text decoder (KerasHub's arguments; text-only).

    Beyond KerasHub: `tie_word_embeddings`, the two RoPE wavelengths, the local/global layer
    pattern and `query_pre_attention_scalar` (Hugging Face's `query_pre_attn_scalar`) are
    arguments rather than constants, so every Gemma 3 text checkpoint maps exactly.

    Example:
    >>> backbone = Gemma3Backbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                           num_key_value_heads=1, hidden_dim=32, intermediate_dim=64,
    ...                           head_dim=16)
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        num_query_heads: int,
        num_key_value_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        head_dim: int,
        image_size: int | None = None,
        query_head_dim_normalize: bool = True,
        use_query_key_norm: bool = True,
        use_post_ffw_norm: bool = False,
        use_post_attention_norm: bool = False,
        attention_logit_soft_cap: float | None = None,
        final_logit_soft_cap: float | None = None,
        use_sliding_window_attention: bool = False,
        sliding_window_size: int = 1024,
        local_rope_scaling_factor: float = 1.0,
        global_rope_scaling_factor: float = 1.0,
        vision_encoder=None,
        layer_norm_epsilon: float = 1e-6,
        dropout: float = 0.0,
        local_rope_wavelength: float = 10_000.0,
        global_rope_wavelength: float = 1_000_000.0,
        sliding_window_pattern: int = 6,
        query_pre_attention_scalar: float | None = None,
        tie_word_embeddings: bool = True,
        dtype=None,
        **kwargs,
    ):
        if vision_encoder is not None:
            raise ValueError(
                "Gemma3Backbone here is text-only: `vision_encoder` must be None. "
                "Load the text part of a Gemma 3 checkpoint instead."
            )
        if query_pre_attention_scalar is None:
            query_pre_attention_scalar = (
                head_dim if query_head_dim_normalize else hidden_dim / num_query_heads
            )
        super().__init__(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_query_heads=num_query_heads,
            num_key_value_heads=num_key_value_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            head_dim=head_dim,
            norm="rms_unit_offset",  # Gemma RMSNorm: x * (1 + w)
            norm_epsilon=layer_norm_epsilon,
            activation="gelu_approximate",
            gated_mlp=True,  # GeGLU
            mlp_bias=False,
            attention_bias=False,
            use_rope=True,
            rope_max_wavelength=global_rope_wavelength,
            rope_scaling_factor=global_rope_scaling_factor,
            local_rope_max_wavelength=local_rope_wavelength,
            local_rope_scaling_factor=local_rope_scaling_factor,
            sliding_window=sliding_window_size if use_sliding_window_attention else None,
            sliding_window_layers=local_layer_pattern(
                num_layers, use_sliding_window_attention, sliding_window_pattern
            ),
            attention_logit_soft_cap=attention_logit_soft_cap,
            final_logit_soft_cap=final_logit_soft_cap,
            query_scale=float(query_pre_attention_scalar) ** -0.5,
            qk_norm=use_query_key_norm,
            scale_embeddings=True,
            tie_word_embeddings=tie_word_embeddings,
            post_attention_norm=use_post_attention_norm,
            post_ffw_norm=use_post_ffw_norm,
            dropout=dropout,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=dtype,
            **kwargs,
        )
        self.image_size = image_size
        self.query_head_dim_normalize = query_head_dim_normalize
        self.use_query_key_norm = use_query_key_norm
        self.use_post_ffw_norm = use_post_ffw_norm
        self.use_post_attention_norm = use_post_attention_norm
        self.attention_logit_soft_cap = attention_logit_soft_cap
        self.final_logit_soft_cap = final_logit_soft_cap
        self.use_sliding_window_attention = use_sliding_window_attention
        self.sliding_window_size = sliding_window_size
        self.local_rope_scaling_factor = local_rope_scaling_factor
        self.global_rope_scaling_factor = global_rope_scaling_factor
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.local_rope_wavelength = local_rope_wavelength
        self.global_rope_wavelength = global_rope_wavelength
        self.sliding_window_pattern = sliding_window_pattern
        self.query_pre_attention_scalar = query_pre_attention_scalar
        self.text_only_model = True

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            num_layers=self.num_layers,
            num_query_heads=self.num_query_heads,
            num_key_value_heads=self.num_key_value_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            head_dim=self.head_dim,
            image_size=self.image_size,
            query_head_dim_normalize=self.query_head_dim_normalize,
            use_query_key_norm=self.use_query_key_norm,
            use_post_ffw_norm=self.use_post_ffw_norm,
            use_post_attention_norm=self.use_post_attention_norm,
            attention_logit_soft_cap=self.attention_logit_soft_cap,
            final_logit_soft_cap=self.final_logit_soft_cap,
            use_sliding_window_attention=self.use_sliding_window_attention,
            sliding_window_size=self.sliding_window_size,
            local_rope_scaling_factor=self.local_rope_scaling_factor,
            global_rope_scaling_factor=self.global_rope_scaling_factor,
            vision_encoder=None,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout=self.dropout,
            local_rope_wavelength=self.local_rope_wavelength,
            global_rope_wavelength=self.global_rope_wavelength,
            sliding_window_pattern=self.sliding_window_pattern,
            query_pre_attention_scalar=self.query_pre_attention_scalar,
            tie_word_embeddings=self.tie_word_embeddings,
            dtype=self.serialized_dtype(),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_lm")
class Gemma3Tokenizer(SentencePieceTokenizer):
    """Gemma 3's SentencePiece tokenizer: `<bos>` starts, `<eos>` ends, `<pad>` pads; generation
    also stops at `<end_of_turn>` when the vocabulary has it."""

    backbone_cls = Gemma3Backbone
    special_tokens_spec = {"start_token": "<bos>", "end_token": "<eos>"}
    pad_token_spec = "<pad>"
    extra_stop_tokens = ("<end_of_turn>",)


@keras.saving.register_keras_serializable(package="keras_lm")
class Gemma3CausalLMPreprocessor(CausalLMPreprocessor):
    """Tokenizes and packs strings for `Gemma3CausalLM` (text only)."""

    backbone_cls = Gemma3Backbone
    tokenizer_cls = Gemma3Tokenizer


@keras.saving.register_keras_serializable(package="keras_lm")
class Gemma3CausalLM(CausalLM):
    """Gemma 3 (text) for generation and fine-tuning. Default sampler: "greedy".

    Example:
    >>> lm = Gemma3CausalLM.from_preset("./gemma3_tiny")  # doctest: +SKIP
    >>> lm.generate("The capital of France is", max_length=16)  # doctest: +SKIP
    """

    backbone_cls = Gemma3Backbone
    preprocessor_cls = Gemma3CausalLMPreprocessor
    default_sampler = "greedy"
