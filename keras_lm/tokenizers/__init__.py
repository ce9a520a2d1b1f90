"""Tokenizers that run on the `tokenizers` and `sentencepiece` libraries (no TensorFlow)."""

from keras_lm.tokenizers.byte_pair_tokenizer import BytePairTokenizer
from keras_lm.tokenizers.sentence_piece_tokenizer import SentencePieceTokenizer
from keras_lm.tokenizers.tokenizer import Tokenizer

__all__ = ["BytePairTokenizer", "SentencePieceTokenizer", "Tokenizer"]
