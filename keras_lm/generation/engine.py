"""The generation engine: left-padded prefill, then compiled decode chunks on a growing cache.

Rows are left-padded so every row writes the same cache slot each step, while explicit per-row
positions keep each row's numbers identical to generating it alone.
"""

import contextlib
import functools
from dataclasses import dataclass, field

import keras
import numpy as np

from keras_lm.backend import decode_companions, ops
from keras_lm.backend.direct_call import direct_layer_calls
from keras_lm.generation import cache as kv_cache
from keras_lm.generation.buckets import cache_bucket, prompt_bucket
from keras_lm.generation.compile import (
    CompiledFunction,
    TracedStep,
    prepare_decode_weights,
    to_numpy,
)
from keras_lm.generation.processors import (
    apply_processors,
    initial_history,
    needs_history,
    update_history,
)
from keras_lm.generation.processors import cache_key as processor_cache_key

DEFAULT_CHUNK = 16
INITIAL_STEPS = 192


@dataclass
class GenerationRequest:
    """Right-padded prompts and per-row budgets, as numpy."""

    prompts: list  # list of 1-D int arrays (the real prompt tokens of each row)
    max_new: np.ndarray  # [batch] tokens each row may add
    stop_token_ids: tuple = ()
    pad_token_id: int = 0
    processors: list = field(default_factory=list)
    log_probs: bool = True  # whether decoding records each token's log-probability


@dataclass
class GenerationResult:
    tokens: list  # per row: generated ids (stop token included when hit)
    log_probs: list  # per row: float32 log-probabilities of those ids
    beams: list | None = None  # beam search with return_all_beams: per row [(ids, score)]
    texts: list | None = None  # per row: completion text cut at a stop string, when asked
    extras: dict = field(default_factory=dict)


@dataclass
class SearchStart:
    """A whole-sequence search right after prefill (see `GenerationEngine.start_search`)."""

    width: int  # prompt block width; decoding writes slots from here
    left_pad: np.ndarray  # [rows] left padding of each row
    lengths: np.ndarray  # [rows] real prompt lengths
    max_new: np.ndarray  # [batch] new-token budget of each prompt
    steps: int  # the largest budget: the loop's length
    capacity: int  # cache slots: the whole search fits (searches do not grow the cache)
    logits: object  # [rows, vocab] float32 logits of each row's last prompt token
    hidden: object  # [rows, width, hidden] prompt hidden states
    caches: list  # filled KV caches
    stop_ids: object  # int32 tensor of stop ids (-1 when none)


@contextlib.contextmanager
def scope(model_variables, model_values, sampler, sampler_values, direct=True):
    """Variables bound to traced values (JAX) and sampler RNG state, with direct layer calls."""
    mapping = []
    if model_values is not None:
        mapping += list(zip(model_variables, model_values, strict=True))
    mapping += list(zip(sampler.variables, sampler_values, strict=True))
    with keras.StatelessScope(state_mapping=mapping) as stateless, direct_layer_calls(direct):
        yield stateless


def initial_state(logits, caches, width, lengths, done, processors, prompts):
    """The decode loop's carried state right after prefill (history only if processors need it)."""
    state = {
        "logits": logits,
        "caches": caches,
        "index": ops.convert_to_tensor(width, "int32"),
        "positions": ops.convert_to_tensor(lengths, "int32"),
        "count": ops.convert_to_tensor(0, "int32"),
        "done": ops.convert_to_tensor(done),
    }
    if needs_history(processors):
        history = initial_history(prompts, int(ops.shape(logits)[-1]))
        state["history"] = {k: ops.convert_to_tensor(v) for k, v in history.items()}
    return state


def stop_id_array(request: GenerationRequest) -> np.ndarray:
    """The request's stop ids as int32 (`[-1]`, which no token matches, when there are none)."""
    return np.array(list(request.stop_token_ids) or [-1], dtype=np.int32)


def finished_rows(done, token, count, stop_ids, max_new):
    """Rows done after emitting `token` as their `count`-th new token."""
    stopped = ops.any(token[:, None] == stop_ids[None, :], axis=-1)
    return ops.logical_or(done, ops.logical_or(stopped, count >= max_new))


def carry_history(new_state, history, token, done, vocab):
    """Count `token` in the processors' history for rows that were still running."""
    if history is not None:
        new_state["history"] = update_history(history, token, ops.logical_not(done), vocab)
    return new_state


def attention_mask(capacity, index, num_queries, left_pad):
    """`[batch, queries, capacity]`: a query at slot `index + t` sees slots in [pad, index + t]."""
    slots = ops.arange(capacity, dtype="int32")[None, None, :]
    query_slots = (index + ops.arange(num_queries, dtype="int32"))[None, :, None]
    visible = ops.logical_and(slots <= query_slots, slots >= left_pad[:, None, None])
    return visible


class GenerationEngine:
    """Runs generation for one `CausalLM`; compiled functions are cached per sampler."""

    def __init__(self, causal_lm):
        self.model = causal_lm
        self._compiled = {}
        self._traced_steps = []  # torch: each records its step once per shape

    @property
    def backbone(self):
        return self.model.backbone

    @property
    def variables(self) -> list:
        """The model's variables, then the backend's inference copies of quantized kernels
        (refreshed here when a kernel changed), which compiled functions receive with them."""
        return self.model.variables + decode_companions(self.backbone)

    def compiled(self, kind: str, sampler, builder, processors=(), donate=()):
        """The compiled function `builder(sampler[, processors])` for this model, cached by
        `kind`, sampler, processors and the model's variables. `donate`: argument positions
        whose buffers the function may reuse (JAX)."""
        # The variable list changes with quantize() or enable_lora(): compile afresh then.
        variables = self.variables  # walks the layers (companions): once per lookup
        model_signature = (self.direct_calls(), tuple(id(v) for v in variables))
        key = (kind, id(sampler), processor_cache_key(processors), model_signature)
        entry = self._compiled.get(key)
        if entry is None or entry[0] is not sampler:
            prepare_decode_weights(self.backbone)
            function = builder(sampler, list(processors)) if processors else builder(sampler)
            entry = (sampler, CompiledFunction(function, variables, donate))
            self._compiled[key] = entry
        return entry[1]

    def direct_calls(self) -> bool:
        """Whether layers may skip `Layer.__call__`: no autocast (mixed precision) or LoRA."""
        policy = self.backbone.dtype_policy
        return policy.variable_dtype == policy.compute_dtype and not self.backbone._lora_rank

    def trace_count(self) -> int:
        """How many times a program was traced: JAX/TF compilations and torch recordings."""
        compiled = sum(fn.trace_count for _, fn in self._compiled.values())
        return compiled + sum(step.trace_count for step in self._traced_steps)

    # -- shared pieces ------------------------------------------------------------------------
    def forward_step(self, token_ids, positions, caches, index, left_pad):
        mask = attention_mask(kv_cache.capacity(caches), index, ops.shape(token_ids)[1], left_pad)
        hidden, caches = self.backbone.decode(
            token_ids,
            positions=positions,
            attention_mask=mask,
            caches=caches,
            cache_update_index=index,
        )
        return hidden, caches

    def _build_prefill(self, sampler):
        variables = self.variables

        def prefill(model_values, sampler_values, token_ids, positions, left_pad, caches):
            with scope(variables, model_values, sampler, sampler_values, self.direct_calls()):
                hidden, caches = self.forward_step(token_ids, positions, caches, 0, left_pad)
                logits = ops.cast(self.backbone.logits(hidden[:, -1, :]), "float32")
            return logits, hidden, caches

        return prefill

    def prepare(self, request: GenerationRequest, repeat: int = 1):
        """Left-pad prompts into a bucketed block; returns numpy arrays."""
        lengths = np.array([len(p) for p in request.prompts], dtype=np.int32)
        if (lengths == 0).any():
            raise ValueError("Every prompt must contain at least one token.")
        width = prompt_bucket(int(lengths.max()))
        batch = len(request.prompts)
        token_ids = np.full((batch, width), request.pad_token_id, dtype=np.int32)
        for i, prompt in enumerate(request.prompts):
            token_ids[i, width - len(prompt) :] = prompt
        left_pad = (width - lengths).astype(np.int32)
        positions = np.maximum(np.arange(width, dtype=np.int32)[None, :] - left_pad[:, None], 0)
        if repeat > 1:
            token_ids, positions, left_pad, lengths = (
                np.repeat(a, repeat, axis=0) for a in (token_ids, positions, left_pad, lengths)
            )
        return token_ids, positions.astype(np.int32), left_pad, lengths

    def start_search(self, request: GenerationRequest, sampler, repeat: int = 1):
        """Prepare and prefill for a whole-sequence search, each prompt repeated `repeat`
        times; None when no row may add a token."""
        token_ids, positions, left_pad, lengths = self.prepare(request, repeat=repeat)
        max_new = np.asarray(request.max_new, dtype=np.int32)
        steps = int(max_new.max())
        if steps <= 0:
            return None
        width = token_ids.shape[1]
        capacity = cache_bucket(width + steps)
        logits, hidden, caches = self.run_prefill(sampler, token_ids, positions, left_pad,
                                                  capacity)
        stop_ids = stop_id_array(request)
        return SearchStart(width, left_pad, lengths, max_new, steps, capacity, logits, hidden,
                           caches, ops.convert_to_tensor(stop_ids))

    def run_prefill(self, sampler, token_ids, positions, left_pad, capacity):
        """Run the prompt block through the model: `(last logits, hidden states, caches)`."""
        caches = self.backbone.empty_cache(token_ids.shape[0], capacity)
        # The fresh caches (argument 4) are filled in place.
        prefill = self.compiled("prefill", sampler, self._build_prefill, donate=(4,))
        sampler_values = [v.value for v in sampler.variables]
        args = [ops.convert_to_tensor(a, "int32") for a in (token_ids, positions, left_pad)]
        return prefill(sampler_values, *args, caches)

    def _build_extend(self, sampler):
        variables = self.variables

        def extend(model_values, sampler_values, token_ids, positions, index, caches):
            with scope(variables, model_values, sampler, sampler_values, self.direct_calls()):
                left_pad = ops.zeros((ops.shape(token_ids)[0],), "int32")
                hidden, caches = self.forward_step(token_ids, positions, caches, index, left_pad)
                logits = ops.cast(self.backbone.logits(hidden[:, -1, :]), "float32")
            return logits, caches

        return extend

    def run_extend(self, sampler, token_ids, positions, index: int, caches):
        """Run `token_ids` (no padding) through the model after the `index` slots already in
        `caches` (a reused prompt start): `(last logits, caches)`."""
        extend = self.compiled("extend", sampler, self._build_extend, donate=(4,))
        sampler_values = [v.value for v in sampler.variables]
        args = [ops.convert_to_tensor(a, "int32") for a in (token_ids, positions, index)]
        return extend(sampler_values, *args, caches)

    # -- token samplers (greedy, random, top-k, top-p, custom) --------------------------------
    def next_logits(self, token_ids, positions, index, left_pad, *flat_caches):
        """One decode step: float32 logits of the last position, then the updated caches
        (flattened: a recorded torch step takes and returns tensors one by one)."""
        caches = kv_cache.unflatten(flat_caches)
        hidden, caches = self.forward_step(token_ids, positions, caches, index, left_pad)
        logits = ops.cast(self.backbone.logits(hidden[:, -1, :]), "float32")
        return (logits, *kv_cache.flatten(caches))

    def _build_chunk(self, sampler, processors=(), log_probs=True, top_log_probs=0):
        """The compiled decode chunk. Its `out` buffers: tokens and log-probs `[batch, n]`,
        then, when `top_log_probs` > 0, the best log-probs and their ids `[batch, n, top]`
        (all from the model's own distribution, before processors and sampler)."""
        variables = self.variables
        direct = self.direct_calls()
        # Direct calls only: Layer.__call__'s autocast and LoRA paths are not worth recording.
        decode_step = TracedStep(self.next_logits, variables, enabled=direct)
        self._traced_steps.append(decode_step)

        def record(outs, step, logits, token):
            tokens_out, log_probs_out, *top_out = outs
            tokens_out = ops.slice_update(tokens_out, (0, step), token[:, None])
            if log_probs or top_log_probs:  # a pass over the vocabulary: ~5% of a GPT-2 step
                log_softmax = ops.log_softmax(logits, axis=-1)
            if log_probs:
                log_prob = ops.take_along_axis(log_softmax, ops.maximum(token, 0)[:, None],
                                               axis=-1)
                log_probs_out = ops.slice_update(log_probs_out, (0, step), log_prob)
            if top_log_probs:
                values, ids = ops.top_k(log_softmax, k=top_log_probs)
                top_out = [ops.slice_update(top_out[0], (0, step, 0), values[:, None]),
                           ops.slice_update(top_out[1], (0, step, 0),
                                            ops.cast(ids, "int32")[:, None])]
            return (tokens_out, log_probs_out, *top_out)

        def chunk(model_values, sampler_values, state, stop_ids, max_new, left_pad, out):
            def cond(step, state, sampler_values, outs):
                steps = ops.shape(outs[0])[1]
                return ops.logical_and(step < steps, ops.logical_not(ops.all(state["done"])))

            def body(step, state, sampler_values, outs):
                with scope(variables, model_values, sampler, sampler_values, direct) as s:
                    logits = state["logits"]
                    history = state.get("history")
                    token = sampler.next_token_from_logits(
                        apply_processors(processors, logits, history)
                    )
                    done = state["done"]
                    token = ops.where(done, ops.zeros_like(token), token)
                    count = state["count"] + 1
                    new_done = finished_rows(done, token, count, stop_ids, max_new)
                    new_logits, *flat_caches = decode_step(
                        token[:, None], state["positions"][:, None], state["index"], left_pad,
                        *kv_cache.flatten(state["caches"]),
                    )
                    caches = kv_cache.unflatten(flat_caches)
                    new_sampler_values = [
                        _current(s, v, old)
                        for v, old in zip(sampler.variables, sampler_values, strict=True)
                    ]
                outs = record(outs, step, logits, ops.where(done, -1, token))
                new_state = {
                    "logits": new_logits,
                    "caches": caches,
                    "index": state["index"] + 1,
                    # A finished row repeats its last position: it never runs past the model's.
                    "positions": ops.where(new_done, state["positions"], state["positions"] + 1),
                    "count": count,
                    "done": new_done,
                }
                carry_history(new_state, history, token, done, ops.shape(logits)[-1])
                return step + 1, new_state, new_sampler_values, outs

            caches, squeezed = kv_cache.squeeze_single_row(state["caches"])
            state = dict(state, caches=caches)
            with decode_step.weights_fixed():
                loop = ops.while_loop(cond, body, (ops.convert_to_tensor(0, "int32"), state,
                                                   sampler_values, tuple(out)))
            _, state, sampler_values, outs = loop
            if squeezed:
                state["caches"] = kv_cache.restore_single_row(state["caches"])
            return state, sampler_values, *outs

        return chunk

    def iterate(self, request: GenerationRequest, sampler, chunk_size: int = DEFAULT_CHUNK,
                control: "DecodeControl | None" = None):
        """Yield `(tokens [batch, n], log_probs [batch, n])` numpy chunks; -1 marks finished rows
        (log-probs are zeros unless `request.log_probs`).

        The cache starts big enough for the prompt plus `INITIAL_STEPS` and doubles as needed,
        so per-token cost follows the current length, not the requested maximum. Rows set in
        `control.stopped` between chunks (stop strings, a closed stream) stop decoding.
        """
        token_ids, positions, left_pad, lengths = self.prepare(request)
        batch, width = token_ids.shape
        max_new = np.asarray(request.max_new, dtype=np.int32)
        total_steps = int(max_new.max()) if len(max_new) else 0
        if total_steps <= 0:
            return
        # Room for the first INITIAL_STEPS steps at once: each growth compiles the chunk for a
        # new cache shape (~1 s on GPT-2), while idle slots cost little at this size.
        capacity = cache_bucket(width + min(max(chunk_size, INITIAL_STEPS), total_steps))
        stop_ids = stop_id_array(request)
        processors = list(request.processors)
        kind, builder = "chunk", self._build_chunk
        if not request.log_probs:
            kind, builder = "chunk-tokens", functools.partial(builder, log_probs=False)
        # The loop state and output buffers (arguments 1 and 5) are replaced by the results.
        chunk = self.compiled(kind, sampler, builder, processors, donate=(1, 5))
        sampler_values = [v.value for v in sampler.variables]
        left_pad_t = ops.convert_to_tensor(left_pad, "int32")
        max_new_t = ops.convert_to_tensor(max_new, "int32")
        stop_t = ops.convert_to_tensor(stop_ids, "int32")
        logits, _, caches = self.run_prefill(sampler, token_ids, positions, left_pad, capacity)
        state = initial_state(
            logits, caches, width, lengths, max_new <= 0, processors, request.prompts
        )
        produced = 0
        index = width
        while produced < total_steps:
            if control is not None and control.stopped.any():
                stopped = ops.convert_to_tensor(control.stopped)
                state["done"] = ops.logical_or(state["done"], stopped)
            # Every chunk has the same length (one compiled shape); the loop leaves early once
            # every row is done, so only the steps that remain are ever written to the cache.
            remaining = min(chunk_size, total_steps - produced)
            if index + remaining > capacity:
                capacity = cache_bucket(index + remaining)
                state["caches"] = kv_cache.grow(state["caches"], capacity)
            state, sampler_values, tokens, log_probs = chunk(
                sampler_values, state, stop_t, max_new_t, left_pad_t,
                chunk_outputs(batch, chunk_size),
            )
            tokens, log_probs = to_numpy(tokens), to_numpy(log_probs)
            produced += chunk_size
            index += chunk_size
            yield tokens, log_probs
            if bool(to_numpy(state["done"]).all()):
                break
        for variable, value in zip(sampler.variables, sampler_values, strict=True):
            variable.assign(value)


class DecodeControl:
    """Lets the consumer of `GenerationEngine.iterate` stop rows between chunks."""

    def __init__(self, batch: int):
        self.stopped = np.zeros((batch,), bool)


def chunk_outputs(batch, chunk_size, top_log_probs: int = 0):
    """Fresh per-chunk buffers: tokens (-1 = none), log-probs and, when `top_log_probs` > 0,
    the best log-probs and their ids."""
    outs = [ops.full((batch, chunk_size), -1, "int32"), ops.zeros((batch, chunk_size), "float32")]
    if top_log_probs:
        outs += [ops.zeros((batch, chunk_size, top_log_probs), "float32"),
                 ops.zeros((batch, chunk_size, top_log_probs), "int32")]
    return tuple(outs)


def _current(stateless_scope, variable, old):
    value = stateless_scope.get_current_value(variable)
    return old if value is None else value
