"""Samplers: pure choices of the next token from a distribution. The engine owns the loop."""

import keras

from keras_lm import checks
from keras_lm.backend import ops


@keras.saving.register_keras_serializable(package="keras_lm")
class Sampler:
    """Base sampler. Custom samplers override `get_next_token(probabilities)`.

    `probabilities` is `[batch, vocabulary]` float32 (already divided by `temperature` before
    the softmax); return `[batch]` integer token ids. Use `self.seed_generator` for randomness.

    Example:
    >>> class ArgmaxSampler(keras_lm.samplers.Sampler):
    ...     def get_next_token(self, probabilities):
    ...         return keras.ops.argmax(probabilities, axis=-1)
    """

    strategy = "token"

    def __init__(self, temperature: float = 1.0, seed=None):
        self.temperature = checks.finite_number(temperature, "temperature", low=0, low_open=True)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def variables(self) -> list:
        return [self.seed_generator.state] if self.seed_generator is not None else []

    def check_vocabulary(self, vocabulary_size: int) -> None:
        """Raise a ValueError when this sampler cannot run over `vocabulary_size` tokens."""

    def get_next_token(self, probabilities):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `get_next_token(probabilities)`."
        )

    def next_token_from_logits(self, logits):
        """Engine entry point: float32 logits `[batch, vocab]` → token ids `[batch]`."""
        probabilities = ops.softmax(logits / self.temperature, axis=-1)
        return ops.cast(self.get_next_token(probabilities), "int32")

    def get_config(self) -> dict:
        config = {"temperature": self.temperature}
        if self.seed is not None:
            config["seed"] = self.seed
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_lm")
class GreedySampler(Sampler):
    """Always picks the most probable token.

    Example:
    >>> lm.compile(sampler=keras_lm.samplers.GreedySampler())  # doctest: +SKIP
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def next_token_from_logits(self, logits):
        return ops.first_argmax(logits)

    def get_next_token(self, probabilities):
        return ops.argmax(probabilities, axis=-1)


@keras.saving.register_keras_serializable(package="keras_lm")
class RandomSampler(Sampler):
    """Samples from the whole distribution.

    Example:
    >>> lm.compile(sampler=keras_lm.samplers.RandomSampler(seed=1))  # doctest: +SKIP
    """

    def get_next_token(self, probabilities):
        return _categorical(probabilities, self.seed_generator)


@keras.saving.register_keras_serializable(package="keras_lm")
class TopKSampler(Sampler):
    """Samples among the `k` most probable tokens.

    Example:
    >>> lm.compile(sampler=keras_lm.samplers.TopKSampler(k=5, temperature=0.7))  # doctest: +SKIP
    """

    def __init__(self, k: int = 5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.k = checks.positive_int(k, "k")

    def get_next_token(self, probabilities):
        k = min(self.k, ops.shape(probabilities)[-1])
        top_probabilities, top_indices = ops.top_k(probabilities, k=k, sorted=False)
        choice = _categorical(top_probabilities, self.seed_generator)
        return ops.take_along_axis(top_indices, choice[:, None], axis=-1)[:, 0]

    def get_config(self):
        return {**super().get_config(), "k": self.k}


@keras.saving.register_keras_serializable(package="keras_lm")
class TopPSampler(Sampler):
    """Nucleus sampling: the smallest set of tokens whose mass reaches `p` (among the top `k`).

    Example:
    >>> lm.compile(sampler=keras_lm.samplers.TopPSampler(p=0.9))  # doctest: +SKIP
    """

    def __init__(self, p: float = 0.1, k: int | None = None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.p = checks.finite_number(p, "p", low=0, low_open=True, high=1)
        self.k = checks.positive_int(k, "k", allow_none=True)

    def get_next_token(self, probabilities):
        vocab = ops.shape(probabilities)[-1]
        k = vocab if self.k is None else min(self.k, vocab)
        sorted_probabilities, sorted_indices = ops.top_k(probabilities, k=k, sorted=True)
        mass_before = ops.cumsum(sorted_probabilities, axis=-1) - sorted_probabilities
        keep = mass_before < self.p
        kept = ops.where(keep, sorted_probabilities, ops.zeros_like(sorted_probabilities))
        choice = _categorical(kept, self.seed_generator)
        return ops.take_along_axis(sorted_indices, choice[:, None], axis=-1)[:, 0]

    def get_config(self):
        return {**super().get_config(), "p": self.p, "k": self.k}


@keras.saving.register_keras_serializable(package="keras_lm")
class BeamSampler(Sampler):
    """Beam search over `num_beams` hypotheses; the engine keeps the beams.

    With `return_all_beams=True`, `generate` returns every beam per prompt, best first.

    Example:
    >>> lm.compile(sampler=keras_lm.samplers.BeamSampler(num_beams=2))  # doctest: +SKIP
    """

    strategy = "beam"

    def __init__(self, num_beams: int = 5, return_all_beams: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_beams = checks.positive_int(num_beams, "num_beams")
        self.return_all_beams = bool(return_all_beams)

    def check_vocabulary(self, vocabulary_size: int) -> None:
        if self.num_beams > vocabulary_size:
            raise ValueError(
                f"`num_beams`={self.num_beams} exceeds the vocabulary ({vocabulary_size} tokens)."
            )

    def get_config(self):
        return {
            **super().get_config(),
            "num_beams": self.num_beams,
            "return_all_beams": self.return_all_beams,
        }


@keras.saving.register_keras_serializable(package="keras_lm")
class ContrastiveSampler(Sampler):
    """Contrastive search: among the top `k` tokens, trade probability against similarity
    (weight `alpha`) of the candidate's hidden state to all previous ones.

    Example:
    >>> lm.compile(sampler=keras_lm.samplers.ContrastiveSampler(k=4, alpha=0.6))  # doctest: +SKIP
    """

    strategy = "contrastive"

    def __init__(self, k: int = 5, alpha: float = 0.6, **kwargs):
        super().__init__(**kwargs)
        self.k = checks.positive_int(k, "k")
        self.alpha = checks.finite_number(alpha, "alpha", low=0, high=1)

    def check_vocabulary(self, vocabulary_size: int) -> None:
        if self.k > vocabulary_size:
            raise ValueError(
                f"ContrastiveSampler `k`={self.k} exceeds the vocabulary ({vocabulary_size} "
                "tokens): it compares the top `k` candidates."
            )

    def get_config(self):
        return {**super().get_config(), "k": self.k, "alpha": self.alpha}


def _categorical(probabilities, seed_generator):
    """Draw one index per row from unnormalized non-negative weights."""
    log_weights = ops.log(ops.maximum(ops.cast(probabilities, "float32"), 1e-30))
    draws = keras.random.categorical(log_weights, 1, seed=seed_generator, dtype="int32")
    return draws[:, 0]
