"""A bounded store of keys and values of token sequences already run, so a prompt that starts
the same way (a shared system prompt, the earlier turns of a chat) skips most of its prefill.

A token's key and value depend only on the tokens before it, so the first `n` slots of a stored
sequence serve any prompt whose first `n` tokens are the same. Entries are evicted least
recently used first once the store holds more than `max_bytes`.

Example:
>>> store = PrefixCache(max_bytes=64 << 20)
>>> store.add(np.array([1, 2, 3]), blocks)  # doctest: +SKIP
>>> store.match(np.array([1, 2, 9, 9]))  # doctest: +SKIP
(2, blocks)
"""

from collections import OrderedDict

import keras
import numpy as np


def block_bytes(blocks) -> int:
    """Bytes held by one entry's per-layer `(keys, values)` tensors."""
    total = 0
    for layer in blocks:
        for tensor in layer:
            dtype = keras.backend.standardize_dtype(tensor.dtype)
            total += int(np.prod(tensor.shape)) * (int("".join(filter(str.isdigit, dtype))) // 8)
    return total


class PrefixCache:
    """Token sequences and their per-layer KV blocks (`[kv_heads, length, head_dim]`)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict = OrderedDict()  # id -> (tokens, blocks, bytes)
        self._next_id = 0
        self.bytes = 0
        self.hits = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, prompt: np.ndarray, limit: int) -> tuple[int, list | None]:
        """`(n, blocks)`: the longest start (at most `limit` tokens) that `prompt` shares with a
        stored sequence, whose first `n` slots of `blocks` hold its keys and values."""
        best, best_id = 0, None
        prompt = np.asarray(prompt)
        for entry_id, (tokens, _, _) in self._entries.items():
            size = min(len(tokens), len(prompt), limit)
            if size <= best:
                continue
            differ = np.flatnonzero(tokens[:size] != prompt[:size])
            shared = int(differ[0]) if len(differ) else size
            if shared > best:
                best, best_id = shared, entry_id
        if best_id is None:
            return 0, None
        self._entries.move_to_end(best_id)
        self.hits += 1
        self.reused_tokens += best
        return best, self._entries[best_id][1]

    def add(self, tokens: np.ndarray, blocks: list) -> None:
        """Store `blocks` for `tokens`; entries that `tokens` extends are dropped (it serves
        every prompt they served)."""
        tokens = np.asarray(tokens, np.int32)
        for entry_id, (stored, _, _) in list(self._entries.items()):
            if len(stored) >= len(tokens) and np.array_equal(stored[: len(tokens)], tokens):
                self._entries.move_to_end(entry_id)
                return  # already covered
            if len(stored) < len(tokens) and np.array_equal(tokens[: len(stored)], stored):
                self._drop(entry_id)
        size = block_bytes(blocks)
        if size > self.max_bytes:
            return
        self._entries[self._next_id] = (tokens, blocks, size)
        self._next_id += 1
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, entry_id) -> None:
        self.bytes -= self._entries.pop(entry_id)[2]
