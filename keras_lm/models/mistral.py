"""Mistral: Llama with attention limited to a sliding window on every layer, and an explicit
`head_dim` (Mistral NeMo's 128 with a 5120 width)."""

from dataclasses import dataclass
from typing import ClassVar

import keras

from keras_lm.chat import templates as chat_templates
from keras_lm.models.decoder import (
    LLAMA_LAYOUT,
    DecoderBackbone,
    DecoderOptions,
    decoder_options,
)
from keras_lm.models.family import causal_lm_classes
from keras_lm.tokenizers.sentence_piece_tokenizer import SentencePieceTokenizer


@dataclass(frozen=True)
class MistralArguments:
    """KerasHub's `MistralBackbone` arguments; beyond it `head_dim` (None: width / heads) and
    `tie_word_embeddings`. `sliding_window=None` attends to the whole sequence (v0.2, v0.3)."""

    beyond_keras_hub: ClassVar[tuple] = ("tie_word_embeddings",)

    vocabulary_size: int
    num_layers: int
    num_query_heads: int
    hidden_dim: int
    intermediate_dim: int
    num_key_value_heads: int
    rope_max_wavelength: float = 10000
    rope_scaling_factor: float = 1.0
    layer_norm_epsilon: float = 1e-6
    sliding_window: int | None = 512
    dropout: float = 0.0
    head_dim: int | None = None
    tie_word_embeddings: bool = False

    def decoder_options(self) -> DecoderOptions:
        return decoder_options(
            LLAMA_LAYOUT, self.vocabulary_size, self.num_layers, self.num_query_heads,
            self.num_key_value_heads, self.hidden_dim, self.intermediate_dim, self.head_dim,
            norm_epsilon=self.layer_norm_epsilon,
            rope_max_wavelength=self.rope_max_wavelength,
            rope_scaling_factor=self.rope_scaling_factor,
            sliding_window=self.sliding_window,  # every layer
            tie_word_embeddings=self.tie_word_embeddings,
            dropout=self.dropout,
        )


@keras.saving.register_keras_serializable(package="keras_lm")
class MistralBackbone(DecoderBackbone):
    """The Mistral decoder (KerasHub's arguments).

    Example:
    >>> backbone = MistralBackbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                            hidden_dim=32, intermediate_dim=64, num_key_value_heads=2,
    ...                            sliding_window=8)
    """

    arguments = MistralArguments


@keras.saving.register_keras_serializable(package="keras_lm")
class MistralTokenizer(SentencePieceTokenizer):
    """Mistral's SentencePiece tokenizer: `<s>` starts and `</s>` ends a sequence."""

    backbone_cls = MistralBackbone
    special_tokens_spec = {"start_token": "<s>", "end_token": "</s>"}
    prefix_after_control_tokens = True  # as transformers' Mistral conversion does
    default_chat_template = chat_templates.INST


MistralCausalLMPreprocessor, MistralCausalLM = causal_lm_classes(
    "Mistral", MistralBackbone, MistralTokenizer)
