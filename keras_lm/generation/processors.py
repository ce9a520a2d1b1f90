"""Logits processors: composable edits of next-token logits, applied before any sampler.

Each processor is `processor(logits, context) -> logits` on float32 `[batch, vocab]` logits.
`context["seen"]` (prompt and generated tokens, bool) and `context["counts"]` (generated tokens
only, int32) are `[batch, vocab]` and are only kept when a processor asks for them.
"""

import numpy as np

from keras_lm import checks
from keras_lm.backend import ops

_NEG = -1e9


class LogitsProcessor:
    """Base class. Set `needs_history = True` to receive `seen` / `counts`.

    Example:
    >>> class NoToken7(LogitsProcessor):
    ...     def __call__(self, logits, context):
    ...         return keras.ops.where(keras.ops.arange(logits.shape[-1]) == 7, -1e9, logits)
    """

    needs_history = False

    def __call__(self, logits, context):
        raise NotImplementedError

    def cache_key(self):
        """Identity for compiled-function caching (same key → same compiled program)."""
        return (type(self).__name__, id(self))


class MinPProcessor(LogitsProcessor):
    """Drop tokens whose probability is below `min_p` times the top probability."""

    def __init__(self, min_p: float):
        self.min_p = checks.finite_number(min_p, "min_p", low=0, low_open=True, high=1)

    def __call__(self, logits, context):
        probabilities = ops.softmax(logits, axis=-1)
        threshold = self.min_p * ops.max(probabilities, axis=-1, keepdims=True)
        return ops.where(probabilities < threshold, _NEG, logits)

    def cache_key(self):
        return ("min_p", self.min_p)


class RepetitionPenalty(LogitsProcessor):
    """Divide positive (multiply negative) logits of already-seen tokens by `penalty`."""

    needs_history = True

    def __init__(self, penalty: float):
        self.penalty = checks.finite_number(
            penalty, "repetition_penalty", low=0, low_open=True
        )

    def __call__(self, logits, context):
        penalized = ops.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return ops.where(context["seen"], penalized, logits)

    def cache_key(self):
        return ("repetition", self.penalty)


class PresencePenalty(LogitsProcessor):
    """Subtract `penalty` from every token generated at least once."""

    needs_history = True

    def __init__(self, penalty: float):
        self.penalty = checks.finite_number(penalty, "presence_penalty")

    def __call__(self, logits, context):
        return logits - self.penalty * ops.cast(context["counts"] > 0, logits.dtype)

    def cache_key(self):
        return ("presence", self.penalty)


class FrequencyPenalty(LogitsProcessor):
    """Subtract `penalty` times the number of times each token was generated."""

    needs_history = True

    def __init__(self, penalty: float):
        self.penalty = checks.finite_number(penalty, "frequency_penalty")

    def __call__(self, logits, context):
        return logits - self.penalty * ops.cast(context["counts"], logits.dtype)

    def cache_key(self):
        return ("frequency", self.penalty)


class LogitBias(LogitsProcessor):
    """Add a fixed bias per token id, e.g. `{50256: -100.0}` to forbid a token."""

    def __init__(self, bias: dict, vocabulary_size: int | None = None):
        if not isinstance(bias, dict):
            raise TypeError(
                f"`logit_bias` must be a dict of token id -> float. Received: {bias!r}"
            )
        limit = np.iinfo(np.int32).max if vocabulary_size is None else vocabulary_size
        self.bias = {
            checks.token_id(k, "logit_bias", limit): checks.finite_number(
                v, f"logit_bias[{k!r}]"
            )
            for k, v in bias.items()
        }

    def __call__(self, logits, context):
        vocab = ops.shape(logits)[-1]
        dense = np.zeros((vocab,), np.float32)
        for token, value in self.bias.items():
            if not 0 <= token < vocab:
                raise ValueError(f"`logit_bias` token id {token} is outside [0, {vocab}).")
            dense[token] = value
        return logits + ops.convert_to_tensor(dense)[None, :]

    def cache_key(self):
        return ("bias", tuple(sorted(self.bias.items())))


class VocabularyLimit(LogitsProcessor):
    """Forbid ids at or past `size`: embedding rows a checkpoint pads the vocabulary with
    (beyond the tokenizer's last id) have no text."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, logits, context):
        ids = ops.arange(ops.shape(logits)[-1], dtype="int32")[None, :]
        return ops.where(ids < self.size, logits, _NEG)

    def cache_key(self):
        return ("vocabulary_limit", self.size)


def build_processors(
    min_p=None,
    repetition_penalty=None,
    presence_penalty=None,
    frequency_penalty=None,
    logit_bias=None,
    extra=None,
    vocabulary_size: int | None = None,
) -> list:
    """The processors named by `generate`'s keyword arguments, in a fixed order; every value
    is checked here (finite, in range, ids within `vocabulary_size`)."""
    processors = []
    if repetition_penalty is not None:
        processors.append(RepetitionPenalty(repetition_penalty))
    if presence_penalty:
        processors.append(PresencePenalty(presence_penalty))
    if frequency_penalty:
        processors.append(FrequencyPenalty(frequency_penalty))
    if logit_bias is not None:
        processors.append(LogitBias(logit_bias, vocabulary_size))
    if extra is not None and not isinstance(extra, (list, tuple)):
        raise TypeError(f"`logits_processors` must be a list of callables. Received: {extra!r}")
    for processor in extra or []:
        if not callable(processor):
            raise TypeError(
                f"`logits_processors` items must be callable. Received: {processor!r}"
            )
        processors.append(processor)
    if min_p is not None:
        processors.append(MinPProcessor(min_p))
    return processors


def apply_processors(processors, logits, context):
    for processor in processors:
        logits = processor(logits, context)
    return logits


def needs_history(processors) -> bool:
    return any(getattr(p, "needs_history", False) for p in processors)


def update_history(context, token, active, vocab):
    """Count `token` for rows that are still `active`."""
    hit = ops.one_hot(token, vocab, dtype="int32") * ops.cast(active, "int32")[:, None]
    return {"seen": ops.logical_or(context["seen"], hit > 0), "counts": context["counts"] + hit}


def initial_history(prompts, vocab: int):
    seen = np.zeros((len(prompts), vocab), bool)
    for row, prompt in enumerate(prompts):
        seen[row, np.asarray(prompt)[np.asarray(prompt) < vocab]] = True
    return {"seen": seen, "counts": np.zeros((len(prompts), vocab), np.int32)}


def cache_key(processors) -> tuple:
    return tuple(p.cache_key() if hasattr(p, "cache_key") else ("fn", id(p)) for p in processors)
