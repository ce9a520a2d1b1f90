"""Gemma (1, 1.1, CodeGemma) and Gemma 2: Gemma's 1+w RMSNorm, GeGLU, sqrt(d)-scaled tied
embeddings; Gemma 2 adds post-norms, logit soft-caps, and a sliding window on every other
layer (the first, third, ...)."""

from dataclasses import dataclass
from typing import ClassVar

import keras

from keras_lm.chat import templates as chat_templates
from keras_lm.models.decoder import (
    GEMMA_LAYOUT,
    DecoderBackbone,
    DecoderOptions,
    decoder_options,
)
from keras_lm.models.family import causal_lm_classes
from keras_lm.tokenizers.sentence_piece_tokenizer import SentencePieceTokenizer


@dataclass(frozen=True)
class GemmaArguments:
    """KerasHub's `GemmaBackbone` arguments. `intermediate_dim` is KerasHub's: twice the
    Hugging Face `intermediate_size` (each GeGLU half is `intermediate_dim // 2` wide).

    Queries are scaled by `query_pre_attention_scalar ** -0.5`; left None it follows
    `query_head_dim_normalize` (head_dim, else hidden_dim / num_query_heads). Checkpoints
    state it (Hugging Face's `query_pre_attn_scalar`): Gemma 2 27B uses 144 with head_dim 128,
    which KerasHub, ignoring the scalar, gets wrong.
    """

    beyond_keras_hub: ClassVar[tuple] = ("rope_max_wavelength", "query_pre_attention_scalar")

    vocabulary_size: int
    num_layers: int
    num_query_heads: int
    num_key_value_heads: int
    hidden_dim: int
    intermediate_dim: int
    head_dim: int
    query_head_dim_normalize: bool = True
    use_post_ffw_norm: bool = False
    use_post_attention_norm: bool = False
    attention_logit_soft_cap: float | None = None
    final_logit_soft_cap: float | None = None
    use_sliding_window_attention: bool = False
    sliding_window_size: int = 4096
    layer_norm_epsilon: float = 1e-6
    dropout: float = 0.0
    rope_max_wavelength: float = 10000.0
    query_pre_attention_scalar: float | None = None

    def decoder_options(self) -> DecoderOptions:
        scalar = self.query_pre_attention_scalar
        if scalar is None:
            scalar = self.head_dim if self.query_head_dim_normalize \
                else self.hidden_dim / self.num_query_heads
        windowed = self.use_sliding_window_attention
        return decoder_options(
            GEMMA_LAYOUT, self.vocabulary_size, self.num_layers, self.num_query_heads,
            self.num_key_value_heads, self.hidden_dim, self.intermediate_dim // 2,
            self.head_dim,
            norm_epsilon=self.layer_norm_epsilon,
            rope_max_wavelength=self.rope_max_wavelength,
            sliding_window=self.sliding_window_size if windowed else None,
            sliding_window_layers=tuple(i % 2 == 0 for i in range(self.num_layers)),
            attention_logit_soft_cap=self.attention_logit_soft_cap,
            final_logit_soft_cap=self.final_logit_soft_cap,
            query_scale=float(scalar) ** -0.5,
            tie_word_embeddings=True,
            post_attention_norm=self.use_post_attention_norm,
            post_ffw_norm=self.use_post_ffw_norm,
            dropout=self.dropout,
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="untruncated_normal"),
        )


@keras.saving.register_keras_serializable(package="keras_lm")
class GemmaBackbone(DecoderBackbone):
    """The Gemma and Gemma 2 decoder (KerasHub's arguments).

    Example:
    >>> backbone = GemmaBackbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                          num_key_value_heads=1, hidden_dim=32, intermediate_dim=64,
    ...                          head_dim=8)
    """

    arguments = GemmaArguments


@keras.saving.register_keras_serializable(package="keras_lm")
class GemmaTokenizer(SentencePieceTokenizer):
    """Gemma's SentencePiece tokenizer: `<bos>` starts, `<eos>` ends, `<pad>` pads; generation
    also stops at `<end_of_turn>` when the vocabulary has it."""

    backbone_cls = GemmaBackbone
    special_tokens_spec = {"start_token": "<bos>", "end_token": "<eos>"}
    pad_token_spec = "<pad>"
    extra_stop_tokens = ("<end_of_turn>",)
    default_chat_template = chat_templates.GEMMA


GemmaCausalLMPreprocessor, GemmaCausalLM = causal_lm_classes(
    "Gemma", GemmaBackbone, GemmaTokenizer, default_sampler="greedy")
