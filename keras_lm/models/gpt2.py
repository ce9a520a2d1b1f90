"""GPT-2: learned positions, LayerNorm with bias, biased attention, tanh-GELU MLP, tied head."""

import keras

from keras_lm.models.causal_lm import CausalLM
from keras_lm.models.causal_lm_preprocessor import CausalLMPreprocessor
from keras_lm.models.decoder import DecoderBackbone
from keras_lm.tokenizers.byte_pair_tokenizer import BytePairTokenizer


@keras.saving.register_keras_serializable(package="keras_lm")
class GPT2Backbone(DecoderBackbone):
    """The GPT-2 decoder (KerasHub's arguments).

    Example:
    >>> backbone = GPT2Backbone(vocabulary_size=100, num_layers=2, num_heads=2,
    ...                         hidden_dim=16, intermediate_dim=32, max_sequence_length=64)
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        dropout: float = 0.1,
        max_sequence_length: int = 1024,
        dtype=None,
        **kwargs,
    ):
        super().__init__(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_query_heads=num_heads,
            num_key_value_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            norm="layer",  # LayerNorm with bias, eps 1e-5
            activation="gelu_approximate",  # tanh GELU
            learned_positions=True,  # absolute learned positions, no RoPE
            max_sequence_length=max_sequence_length,
            attention_bias=True,
            dropout=dropout,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=dtype,
            **kwargs,
        )
        self.num_heads = num_heads
        self.dropout = dropout

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            max_sequence_length=self.max_sequence_length,
            dtype=self.serialized_dtype(),
        )
        return config


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


@keras.saving.register_keras_serializable(package="keras_lm")
class GPT2CausalLMPreprocessor(CausalLMPreprocessor):
    """Tokenizes and packs strings for `GPT2CausalLM`."""

    backbone_cls = GPT2Backbone
    tokenizer_cls = GPT2Tokenizer


@keras.saving.register_keras_serializable(package="keras_lm")
class GPT2CausalLM(CausalLM):
    """GPT-2 for generation and fine-tuning. Default sampler: "top_k".

    Example:
    >>> lm = GPT2CausalLM.from_preset("./gpt2_tiny")  # doctest: +SKIP
    >>> lm.generate("I want to say", max_length=30)  # doctest: +SKIP
    """

    backbone_cls = GPT2Backbone
    preprocessor_cls = GPT2CausalLMPreprocessor
