"""The KV cache: one layout, made, grown, reordered and reshaped only here.

A model's cache is a list with one `LayerCache(keys, values)` per decoder layer. Each tensor
is `[batch * kv_heads, slots, head_dim]`: row `b * kv_heads + h` holds head `h` of sequence
`b`, slot `t` the key (value) of the token at slot `t` of the left-padded block. Attention
writes new slots with `keras_lm.backend.ops.write_cache` (in place on torch).

The decode loop runs a single row (batch 1 of a one-KV-head model) as `[slots, head_dim]`:
on JAX, XLA's CPU backend otherwise writes each such cache twice and copies it four times
per step (it drops the unit axis of the attention product and fuses that reshape into the
write).

Example:
>>> caches = empty(num_layers=2, rows=4, capacity=64, head_dim=8, dtype="float32")
>>> capacity(grow(caches, 128))
128
"""

from typing import NamedTuple

from keras_lm.backend import ops


class LayerCache(NamedTuple):
    """One layer's keys and values, `[batch * kv_heads, slots, head_dim]` each."""

    keys: object
    values: object


def empty(num_layers: int, rows: int, capacity: int, head_dim: int, dtype) -> list:
    """Zeroed caches for `rows` = batch * kv_heads cache rows of `capacity` slots."""
    shape = (rows, capacity, head_dim)
    return [LayerCache(ops.zeros(shape, dtype), ops.zeros(shape, dtype))
            for _ in range(num_layers)]


def capacity(caches) -> int:
    """The number of slots (the slot axis is second to last in both layouts)."""
    return int(ops.shape(caches[0][0])[-2])


def grow(caches, new_capacity: int) -> list:
    """The caches with empty slots appended up to `new_capacity`."""
    grown = []
    for keys, values in caches:
        pad = [[0, 0], [0, new_capacity - ops.shape(keys)[1]], [0, 0]]
        grown.append(LayerCache(ops.pad(keys, pad), ops.pad(values, pad)))
    return grown


def take_rows(caches, sequences, kv_heads: int) -> list:
    """The caches of sequences `sequences` (`[new_batch]` ints, repeats allowed), each
    sequence owning `kv_heads` consecutive cache rows (beam reordering, candidate fan-out)."""
    heads = ops.arange(kv_heads, dtype="int32")[None, :]
    index = ops.reshape(ops.cast(sequences, "int32")[:, None] * kv_heads + heads, (-1,))
    return [LayerCache(ops.take(keys, index, axis=0), ops.take(values, index, axis=0))
            for keys, values in caches]


def squeeze_single_row(caches):
    """`(caches, squeezed)`: a one-row cache as `[slots, head_dim]` for the decode loop;
    any other cache unchanged. Decided on the static shape (TF may leave it unknown)."""
    if caches[0][0].shape[0] != 1:
        return caches, False
    return [LayerCache(keys[0], values[0]) for keys, values in caches], True


def restore_single_row(caches) -> list:
    """Undo `squeeze_single_row`."""
    return [LayerCache(keys[None], values[None]) for keys, values in caches]


def flatten(caches) -> list:
    """`[keys0, values0, keys1, ...]`, for functions that take tensors one by one."""
    return [tensor for layer in caches for tensor in layer]


def unflatten(tensors) -> list:
    """Undo `flatten`."""
    return [LayerCache(keys, values)
            for keys, values in zip(tensors[0::2], tensors[1::2], strict=True)]
