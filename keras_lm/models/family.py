"""The task classes every family has: `XCausalLMPreprocessor` and `XCausalLM`, made from the
family's backbone and tokenizer classes (KerasHub's names, registered for saving)."""

import sys

import keras

from keras_lm.models.causal_lm import CausalLM
from keras_lm.models.causal_lm_preprocessor import CausalLMPreprocessor


def causal_lm_classes(prefix: str, backbone_cls, tokenizer_cls, default_sampler="top_k"):
    """`(XCausalLMPreprocessor, XCausalLM)` for the family `prefix` ("Gemma", ...).

    Example:
    >>> GemmaCausalLMPreprocessor, GemmaCausalLM = causal_lm_classes(  # doctest: +SKIP
    ...     "Gemma", GemmaBackbone, GemmaTokenizer, default_sampler="greedy")
    """
    module = sys._getframe(1).f_globals["__name__"]
    preprocessor = _registered(f"{prefix}CausalLMPreprocessor", CausalLMPreprocessor, module, {
        "__doc__": f"Tokenizes and packs strings for `{prefix}CausalLM`.",
        "backbone_cls": backbone_cls, "tokenizer_cls": tokenizer_cls})
    lm = _registered(f"{prefix}CausalLM", CausalLM, module, {
        "__doc__": f"{prefix} for generation and fine-tuning (default sampler: "
                   f'"{default_sampler}").\n\n    Example:\n    >>> lm = keras_lm.models.'
                   f'{prefix}CausalLM.from_preset("./preset")  # doctest: +SKIP\n'
                   '    >>> lm.generate("I want to say", max_length=30)  # doctest: +SKIP\n',
        "backbone_cls": backbone_cls, "preprocessor_cls": preprocessor,
        "default_sampler": default_sampler})
    return preprocessor, lm


def _registered(name, base, module, attributes):
    cls = type(name, (base,), {"__module__": module, "__qualname__": name, **attributes})
    return keras.saving.register_keras_serializable(package="keras_lm")(cls)
