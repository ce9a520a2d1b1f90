"""Building blocks shared by every model family."""

from keras_lm.layers.attention import CachedAttention
from keras_lm.layers.decoder_block import DecoderBlock, causal_padding_mask
from keras_lm.layers.embedding import PositionEmbedding, ReversibleEmbedding
from keras_lm.layers.feedforward import FeedForward
from keras_lm.layers.normalization import Normalization

__all__ = [
    "CachedAttention",
    "DecoderBlock",
    "FeedForward",
    "Normalization",
    "PositionEmbedding",
    "ReversibleEmbedding",
    "causal_padding_mask",
]
