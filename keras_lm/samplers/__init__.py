"""Sampling strategies for `CausalLM.generate`, by object or by name."""

import keras

from keras_lm.samplers.samplers import (
    BeamSampler,
    ContrastiveSampler,
    GreedySampler,
    RandomSampler,
    Sampler,
    TopKSampler,
    TopPSampler,
)

ALIASES = {
    "greedy": GreedySampler,
    "random": RandomSampler,
    "top_k": TopKSampler,
    "top_p": TopPSampler,
    "beam": BeamSampler,
    "contrastive": ContrastiveSampler,
}


def serialize(sampler: Sampler) -> dict:
    """Sampler → a JSON-able dict. Example: `serialize(TopKSampler(k=3))`."""
    return keras.saving.serialize_keras_object(sampler)


def deserialize(config, custom_objects=None) -> Sampler:
    """Dict from `serialize` (or a name) → sampler."""
    if isinstance(config, str):
        return get(config)
    if isinstance(config, dict) and config.get("class_name", "").lower() in ALIASES:
        return ALIASES[config["class_name"].lower()](**config.get("config", {}))
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)


def get(identifier) -> Sampler:
    """A sampler from a name ("greedy", "random", "top_k", "top_p", "beam", "contrastive"),
    a config dict, or a `Sampler` instance.

    Example:
    >>> get("top_k").k
    5
    """
    if isinstance(identifier, Sampler):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        if identifier not in ALIASES:
            raise ValueError(
                f"Unknown sampler name {identifier!r}. Expected one of {sorted(ALIASES)} "
                "or a `keras_lm.samplers.Sampler` instance."
            )
        return ALIASES[identifier]()
    raise TypeError(
        "`sampler` must be a sampler name or a `keras_lm.samplers.Sampler` instance. "
        f"Received: {type(identifier).__name__}"
    )


__all__ = [
    "BeamSampler",
    "ContrastiveSampler",
    "GreedySampler",
    "RandomSampler",
    "Sampler",
    "TopKSampler",
    "TopPSampler",
    "deserialize",
    "get",
    "serialize",
]
