"""Continuous batching: requests join a running decode batch between chunks and leave when
they finish, each with its own sampling settings, in the engine's compiled decode loop.

The batch has up to `slots` rows. All rows write the same cache slot each step (as
in `GenerationEngine.iterate`), so a joining request is prefilled on its own and its keys and
values are placed to end right before that slot; its own left padding and positions keep its
numbers those of running it alone. When a prompt is longer than the slots behind the write
position, every row shifts right; when the cache runs out of room, rows shift left past the
padding no running row needs. A prompt that starts like an earlier sequence reuses its keys
and values from the `PrefixCache`.

Example:
>>> batcher = ContinuousBatcher(lm, slots=8)  # doctest: +SKIP
>>> request = batcher.add(BatchRequest(prompt_ids, max_new=32, settings=RowSettings()))
>>> while batcher.running():
...     for request, output in batcher.step().items(): ...
"""

import functools
from dataclasses import dataclass, field, replace

import keras
import numpy as np

from keras_lm.backend import ops
from keras_lm.generation import cache as kv_cache
from keras_lm.generation.buckets import cache_bucket, next_power_of_two, prompt_bucket
from keras_lm.generation.compile import to_numpy
from keras_lm.generation.engine import GenerationRequest, chunk_outputs
from keras_lm.generation.prefix_cache import PrefixCache
from keras_lm.generation.processors import VocabularyLimit
from keras_lm.generation.row_sampling import RowModes, RowSampler, RowSettings
from keras_lm.samplers import GreedySampler

TOP_LOG_PROBS = 20  # the most alternatives a request may ask for (OpenAI's limit)


@dataclass(eq=False)  # a handle: compared and hashed by identity
class BatchRequest:
    """One sequence to generate: prompt ids, a budget of new tokens, sampling settings."""

    prompt_ids: np.ndarray
    max_new: int
    settings: RowSettings = field(default_factory=RowSettings)
    top_log_probs: int = 0  # alternatives per token to report (0..TOP_LOG_PROBS)
    grammar: object = None  # an llguidance matcher: only the tokens it allows (see grammar.py)


@dataclass
class RowOutput:
    """What a slot produced in one chunk."""

    tokens: list
    log_probs: list
    top: list  # per token `(ids, log_probs)` of the best alternatives; empty unless asked
    finished: bool  # the row met a stop token or its budget


class ContinuousBatcher:
    """Runs up to `slots` sequences of one `CausalLM` at once (see the module docstring).

    The decode state has as many rows as the load needs (1, 2, 4, ... up to `slots`): one
    request decodes at batch-1 speed. `add` returns the request itself as its handle, and
    `step` reports by request, since a request's row may move when the rows are compacted.
    """

    def __init__(self, lm, slots: int = 8, chunk_size: int = 8,
                 prefix_cache_bytes: int = 256 << 20, stop_token_ids=None):
        if slots < 1 or chunk_size < 1:
            raise ValueError("`slots` and `chunk_size` must be at least 1.")
        self.lm = lm
        self.engine = lm._engine
        self.backbone = lm.backbone
        self.slots = slots
        self.chunk_size = chunk_size
        self.vocabulary_size = self.backbone.vocabulary_size
        tokenizer = getattr(lm.preprocessor, "tokenizer", None)
        if stop_token_ids is None:
            stop_token_ids = () if tokenizer is None else tokenizer.generation_stop_ids()
        self.stop_ids = np.array(list(stop_token_ids) or [-1], np.int32)
        self.base_processors = []
        if tokenizer is not None and tokenizer.id_limit() < self.vocabulary_size:
            self.base_processors.append(VocabularyLimit(tokenizer.id_limit()))
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes else None
        self._prefill_sampler = GreedySampler()
        self._samplers = {}
        self.width = 0  # rows of the decode state
        self.requests: list = [None] * slots  # per row; rows past `width` stay None
        self.generated: list = [[] for _ in range(slots)]
        self.left_pad = np.zeros(slots, np.int32)
        self.positions = np.zeros(slots, np.int32)
        self.count = np.zeros(slots, np.int32)
        self.done = np.ones(slots, bool)
        self.max_new = np.zeros(slots, np.int32)
        self.counters = np.zeros(slots, np.int32)
        self.index = 0
        self.capacity = 0
        self.caches = None
        self.logits = None
        self.history = None
        self.prefilled_tokens = 0  # prompt tokens run through the model (not reused)
        self._place = _placer()

    # -- requests ------------------------------------------------------------------------------
    def running(self) -> list:
        """The requests that hold a row (finished ones too, until `release`)."""
        return [r for r in self.requests if r is not None]

    def free_slots(self) -> int:
        return self.requests.count(None)

    def add(self, request: BatchRequest) -> BatchRequest:
        """Prefill `request` and give it a row; returns it (the handle for `step`, `stop` and
        `release`). Raises when every slot is busy."""
        prompt = np.asarray(request.prompt_ids, np.int32)
        if prompt.ndim != 1 or len(prompt) == 0:
            raise ValueError("A request needs a 1-D prompt of at least one token id.")
        if not 0 <= request.top_log_probs <= TOP_LOG_PROBS:
            raise ValueError(f"`top_log_probs` must be in [0, {TOP_LOG_PROBS}].")
        if (prompt < 0).any() or (prompt >= self.vocabulary_size).any():
            raise ValueError(f"Prompt token ids must be in [0, {self.vocabulary_size}).")
        if not self.free_slots():
            raise RuntimeError("Every slot is busy; wait for a request to finish.")
        if any(r is request for r in self.requests):
            raise ValueError("This request is already running.")
        logits, block, block_start, block_end = self._prefill(prompt)
        if not self.running():
            self._reset(block_end)
        else:
            if None not in self.requests[:self.width]:  # every row busy: double the rows
                self._regroup(list(range(self.width)), min(self.slots, 2 * self.width))
            if self.index < block_end:  # the new prompt needs more slots behind the write point
                self._reslot(self.index - block_end, self.capacity)
        block_width = kv_cache.capacity(block)
        self._fit(max(self.index + block_width - block_end, self.index + self.chunk_size),
                  keep=block_end)
        row = self.requests.index(None)
        start = self.index - block_end
        self.caches, self.logits = self._place(self.caches, self.logits, block, logits,
                                               row * self._kv_heads, start, row)
        self.requests[row] = request
        self.generated[row] = []
        self.left_pad[row] = start + block_start
        self.positions[row] = len(prompt)
        self.count[row] = 0
        self.counters[row] = 0
        self.max_new[row] = request.max_new
        self.done[row] = request.max_new <= 0
        if self.history is not None:
            self._clear_history(row)
        return request

    def release(self, request: BatchRequest) -> None:
        """Free `request`'s row; its prompt and generated tokens go to the prefix cache."""
        row = self._row(request)
        if row is None:
            return
        if self.prefix_cache is not None:
            tokens = np.concatenate([request.prompt_ids, self.generated[row]]).astype(np.int32)
            rows = slice(row * self._kv_heads, (row + 1) * self._kv_heads)
            used = slice(int(self.left_pad[row]), int(self.left_pad[row]) + len(tokens))
            blocks = [(keys[rows, used], values[rows, used]) for keys, values in self.caches]
            self.prefix_cache.add(tokens, [_copy(b) for b in blocks])
        self._empty(row)
        if not self.running():  # idle: give the memory back
            self.caches = self.logits = self.history = None
            self.index = self.capacity = self.width = 0

    def stop(self, request: BatchRequest) -> None:
        """Stop `request` at the next chunk boundary (it keeps its row until `release`)."""
        row = self._row(request)
        if row is not None:
            self.done[row] = True

    # -- decoding ------------------------------------------------------------------------------
    def step(self) -> dict:
        """Run one chunk; `{request: RowOutput}` for every running request."""
        active = [i for i in range(self.width) if self.requests[i] is not None]
        if not active:
            return {}
        if self.width > 1 and len(active) <= self.width // 4:  # mostly empty: fewer rows
            self._regroup(active, next_power_of_two(len(active)))
            active = list(range(len(active)))
        width = self.width
        settings = [r.settings if r is not None else None for r in self.requests[:width]]
        modes = RowModes.of(settings)
        masks = self._grammar_masks(active)
        chunk_size = self.chunk_size
        if masks:  # the mask changes with every token: one step per chunk, as a logit bias
            modes, chunk_size = replace(modes, bias=True), 1
        if any(not self.generated[i] and not self.done[i] for i in active):
            chunk_size = 1  # a request that just joined gets its first token right away
        top = TOP_LOG_PROBS if any(self.requests[i].top_log_probs for i in active) else 0
        sampler = self._sampler(modes, width)
        processors = self.base_processors + sampler.processors()
        if modes.penalties and self.history is None:
            zeros = np.zeros((width, self.vocabulary_size), np.int32)
            self.history = {"seen": ops.convert_to_tensor(zeros > 0),
                            "counts": ops.convert_to_tensor(zeros)}
        elif not modes.penalties:
            self.history = None
        self._fit(self.index + chunk_size)
        self.positions[self.done] = 0  # finished and empty rows: any in-range position
        state = {
            "logits": self.logits,
            "caches": self.caches,
            "index": ops.convert_to_tensor(self.index, "int32"),
            "positions": ops.convert_to_tensor(self.positions[:width], "int32"),
            "count": ops.convert_to_tensor(self.count[:width], "int32"),
            "done": ops.convert_to_tensor(self.done[:width]),
        }
        if self.history is not None:
            state["history"] = self.history
        builder = functools.partial(self.engine._build_chunk, top_log_probs=top)
        chunk = self.engine.compiled(f"rows-{top}", sampler, builder, processors,
                                     donate=(1, 5))
        values = sampler.values_for(settings, self.counters[:width])
        for row, allowed in masks.items():
            values[-1][row] = np.where(allowed, values[-1][row], -1e9)
        values = [ops.convert_to_tensor(v) for v in values]
        state, values, *outs = chunk(
            values, state, ops.convert_to_tensor(self.stop_ids),
            ops.convert_to_tensor(self.max_new[:width]),
            ops.convert_to_tensor(self.left_pad[:width]),
            chunk_outputs(width, chunk_size, top),
        )
        outs = [to_numpy(o) for o in outs]
        self.logits, self.caches = state["logits"], state["caches"]
        self.history = state.get("history")
        self.index = int(to_numpy(state["index"]))
        self.positions[:width] = to_numpy(state["positions"])
        self.count[:width] = to_numpy(state["count"])
        self.done[:width] = to_numpy(state["done"])
        if sampler.modes.sample or sampler.modes.candidates:
            self.counters[:width] = to_numpy(values[RowSampler.FIELDS.index("counter")])
        return {self.requests[row]: self._output(row, outs) for row in active}

    def _output(self, row: int, outs) -> RowOutput:
        request = self.requests[row]
        keep = outs[0][row] >= 0
        tokens = outs[0][row][keep].tolist()
        self.generated[row].extend(tokens)
        grammar = request.grammar
        if grammar is not None and tokens and not grammar.is_stopped():
            if not grammar.consume_tokens(tokens):
                self.done[row] = True  # cannot happen under the mask; never loop on it
        top_rows = []
        if request.top_log_probs:
            n = request.top_log_probs
            top_rows = [(outs[3][row, i, :n].tolist(), outs[2][row, i, :n].tolist())
                        for i in np.flatnonzero(keep)]
        return RowOutput(tokens, outs[1][row][keep].tolist(), top_rows, bool(self.done[row]))

    # -- internals -----------------------------------------------------------------------------
    def _row(self, request) -> int | None:
        for row, held in enumerate(self.requests):
            if held is request:
                return row
        return None

    def _empty(self, row: int) -> None:
        self.requests[row] = None
        self.generated[row] = []
        self.done[row] = True
        self.left_pad[row] = self.positions[row] = self.max_new[row] = 0
        self.count[row] = self.counters[row] = 0

    def _regroup(self, rows: list, width: int) -> None:
        """Rebuild the state with `width` rows: old rows `rows` become rows 0, 1, ...; the
        rest start empty."""
        index = list(rows) + [0] * (width - len(rows))  # an empty row's data is never read
        if self.caches is not None:
            self.caches = kv_cache.take_rows(self.caches, np.array(index, np.int32),
                                             self._kv_heads)
        if self.logits is not None:
            self.logits = ops.take(self.logits, np.array(index, np.int32), axis=0)
        if self.history is not None:
            self.history = {k: ops.take(v, np.array(index, np.int32), axis=0)
                            for k, v in self.history.items()}
        old = (list(self.requests), list(self.generated), self.left_pad.copy(),
               self.positions.copy(), self.count.copy(), self.done.copy(),
               self.max_new.copy(), self.counters.copy())
        for row in range(self.slots):
            self._empty(row)
        for new, source in enumerate(rows):
            self.requests[new], self.generated[new] = old[0][source], old[1][source]
            for array, before in zip((self.left_pad, self.positions, self.count, self.done,
                                      self.max_new, self.counters), old[2:], strict=True):
                array[new] = before[source]
        self.width = width

    def _grammar_masks(self, active) -> dict:
        """`{row: allowed tokens}` for running rows that follow a grammar."""
        from keras_lm.generation.grammar import allowed_tokens

        masks = {}
        for row in active:
            grammar = self.requests[row].grammar
            if grammar is None or self.done[row]:
                continue
            allowed = allowed_tokens(grammar, self.vocabulary_size)
            if grammar.is_error() or not allowed.any():  # nothing can follow: end the row
                self.done[row] = True
            else:
                masks[row] = allowed
        return masks

    @property
    def _kv_heads(self) -> int:
        return self.backbone.num_key_value_heads

    def _sampler(self, modes: RowModes, width: int) -> RowSampler:
        if (modes, width) not in self._samplers:
            self._samplers[modes, width] = RowSampler(width, self.vocabulary_size, modes)
        return self._samplers[modes, width]

    def _prefill(self, prompt):
        """`(logits [1, vocab], caches, first slot, end slot)` of `prompt` run on its own; a
        start shared with the prefix cache is reused, its last `prompt_bucket` tokens rerun."""
        length = len(prompt)
        reused, blocks = (0, None)
        if self.prefix_cache is not None:
            reused, blocks = self.prefix_cache.match(prompt, limit=length - 1)
        if reused:
            width = prompt_bucket(length - reused)
            start = length - width
            if start > 0:
                capacity = cache_bucket(length)
                caches = [
                    kv_cache.LayerCache(*(_fill(block[:, :start], capacity) for block in layer))
                    for layer in blocks
                ]
                logits, caches = self.engine.run_extend(
                    self._prefill_sampler, prompt[None, start:],
                    np.arange(start, length, dtype=np.int32)[None], start, caches)
                self.prefilled_tokens += width
                return logits, caches, 0, length
        token_ids, positions, left_pad, _ = self.engine.prepare(
            GenerationRequest(prompts=[prompt], max_new=np.array([1]),
                              pad_token_id=self.lm._pad_id()))
        width = token_ids.shape[1]
        logits, _, caches = self.engine.run_prefill(
            self._prefill_sampler, token_ids, positions, left_pad, width)
        self.prefilled_tokens += length
        return logits, caches, int(left_pad[0]), width

    def _reset(self, index: int) -> None:
        """A fresh one-row state whose write position is `index`."""
        self.index, self.capacity, self.width = index, 0, 1
        self.caches = self.history = None
        self.logits = ops.zeros((1, self.vocabulary_size), "float32")

    def _fit(self, needed: int, keep: int = 0) -> None:
        """Make room for `needed` slots: drop padding no running row needs (keeping the write
        position at `keep` or later), then resize."""
        if self.caches is None:
            self.capacity = cache_bucket(needed)
            self.caches = self.backbone.empty_cache(self.width, self.capacity)
            return
        if needed <= self.capacity:
            return
        running = [i for i, r in enumerate(self.requests) if r is not None]
        shift = int(self.left_pad[running].min()) if running else 0
        shift = max(0, min(shift, self.index - keep))
        self._reslot(shift, cache_bucket(needed - shift))

    def _reslot(self, shift: int, capacity: int) -> None:
        """Move every row's slots `shift` to the left (right when negative) into a cache of
        `capacity` slots."""
        running = [i for i, r in enumerate(self.requests) if r is not None]
        if shift < 0:
            capacity = max(capacity, cache_bucket(self.index - shift + self.chunk_size))
        self.caches = [kv_cache.LayerCache(*(_moved(t, shift, capacity) for t in layer))
                       for layer in self.caches]
        self.capacity = capacity
        self.index -= shift
        self.left_pad[running] -= shift

    def _clear_history(self, row: int) -> None:
        fresh = ops.convert_to_tensor(np.arange(self.width) == row)[:, None]
        self.history = {k: ops.where(fresh, ops.zeros_like(v), v) for k, v in self.history.items()}


def _moved(tensor, shift: int, capacity: int):
    """`tensor[:, shift:]` (zeros in front when `shift` < 0), cut or zero-padded to `capacity`
    slots."""
    if shift > 0:
        tensor = tensor[:, shift:]
    elif shift < 0:
        tensor = ops.pad(tensor, [[0, 0], [-shift, 0], [0, 0]])
    return _fill(tensor, capacity)


def _fill(tensor, capacity: int):
    """`tensor` cut or zero-padded to `capacity` slots (axis 1)."""
    size = int(tensor.shape[1])
    if size >= capacity:
        return tensor[:, :capacity]
    return ops.pad(tensor, [[0, 0], [0, capacity - size], [0, 0]])


def _copy(layer):
    return tuple(ops.copy(t) if hasattr(ops, "copy") else t + 0 for t in layer)


def _placer():
    """`place(caches, logits, block, block_logits, row, start, slot)`: write a prefilled
    block's caches at `[row:row + kv_heads, start:start + width]` and its logits at `slot`,
    in place where the backend allows."""
    backend = keras.backend.backend()

    def place(caches, logits, block, block_logits, row, start, slot):
        placed = []
        for (keys, values), (new_keys, new_values) in zip(caches, block, strict=True):
            placed.append(kv_cache.LayerCache(
                ops.slice_update(keys, (row, start, 0), ops.cast(new_keys, keys.dtype)),
                ops.slice_update(values, (row, start, 0), ops.cast(new_values, values.dtype))))
        return placed, ops.slice_update(logits, (slot, 0), block_logits)

    if backend == "jax":
        import jax

        jitted = jax.jit(place, donate_argnums=(0, 1))
        return lambda caches, logits, block, block_logits, row, start, slot: jitted(
            caches, logits, block, block_logits, np.int32(row), np.int32(start), np.int32(slot))
    if backend == "torch":
        import torch

        def place_in_place(caches, logits, block, block_logits, row, start, slot):
            with torch.no_grad():
                for (keys, values), (new_keys, new_values) in zip(caches, block, strict=True):
                    rows, width = new_keys.shape[0], new_keys.shape[1]
                    keys[row:row + rows, start:start + width].copy_(new_keys)
                    values[row:row + rows, start:start + width].copy_(new_values)
                logits[slot].copy_(block_logits[0])
            return caches, logits

        return place_in_place
    return place
