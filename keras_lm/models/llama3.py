"""Llama 3 (3, 3.1, 3.2): Llama's decoder with a byte-level BPE tokenizer whose text starts at
`<|begin_of_text|>` and ends at `<|end_of_text|>` or a chat turn's `<|eot_id|>`."""

import keras

from keras_lm.chat import templates as chat_templates
from keras_lm.models.decoder import DecoderBackbone
from keras_lm.models.family import causal_lm_classes
from keras_lm.models.llama import LlamaArguments
from keras_lm.tokenizers.byte_pair_tokenizer import BytePairTokenizer

# Llama 3's pre-tokenizer: contractions, letter runs, numbers in groups of up to 3 digits.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@keras.saving.register_keras_serializable(package="keras_lm")
class Llama3Backbone(DecoderBackbone):
    """The Llama 3 decoder (KerasHub's `Llama3Backbone` arguments, Llama's).

    Example:
    >>> backbone = Llama3Backbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                           hidden_dim=32, intermediate_dim=64, num_key_value_heads=2)
    """

    arguments = LlamaArguments


@keras.saving.register_keras_serializable(package="keras_lm")
class Llama3Tokenizer(BytePairTokenizer):
    """Llama 3's byte-level BPE with its `<|...|>` special tokens."""

    backbone_cls = Llama3Backbone
    special_tokens_spec = {"start_token": "<|begin_of_text|>", "end_token": "<|end_of_text|>"}
    extra_stop_tokens = ("<|eot_id|>", "<|eom_id|>")
    default_chat_template = chat_templates.LLAMA3
    default_split_pattern = LLAMA3_SPLIT_PATTERN
    ignore_merges = True


Llama3CausalLMPreprocessor, Llama3CausalLM = causal_lm_classes(
    "Llama3", Llama3Backbone, Llama3Tokenizer)
