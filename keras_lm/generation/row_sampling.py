"""Sampling settings per batch row, as tensors: what lets requests with different settings
share one compiled decode loop (continuous batching, `keras_lm.generation.batcher`).

A `RowSampler` keeps each setting as a `[rows]` variable whose values the engine passes to the
compiled chunk, so a request joining or leaving the batch changes values, never the program.
Only the *kind* of work is compiled in (`RowModes`): whether any row samples from the whole
vocabulary, whether any uses top-k / top-p, penalties or a logit bias.

Randomness is counter-based: row `r`'s `n`-th draw is a hash of `(seed[r], n)`, so a seeded
request gives the same text alone or in any batch, on every backend.

Example:
>>> sampler = RowSampler(rows=8, vocabulary_size=50257, modes=RowModes(sample=True))
>>> values = sampler.values_for([RowSettings(temperature=0.7, seed=1)] + [None] * 7)
"""

from dataclasses import dataclass

import keras
import numpy as np

from keras_lm.backend import ops
from keras_lm.generation.processors import LogitsProcessor

CANDIDATES = 256  # top-k / top-p choose among at most this many of the most probable tokens
BLOCK = 512  # whole-vocabulary draws find their token block by block (see `_draw_full`)
_NEG = -1e9


@dataclass(frozen=True)
class RowSettings:
    """One request's sampling settings (0 / 1.0 / None switch a setting off)."""

    temperature: float = 0.0  # 0: greedy
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple = ()  # ((token id, bias), ...)
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.top_k <= CANDIDATES:
            raise ValueError(f"`top_k` must be in [0, {CANDIDATES}] here; got {self.top_k}.")

    @property
    def samples(self) -> bool:
        return self.temperature > 0

    @property
    def uses_candidates(self) -> bool:
        return self.samples and (self.top_k > 0 or self.top_p < 1.0)


@dataclass(frozen=True)
class RowModes:
    """The compiled-in kinds of work of a batch (a program per combination)."""

    sample: bool = False  # some row samples from the whole vocabulary
    candidates: bool = False  # some row samples with top-k / top-p
    penalties: bool = False  # some row has a presence or frequency penalty
    bias: bool = False  # some row has a logit bias

    @classmethod
    def of(cls, settings) -> "RowModes":
        rows = [s for s in settings if s is not None]
        return cls(
            sample=any(s.samples and not s.uses_candidates for s in rows),
            candidates=any(s.uses_candidates for s in rows),
            penalties=any(s.presence_penalty or s.frequency_penalty for s in rows),
            bias=any(s.logit_bias for s in rows),
        )


class RowSampler:
    """Greedy or sampled choice per row, with per-row temperature, top-k, top-p, min-p,
    penalties and logit bias (see the module docstring)."""

    strategy = "token"
    FIELDS = ("temperature", "top_k", "top_p", "min_p", "presence", "frequency", "seed",
              "counter")
    _DTYPES = {"top_k": "int32", "seed": "int32", "counter": "int32"}

    def __init__(self, rows: int, vocabulary_size: int, modes: RowModes):
        self.rows = rows
        self.vocabulary_size = vocabulary_size
        self.modes = modes
        self._variables = {
            name: keras.Variable(np.zeros((rows,), self._DTYPES.get(name, "float32")),
                                 trainable=False, name=f"row_{name}")
            for name in self.FIELDS
        }
        if modes.bias:
            self._variables["bias"] = keras.Variable(
                np.zeros((rows, vocabulary_size), "float32"), trainable=False, name="row_bias")

    @property
    def variables(self) -> list:
        return list(self._variables.values())

    def processors(self) -> list:
        """The logits processors this sampler's modes need (they read its variables)."""
        out = []
        if self.modes.bias:
            out.append(_RowBias(self._variables["bias"]))
        if self.modes.penalties:
            out.append(_RowPenalties(self._variables["presence"], self._variables["frequency"]))
        return out

    def values_for(self, settings: list, counters: np.ndarray | None = None) -> list:
        """Numpy values of `variables` for per-row `settings` (None: an empty row)."""
        empty = RowSettings()
        rows = [s or empty for s in settings]
        values = {
            "temperature": [s.temperature for s in rows],
            "top_k": [s.top_k for s in rows],
            "top_p": [s.top_p for s in rows],
            "min_p": [s.min_p for s in rows],
            "presence": [s.presence_penalty for s in rows],
            "frequency": [s.frequency_penalty for s in rows],
            "seed": [_to_int32(s.seed) for s in rows],
            "counter": np.zeros(self.rows) if counters is None else counters,
        }
        out = [np.asarray(values[name], self._DTYPES.get(name, "float32"))
               for name in self.FIELDS]
        if self.modes.bias:
            bias = np.zeros((self.rows, self.vocabulary_size), np.float32)
            for row, s in enumerate(rows):
                for token, value in s.logit_bias:
                    bias[row, token] = value
            out.append(bias)
        return out

    def next_token_from_logits(self, logits):
        v = {name: variable.value for name, variable in self._variables.items()}
        greedy = ops.first_argmax(logits)
        if not (self.modes.sample or self.modes.candidates):
            return greedy
        counter = v["counter"]
        self._variables["counter"].assign(counter + 1)
        uniform = counter_uniform(v["seed"], counter)
        temperature = v["temperature"]
        scaled = logits / ops.where(temperature > 0, temperature, 1.0)[:, None]
        # min-p on the distribution before temperature, as `generate`'s MinPProcessor does.
        probabilities = ops.softmax(logits, axis=-1)
        floor = v["min_p"][:, None] * ops.max(probabilities, axis=-1, keepdims=True)
        scaled = ops.where(probabilities < floor, _NEG, scaled)
        token = greedy
        if self.modes.sample:
            token = ops.where(temperature > 0, _draw_full(scaled, uniform), token)
        if self.modes.candidates:
            narrowed = ops.logical_or(v["top_k"] > 0, v["top_p"] < 1.0)
            choice = _draw_candidates(scaled, uniform, v["top_k"], v["top_p"])
            token = ops.where(ops.logical_and(temperature > 0, narrowed), choice, token)
        return ops.cast(token, "int32")


class _RowBias(LogitsProcessor):
    def __init__(self, bias):
        self.bias = bias

    def __call__(self, logits, context):
        return logits + self.bias.value

    def cache_key(self):
        return ("row_bias",)


class _RowPenalties(LogitsProcessor):
    needs_history = True

    def __init__(self, presence, frequency):
        self.presence, self.frequency = presence, frequency

    def __call__(self, logits, context):
        counts = ops.cast(context["counts"], logits.dtype)
        seen = ops.cast(counts > 0, logits.dtype)
        return (logits - self.presence.value[:, None] * seen
                - self.frequency.value[:, None] * counts)

    def cache_key(self):
        return ("row_penalties",)


def counter_uniform(seed, counter):
    """A float32 in (0, 1) per row from int32 `seed` and `counter` (an integer hash: same
    numbers on every backend)."""
    x = _mix(seed * 1000003 + counter)
    x = _mix(x + counter * 7919)
    return (ops.cast(ops.bitwise_and(x, 0x7FFFFF), "float32") + 0.5) / float(1 << 23)


def _mix(x):
    """An int32 avalanche step; shifts act on the non-negative low 31 bits, so arithmetic and
    logical shifts agree."""
    for _ in range(2):
        x = ops.bitwise_xor(x, ops.right_shift(ops.bitwise_and(x, 0x7FFFFFFF), 16))
        x = x * 0x45D9F3B
    return ops.bitwise_xor(x, ops.right_shift(ops.bitwise_and(x, 0x7FFFFFFF), 16))


def _draw_full(scaled, uniform):
    """Inverse-CDF draw over the whole vocabulary without a cumulative sum over it: find the
    block of `BLOCK` tokens that holds the draw, then the token inside it."""
    batch, vocab = ops.shape(scaled)
    blocks = -(-vocab // BLOCK)
    weights = ops.exp(scaled - ops.max(scaled, axis=-1, keepdims=True))
    if blocks * BLOCK != vocab:
        weights = ops.pad(weights, [[0, 0], [0, blocks * BLOCK - vocab]])
    weights = ops.reshape(weights, (batch, blocks, BLOCK))
    block_mass = ops.sum(weights, axis=-1)
    cumulative = ops.cumsum(block_mass, axis=-1)
    target = uniform * cumulative[:, -1]
    block = ops.minimum(ops.sum(ops.cast(cumulative <= target[:, None], "int32"), axis=-1),
                        blocks - 1)
    before = ops.take_along_axis(cumulative - block_mass, block[:, None], axis=-1)[:, 0]
    rows = ops.arange(batch, dtype="int32") * blocks + block
    inside = ops.take(ops.reshape(weights, (batch * blocks, BLOCK)), rows, axis=0)
    inside_cumulative = ops.cumsum(inside, axis=-1) + before[:, None]
    offset = ops.sum(ops.cast(inside_cumulative <= target[:, None], "int32"), axis=-1)
    # Rounding can leave the target past the block's last token: take its last nonzero one.
    last = BLOCK - 1 - ops.argmax(ops.flip(ops.cast(inside > 0, "int32"), axis=-1), axis=-1)
    offset = ops.minimum(offset, ops.cast(last, "int32"))
    return ops.minimum(block * BLOCK + offset, vocab - 1)


def _draw_candidates(scaled, uniform, top_k, top_p):
    """Draw among the `CANDIDATES` most probable tokens, keeping per row the top `top_k`
    (0: all) and the smallest set whose mass (over the whole vocabulary) reaches `top_p`."""
    vocab = ops.shape(scaled)[-1]
    size = min(CANDIDATES, vocab)
    values, ids = ops.top_k(scaled, k=size, sorted=True)
    total = ops.sum(ops.exp(scaled - values[:, :1]), axis=-1, keepdims=True)
    probabilities = ops.exp(values - values[:, :1]) / total
    rank = ops.arange(size, dtype="int32")[None, :]
    keep = ops.logical_or(top_k[:, None] <= 0, rank < top_k[:, None])
    mass_before = ops.cumsum(probabilities, axis=-1) - probabilities
    keep = ops.logical_and(keep, mass_before < top_p[:, None])
    kept = ops.where(keep, probabilities, 0.0)
    cumulative = ops.cumsum(kept, axis=-1)
    target = uniform * cumulative[:, -1]
    kept_count = ops.sum(ops.cast(keep, "int32"), axis=-1)
    choice = ops.minimum(ops.sum(ops.cast(cumulative <= target[:, None], "int32"), axis=-1),
                         kept_count - 1)
    return ops.cast(ops.take_along_axis(ids, choice[:, None], axis=-1)[:, 0], "int32")


def _to_int32(seed: int) -> int:
    return int(np.int64(seed) % (1 << 31))
