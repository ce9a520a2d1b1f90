"""Llama (2, 3, 3.1): RMSNorm, SwiGLU MLP, RoPE (with Llama 3.1 scaling), GQA, no biases."""

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
from keras_lm.tokenizers.sentence_piece_tokenizer import SentencePieceTokenizer


@dataclass(frozen=True)
class LlamaArguments:
    """KerasHub's `LlamaBackbone` arguments (with the Llama 3.1 RoPE ones)."""

    vocabulary_size: int
    num_layers: int
    num_query_heads: int
    hidden_dim: int
    intermediate_dim: int
    num_key_value_heads: int
    rope_max_wavelength: float = 10000
    rope_position_scaling_factor: float = 1.0
    rope_frequency_adjustment_factor: float | None = None
    rope_low_freq_factor: float | None = None
    rope_high_freq_factor: float | None = None
    rope_pretraining_sequence_length: int | None = None
    layer_norm_epsilon: float = 1e-6
    dropout: float = 0.0
    tie_word_embeddings: bool = False

    def decoder_options(self) -> DecoderOptions:
        llama3 = None
        if self.rope_frequency_adjustment_factor is not None:
            llama3 = {  # Llama 3.1 per-band frequency scaling
                "factor": self.rope_frequency_adjustment_factor,
                "low_freq_factor": self.rope_low_freq_factor,
                "high_freq_factor": self.rope_high_freq_factor,
                "original_max_position_embeddings": self.rope_pretraining_sequence_length,
            }
        return decoder_options(
            LLAMA_LAYOUT, self.vocabulary_size, self.num_layers, self.num_query_heads,
            self.num_key_value_heads, self.hidden_dim, self.intermediate_dim,
            norm_epsilon=self.layer_norm_epsilon,
            rope_max_wavelength=self.rope_max_wavelength,
            rope_scaling_factor=self.rope_position_scaling_factor,
            rope_llama3_scaling=llama3,
            tie_word_embeddings=self.tie_word_embeddings,
            dropout=self.dropout,
        )


@keras.saving.register_keras_serializable(package="keras_lm")
class LlamaBackbone(DecoderBackbone):
    """The Llama decoder (KerasHub's arguments, plus Llama 3.1 RoPE scaling).

    Example:
    >>> backbone = LlamaBackbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                          hidden_dim=32, intermediate_dim=64, num_key_value_heads=2)
    """

    arguments = LlamaArguments


@keras.saving.register_keras_serializable(package="keras_lm")
class LlamaTokenizer(SentencePieceTokenizer):
    """Llama 2's SentencePiece tokenizer: `<s>` starts and `</s>` ends a sequence."""

    default_chat_template = chat_templates.INST

    backbone_cls = LlamaBackbone
    special_tokens_spec = {"start_token": "<s>", "end_token": "</s>"}


LlamaCausalLMPreprocessor, LlamaCausalLM = causal_lm_classes(
    "Llama", LlamaBackbone, LlamaTokenizer)
