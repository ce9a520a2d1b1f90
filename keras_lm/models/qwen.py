"""Qwen 2 / 2.5 and Qwen 3 (dense): Llama's layout with biases on the query, key and value
projections (Qwen 2) or per-head RMSNorm on queries and keys and an explicit head size
(Qwen 3); byte-level BPE whose text ends at `<|endoftext|>` or a chat turn's `<|im_end|>`."""

from dataclasses import dataclass

import keras

from keras_lm.chat import templates as chat_templates
from keras_lm.models.decoder import (
    LLAMA_LAYOUT,
    DecoderBackbone,
    DecoderOptions,
    decoder_options,
)
from keras_lm.models.family import causal_lm_classes
from keras_lm.tokenizers.byte_pair_tokenizer import BytePairTokenizer

# Qwen's pre-tokenizer: like Llama 3's, but every digit is its own word.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _qwen_options(args, head_dim, qkv_bias, qk_norm) -> DecoderOptions:
    windowed = getattr(args, "use_sliding_window_attention", False)
    return decoder_options(
        LLAMA_LAYOUT, args.vocabulary_size, args.num_layers, args.num_query_heads,
        args.num_key_value_heads, args.hidden_dim, args.intermediate_dim, head_dim,
        norm_epsilon=args.layer_norm_epsilon,
        attention_bias=qkv_bias,  # query, key and value only
        attention_output_bias=False,
        rope_max_wavelength=args.rope_max_wavelength,
        rope_scaling_factor=args.rope_scaling_factor,
        sliding_window=args.sliding_window_size if windowed else None,
        qk_norm=qk_norm,
        tie_word_embeddings=args.tie_word_embeddings,
        dropout=args.dropout,
    )


@dataclass(frozen=True)
class QwenArguments:
    """KerasHub's `QwenBackbone` arguments (Qwen 2 and 2.5)."""

    vocabulary_size: int
    num_layers: int
    num_query_heads: int
    num_key_value_heads: int
    hidden_dim: int
    intermediate_dim: int
    rope_max_wavelength: float = 10000
    rope_scaling_factor: float = 1.0
    layer_norm_epsilon: float = 1e-6
    dropout: float = 0.0
    tie_word_embeddings: bool = True
    use_sliding_window_attention: bool = False
    sliding_window_size: int = 32768

    def decoder_options(self) -> DecoderOptions:
        return _qwen_options(self, None, qkv_bias=True, qk_norm=False)


@dataclass(frozen=True)
class Qwen3Arguments:
    """KerasHub's `Qwen3Backbone` arguments (dense)."""

    vocabulary_size: int
    num_layers: int
    num_query_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_dim: int
    intermediate_dim: int
    rope_max_wavelength: float = 10000
    rope_scaling_factor: float = 1.0
    layer_norm_epsilon: float = 1e-6
    dropout: float = 0.0
    tie_word_embeddings: bool = True
    sliding_window_size: int | None = 32768

    def decoder_options(self) -> DecoderOptions:
        return _qwen_options(self, self.head_dim, qkv_bias=False, qk_norm=True)


@keras.saving.register_keras_serializable(package="keras_lm")
class QwenBackbone(DecoderBackbone):
    """The Qwen 2 / 2.5 decoder (KerasHub's arguments).

    Example:
    >>> backbone = QwenBackbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                         num_key_value_heads=2, hidden_dim=32, intermediate_dim=64)
    """

    arguments = QwenArguments


@keras.saving.register_keras_serializable(package="keras_lm")
class Qwen3Backbone(DecoderBackbone):
    """The Qwen 3 (dense) decoder (KerasHub's arguments).

    Example:
    >>> backbone = Qwen3Backbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                          num_key_value_heads=2, head_dim=8, hidden_dim=32,
    ...                          intermediate_dim=64)
    """

    arguments = Qwen3Arguments


@keras.saving.register_keras_serializable(package="keras_lm")
class QwenTokenizer(BytePairTokenizer):
    """Qwen's byte-level BPE (NFC, digit-by-digit): no start token; `<|endoftext|>` ends and
    pads; generation also stops at `<|im_end|>`."""

    backbone_cls = QwenBackbone
    special_tokens_spec = {"end_token": "<|endoftext|>"}
    pad_token_spec = "<|endoftext|>"
    extra_stop_tokens = ("<|im_end|>",)
    default_chat_template = chat_templates.CHATML
    default_split_pattern = QWEN_SPLIT_PATTERN
    default_normalization = "NFC"


@keras.saving.register_keras_serializable(package="keras_lm")
class Qwen3Tokenizer(QwenTokenizer):
    """Qwen 3's tokenizer (Qwen 2's rules)."""

    backbone_cls = Qwen3Backbone


QwenCausalLMPreprocessor, QwenCausalLM = causal_lm_classes("Qwen", QwenBackbone, QwenTokenizer)
Qwen3CausalLMPreprocessor, Qwen3CausalLM = causal_lm_classes(
    "Qwen3", Qwen3Backbone, Qwen3Tokenizer)
