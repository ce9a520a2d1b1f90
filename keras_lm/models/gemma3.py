"""Gemma 3 (text): Gemma's 1+w RMSNorms before and after attention and MLP, qk-norm, GeGLU,
sqrt(d)-scaled tied embeddings, and 5 sliding-window layers per global layer."""

from dataclasses import dataclass
from typing import ClassVar

import keras

from keras_lm.models.decoder import (
    GEMMA_LAYOUT,
    DecoderBackbone,
    DecoderOptions,
    decoder_options,
)
from keras_lm.models.family import causal_lm_classes
from keras_lm.models.gemma import GemmaTokenizer


def local_layer_pattern(num_layers: int, use_sliding_window: bool, pattern: int) -> tuple:
    """Which layers use the sliding window: all but every `pattern`-th one."""
    return tuple(use_sliding_window and (i + 1) % pattern != 0 for i in range(num_layers))


@dataclass(frozen=True)
class Gemma3Arguments:
    """KerasHub's `Gemma3Backbone` arguments (text only). Beyond KerasHub, the two RoPE
    wavelengths, the local/global pattern, `query_pre_attention_scalar` (Hugging Face's
    `query_pre_attn_scalar`) and `tie_word_embeddings`, so every text checkpoint maps exactly."""

    beyond_keras_hub: ClassVar[tuple] = ("local_rope_wavelength", "global_rope_wavelength",
                                           "sliding_window_pattern", "query_pre_attention_scalar",
                                           "tie_word_embeddings")

    vocabulary_size: int
    num_layers: int
    num_query_heads: int
    num_key_value_heads: int
    hidden_dim: int
    intermediate_dim: int
    head_dim: int
    image_size: int | None = None
    query_head_dim_normalize: bool = True
    use_query_key_norm: bool = True
    use_post_ffw_norm: bool = False
    use_post_attention_norm: bool = False
    attention_logit_soft_cap: float | None = None
    final_logit_soft_cap: float | None = None
    use_sliding_window_attention: bool = False
    sliding_window_size: int = 1024
    local_rope_scaling_factor: float = 1.0
    global_rope_scaling_factor: float = 1.0
    vision_encoder: None = None
    use_bidirectional_attention: bool = False
    is_embedding_model: bool = False
    pooling_intermediate_dim: int | None = None
    embedding_dim: int | None = None
    layer_norm_epsilon: float = 1e-6
    dropout: float = 0.0
    local_rope_wavelength: float = 10_000.0
    global_rope_wavelength: float = 1_000_000.0
    sliding_window_pattern: int = 6
    query_pre_attention_scalar: float | None = None
    tie_word_embeddings: bool = True

    def decoder_options(self) -> DecoderOptions:
        if self.vision_encoder is not None:
            raise ValueError(
                "Gemma3Backbone here is text-only: `vision_encoder` must be None. "
                "Load the text part of a Gemma 3 checkpoint instead."
            )
        if self.use_bidirectional_attention or self.is_embedding_model:
            raise ValueError("Gemma3Backbone here is a causal language model: "
                             "`use_bidirectional_attention` and `is_embedding_model` "
                             "(EmbeddingGemma) are not supported.")
        scalar = self.query_pre_attention_scalar
        if scalar is None:
            scalar = self.head_dim if self.query_head_dim_normalize \
                else self.hidden_dim / self.num_query_heads
        windowed = self.use_sliding_window_attention
        return decoder_options(
            GEMMA_LAYOUT, self.vocabulary_size, self.num_layers, self.num_query_heads,
            self.num_key_value_heads, self.hidden_dim, self.intermediate_dim, self.head_dim,
            norm_epsilon=self.layer_norm_epsilon,
            rope_max_wavelength=self.global_rope_wavelength,
            rope_scaling_factor=self.global_rope_scaling_factor,
            local_rope_max_wavelength=self.local_rope_wavelength,
            local_rope_scaling_factor=self.local_rope_scaling_factor,
            sliding_window=self.sliding_window_size if windowed else None,
            sliding_window_layers=local_layer_pattern(
                self.num_layers, windowed, self.sliding_window_pattern),
            attention_logit_soft_cap=self.attention_logit_soft_cap,
            final_logit_soft_cap=self.final_logit_soft_cap,
            query_scale=float(scalar) ** -0.5,
            qk_norm=self.use_query_key_norm,
            tie_word_embeddings=self.tie_word_embeddings,
            post_attention_norm=self.use_post_attention_norm,
            post_ffw_norm=self.use_post_ffw_norm,
            dropout=self.dropout,
        )


@keras.saving.register_keras_serializable(package="keras_lm")
class Gemma3Backbone(DecoderBackbone):
    """The Gemma 3 text decoder (KerasHub's arguments; text-only).

    Example:
    >>> backbone = Gemma3Backbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                           num_key_value_heads=1, hidden_dim=32, intermediate_dim=64,
    ...                           head_dim=16)
    """

    arguments = Gemma3Arguments
    text_only_model = True


@keras.saving.register_keras_serializable(package="keras_lm")
class Gemma3Tokenizer(GemmaTokenizer):
    """Gemma 3's SentencePiece tokenizer: Gemma's special tokens and stops."""

    backbone_cls = Gemma3Backbone


Gemma3CausalLMPreprocessor, Gemma3CausalLM = causal_lm_classes(
    "Gemma3", Gemma3Backbone, Gemma3Tokenizer, default_sampler="greedy")
