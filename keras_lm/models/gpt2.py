"""GPT-2: learned positions, LayerNorm with bias, biased attention, tanh-GELU MLP, tied head."""

from dataclasses import dataclass

import keras

from keras_lm.models.decoder import DecoderBackbone, DecoderOptions
from keras_lm.models.family import causal_lm_classes
from keras_lm.tokenizers.byte_pair_tokenizer import BytePairTokenizer


@dataclass(frozen=True)
class GPT2Arguments:
    """KerasHub's `GPT2Backbone` arguments."""

    vocabulary_size: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    intermediate_dim: int
    dropout: float = 0.1
    max_sequence_length: int = 1024

    def decoder_options(self) -> DecoderOptions:
        return DecoderOptions(
            self.vocabulary_size, self.num_layers, self.num_heads, self.num_heads,
            self.hidden_dim, self.intermediate_dim,
            norm="layer",  # LayerNorm with bias, eps 1e-5
            activation="gelu_approximate",  # tanh GELU
            learned_positions=True,  # absolute learned positions, no RoPE
            max_sequence_length=self.max_sequence_length,
            attention_bias=True,
            dropout=self.dropout,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
        )


@keras.saving.register_keras_serializable(package="keras_lm")
class GPT2Backbone(DecoderBackbone):
    """The GPT-2 decoder (KerasHub's arguments).

    Example:
    >>> backbone = GPT2Backbone(vocabulary_size=100, num_layers=2, num_heads=2,
    ...                         hidden_dim=16, intermediate_dim=32, max_sequence_length=64)
    """

    arguments = GPT2Arguments


@keras.saving.register_keras_serializable(package="keras_lm")
class GPT2Tokenizer(BytePairTokenizer):
    """GPT-2's byte-level BPE; `<|endoftext|>` is the start, end and padding token.

    Example:
    >>> vocab = {"<|endoftext|>": 0, "a": 4, "Ġquick": 5, "Ġfox": 6}
    >>> merges = ["Ġ q", "u i", "c k", "ui ck", "Ġq uick", "Ġ f", "o x", "Ġf ox"]
    >>> GPT2Tokenizer(vocabulary=vocab, merges=merges)("a quick fox").tolist()
    [4, 5, 6]
    """

    backbone_cls = GPT2Backbone
    special_tokens_spec = {"end_token": "<|endoftext|>", "start_token": "<|endoftext|>"}
    pad_token_spec = "<|endoftext|>"


GPT2CausalLMPreprocessor, GPT2CausalLM = causal_lm_classes(
    "GPT2", GPT2Backbone, GPT2Tokenizer)
