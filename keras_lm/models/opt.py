"""OPT: GPT-2's layout with ReLU, learned positions (Hugging Face stores them after 2 unused
rows; the map drops those) and a byte-level BPE whose start and end token is `</s>`."""

from dataclasses import dataclass

import keras

from keras_lm.models.causal_lm import CausalLM
from keras_lm.models.causal_lm_preprocessor import CausalLMPreprocessor
from keras_lm.models.decoder import DecoderBackbone, DecoderOptions
from keras_lm.tokenizers.byte_pair_tokenizer import BytePairTokenizer


@dataclass(frozen=True)
class OPTArguments:
    """KerasHub's `OPTBackbone` arguments."""

    vocabulary_size: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    intermediate_dim: int
    dropout: float = 0.1
    max_sequence_length: int = 2048

    def decoder_options(self) -> DecoderOptions:
        return DecoderOptions(
            self.vocabulary_size, self.num_layers, self.num_heads, self.num_heads,
            self.hidden_dim, self.intermediate_dim,
            norm="layer",  # pre-norm LayerNorm with bias, eps 1e-5
            activation="relu",
            learned_positions=True,
            max_sequence_length=self.max_sequence_length,
            dropout=self.dropout,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )


@keras.saving.register_keras_serializable(package="keras_lm")
class OPTBackbone(DecoderBackbone):
    """The OPT decoder (KerasHub's arguments).

    Example:
    >>> backbone = OPTBackbone(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
    ...                        intermediate_dim=32, max_sequence_length=64)
    """

    arguments = OPTArguments


@keras.saving.register_keras_serializable(package="keras_lm")
class OPTTokenizer(BytePairTokenizer):
    """OPT's byte-level BPE (GPT-2's merges): `</s>` starts and ends, `<pad>` pads."""

    backbone_cls = OPTBackbone
    special_tokens_spec = {"start_token": "</s>", "end_token": "</s>"}
    pad_token_spec = "<pad>"


@keras.saving.register_keras_serializable(package="keras_lm")
class OPTCausalLMPreprocessor(CausalLMPreprocessor):
    """Tokenizes and packs strings for `OPTCausalLM`."""

    backbone_cls = OPTBackbone
    tokenizer_cls = OPTTokenizer


@keras.saving.register_keras_serializable(package="keras_lm")
class OPTCausalLM(CausalLM):
    """OPT for generation and fine-tuning. Default sampler: "top_k".

    Example:
    >>> lm = OPTCausalLM.from_preset("./opt_tiny")  # doctest: +SKIP
    >>> lm.generate("I want to say", max_length=30)  # doctest: +SKIP
    """

    backbone_cls = OPTBackbone
    preprocessor_cls = OPTCausalLMPreprocessor
