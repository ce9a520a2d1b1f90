"""Llama (2, 3, 3.1): RMSNorm, SwiGLU MLP, RoPE (with Llama 3.1 scaling), GQA, no biases."""

import keras

from keras_lm.models.causal_lm import CausalLM
from keras_lm.models.causal_lm_preprocessor import CausalLMPreprocessor
from keras_lm.models.decoder import DecoderBackbone
from keras_lm.tokenizers.sentence_piece_tokenizer import SentencePieceTokenizer


@keras.saving.register_keras_serializable(package="keras_lm")
class LlamaBackbone(DecoderBackbone):
    """The Llama decoder (KerasHub's arguments, plus Llama 3.1 RoPE scaling).

    Example:
    >>> backbone = LlamaBackbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                          hidden_dim=32, intermediate_dim=64, num_key_value_heads=2)
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        num_query_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        num_key_value_heads: int,
        rope_max_wavelength: float = 10000,
        rope_position_scaling_factor: float = 1.0,
        rope_frequency_adjustment_factor: float | None = None,
        rope_low_freq_factor: float | None = None,
        rope_high_freq_factor: float | None = None,
        rope_pretraining_sequence_length: int | None = None,
        layer_norm_epsilon: float = 1e-6,
        dropout: float = 0.0,
        tie_word_embeddings: bool = False,
        dtype=None,
        **kwargs,
    ):
        llama3 = None
        if rope_frequency_adjustment_factor is not None:
            llama3 = {  # Llama 3.1 per-band frequency scaling
                "factor": rope_frequency_adjustment_factor,
                "low_freq_factor": rope_low_freq_factor,
                "high_freq_factor": rope_high_freq_factor,
                "original_max_position_embeddings": rope_pretraining_sequence_length,
            }
        super().__init__(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_query_heads=num_query_heads,
            num_key_value_heads=num_key_value_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            norm="rms",  # RMSNorm, weight multiplies
            norm_epsilon=layer_norm_epsilon,
            activation="silu",
            gated_mlp=True,  # SwiGLU
            mlp_bias=False,
            attention_bias=False,
            use_rope=True,
            rope_max_wavelength=rope_max_wavelength,
            rope_scaling_factor=rope_position_scaling_factor,
            rope_llama3_scaling=llama3,
            tie_word_embeddings=tie_word_embeddings,
            dropout=dropout,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=dtype,
            **kwargs,
        )
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_position_scaling_factor = rope_position_scaling_factor
        self.rope_frequency_adjustment_factor = rope_frequency_adjustment_factor
        self.rope_low_freq_factor = rope_low_freq_factor
        self.rope_high_freq_factor = rope_high_freq_factor
        self.rope_pretraining_sequence_length = rope_pretraining_sequence_length
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            num_layers=self.num_layers,
            num_query_heads=self.num_query_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            num_key_value_heads=self.num_key_value_heads,
            rope_max_wavelength=self.rope_max_wavelength,
            rope_position_scaling_factor=self.rope_position_scaling_factor,
            rope_frequency_adjustment_factor=self.rope_frequency_adjustment_factor,
            rope_low_freq_factor=self.rope_low_freq_factor,
            rope_high_freq_factor=self.rope_high_freq_factor,
            rope_pretraining_sequence_length=self.rope_pretraining_sequence_length,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout=self.dropout,
            tie_word_embeddings=self.tie_word_embeddings,
            dtype=self.serialized_dtype(),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_lm")
class LlamaTokenizer(SentencePieceTokenizer):
    """Llama 2's SentencePiece tokenizer: `<s>` starts and `</s>` ends a sequence."""

    backbone_cls = LlamaBackbone
    special_tokens_spec = {"start_token": "<s>", "end_token": "</s>"}


@keras.saving.register_keras_serializable(package="keras_lm")
class LlamaCausalLMPreprocessor(CausalLMPreprocessor):
    """Tokenizes and packs strings for `LlamaCausalLM` (start token, no end token by default
    when generating)."""

    backbone_cls = LlamaBackbone
    tokenizer_cls = LlamaTokenizer


@keras.saving.register_keras_serializable(package="keras_lm")
class LlamaCausalLM(CausalLM):
    """Llama for generation and fine-tuning. Default sampler: "top_k".

    Example:
    >>> lm = LlamaCausalLM.from_preset("./llama_tiny")  # doctest: +SKIP
    """

    backbone_cls = LlamaBackbone
    preprocessor_cls = LlamaCausalLMPreprocessor
