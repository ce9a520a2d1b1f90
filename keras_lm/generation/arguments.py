"""Checks of what `CausalLM.generate` and `score` receive: token dicts, id arrays, stop ids
and the per-row token budget. Each failure names the argument and the value received.

Example:
>>> new_token_budget(np.array([3, 5]), max_length=8, max_new_tokens=None)
array([5, 3], dtype=int32)
"""

import numpy as np
from keras import ops

from keras_lm import checks


def token_dict(inputs: dict, vocabulary_size: int) -> dict:
    """`{"token_ids", "padding_mask"}` as 2-D int32 / bool numpy arrays (a 1-D row becomes a
    batch of one; a missing mask means every token is real), ids checked against the
    vocabulary."""
    if "token_ids" not in inputs:
        raise ValueError("A dict `inputs` needs a `token_ids` entry (and usually `padding_mask`).")
    token_ids = np.asarray(ops.convert_to_numpy(inputs["token_ids"]))
    if token_ids.ndim == 1:
        token_ids = token_ids[None]
    if token_ids.ndim != 2 or token_ids.dtype.kind not in "iu":
        raise ValueError(
            f"`token_ids` must be a 2-D integer array. Received shape {token_ids.shape}, "
            f"dtype {token_ids.dtype}"
        )
    mask = inputs.get("padding_mask")
    if mask is None:
        mask = np.ones_like(token_ids, bool)
    else:
        mask = np.asarray(ops.convert_to_numpy(mask))
        if mask.size != token_ids.size:
            raise ValueError(
                f"`padding_mask` must have the shape of `token_ids` {token_ids.shape}. "
                f"Received shape {mask.shape}"
            )
        mask = mask.reshape(token_ids.shape).astype(bool)
    checks.token_id_array(token_ids[mask], "token_ids", vocabulary_size)
    return {"token_ids": token_ids.astype(np.int32), "padding_mask": mask}


def concrete_ids(ids, name: str, vocabulary_size: int) -> None:
    """Ids given as values (not traced inside a compiled function) are 2-D integers within
    the vocabulary."""
    try:
        array = np.asarray(ops.convert_to_numpy(ids))
    except Exception:  # a symbolic tensor: checked when it has values
        return
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise ValueError(
            f"`{name}` must be a 2-D integer array [batch, tokens]. Received shape "
            f"{array.shape}, dtype {array.dtype}"
        )
    checks.token_id_array(array, name, vocabulary_size)


def matching_vocabularies(backbone, preprocessor) -> None:
    """The tokenizer may have fewer ids than the model (checkpoints pad the embedding to a
    round size; those ids are never generated), never more."""
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is None:
        return
    limit = tokenizer.id_limit()
    if limit > backbone.vocabulary_size:
        raise ValueError(
            f"The tokenizer has {tokenizer.vocabulary_size()} tokens (ids up to {limit - 1}) "
            f"but the model's vocabulary has only {backbone.vocabulary_size}: ids past "
            f"{backbone.vocabulary_size - 1} would index outside the embedding. Use the "
            "tokenizer that belongs to this model."
        )


def stop_ids(stop_token_ids, tokenizer, vocabulary_size: int) -> tuple[int, ...]:
    """`generate`'s `stop_token_ids` ("auto": the tokenizer's own, None: none, or ids) as a
    tuple of checked ids."""
    if stop_token_ids is None:
        return ()
    if isinstance(stop_token_ids, str):
        if stop_token_ids != "auto":
            raise ValueError(
                '`stop_token_ids` must be "auto", None, or a sequence of ints. '
                f"Received: {stop_token_ids!r}"
            )
        return () if tokenizer is None else tokenizer.generation_stop_ids()
    if isinstance(stop_token_ids, (int, np.integer)) and not isinstance(stop_token_ids, bool):
        stop_token_ids = (stop_token_ids,)
    if not isinstance(stop_token_ids, (list, tuple, np.ndarray)):
        raise TypeError(
            '`stop_token_ids` must be "auto", None, or a sequence of ints. '
            f"Received: {stop_token_ids!r}"
        )
    return tuple(
        checks.token_id(i, "stop_token_ids", vocabulary_size) for i in np.ravel(stop_token_ids)
    )


def new_token_budget(lengths: np.ndarray, max_length: int | None,
                     max_new_tokens: int | None, backbone=None) -> np.ndarray:
    """Per row, how many tokens it may add (int32); with `backbone`, checks that no row
    would run past a model with learned positions."""
    limit = np.full(len(lengths), np.iinfo(np.int32).max // 2)
    if max_length is not None:
        limit = np.minimum(limit, max_length - lengths)
    if max_new_tokens is not None:
        limit = np.minimum(limit, max_new_tokens)
    if backbone is not None and getattr(backbone, "learned_positions", False):
        longest = int(np.max(lengths + limit))
        if longest > backbone.max_sequence_length:
            raise ValueError(
                f"Generation would reach {longest} tokens but {type(backbone).__name__} "
                f"has only {backbone.max_sequence_length} positions. Lower `max_length`."
            )
    return limit.astype(np.int32)
