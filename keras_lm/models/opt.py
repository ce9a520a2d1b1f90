"""OPT: GPT-2's layout with ReLU, learned positions (Hugging Face stores them after 2 unused
rows; the map drops those) and a byte-level BPE whose start and end token is `</s>`."""

from dataclasses import dataclass, replace

import keras

from keras_lm.models.decoder import DecoderBackbone, DecoderOptions
from keras_lm.models.family import causal_lm_classes
from keras_lm.models.gpt2 import GPT2Arguments
from keras_lm.tokenizers.byte_pair_tokenizer import BytePairTokenizer


@dataclass(frozen=True)
class OPTArguments(GPT2Arguments):
    """KerasHub's `OPTBackbone` arguments: GPT-2's, with 2048 positions by default."""

    max_sequence_length: int = 2048

    def decoder_options(self) -> DecoderOptions:
        return replace(super().decoder_options(), activation="relu",
                       kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02))


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


OPTCausalLMPreprocessor, OPTCausalLM = causal_lm_classes(
    "OPT", OPTBackbone, OPTTokenizer)
