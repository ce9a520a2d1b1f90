"""keras_lm: pretrained causal language models for Keras 3.

Example:
>>> import keras_lm as keras_hub
>>> lm = keras_hub.models.CausalLM.from_preset("./my_gpt2_preset")
>>> lm.generate("Keras is a", max_length=32)
"""

from keras_lm._backend import choose_backend

choose_backend()

from keras_lm import layers, models, samplers, tokenizers  # noqa: E402
from keras_lm.version import __version__  # noqa: E402

__all__ = ["layers", "models", "samplers", "tokenizers", "__version__"]
