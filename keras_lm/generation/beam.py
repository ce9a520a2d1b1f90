"""Beam search: the batch is expanded to `batch * num_beams` and beams are reordered each step."""

import numpy as np

from keras_lm.backend import ops
from keras_lm.generation import cache as kv_cache
from keras_lm.generation.engine import (
    GenerationResult,
    carry_history,
    finished_rows,
    initial_state,
    scope,
)
from keras_lm.generation.processors import apply_processors

_NEG_INF = -1e9


def _build_beam_loop(engine, sampler, processors=()):
    variables = engine.variables
    num_beams = sampler.num_beams
    kv_heads = engine.backbone.num_key_value_heads

    def loop(model_values, sampler_values, state, stop_ids, max_new, left_pad, tokens):
        batch_beams = ops.shape(tokens)[0]
        batch = batch_beams // num_beams
        steps = ops.shape(tokens)[1]

        def cond(step, state, left_pad, tokens):
            return ops.logical_and(step < steps, ops.logical_not(ops.all(state["done"])))

        def body(step, state, left_pad, tokens):
            with scope(variables, model_values, sampler, sampler_values, engine.direct_calls()):
                history = state.get("history")
                logits = apply_processors(processors, state["logits"], history)
                log_probs = ops.log_softmax(logits / sampler.temperature, axis=-1)
                vocab = ops.shape(log_probs)[-1]
                done = state["done"]
                # A finished beam may only extend itself with a free padding token.
                frozen = ops.where(ops.arange(vocab)[None, :] == 0, 0.0, _NEG_INF)
                log_probs = ops.where(done[:, None], frozen, log_probs)
                totals = state["scores"][:, None] + log_probs
                totals = ops.reshape(totals, (batch, num_beams * vocab))
                best, flat = ops.top_k(totals, k=num_beams)
                origin = flat // vocab + ops.arange(batch)[:, None] * num_beams
                origin = ops.reshape(origin, (-1,))
                token = ops.cast(ops.reshape(flat % vocab, (-1,)), "int32")
                caches = kv_cache.take_rows(state["caches"], origin, kv_heads)
                was_done = ops.take(done, origin, axis=0)
                tokens = ops.take(tokens, origin, axis=0)
                tokens = ops.slice_update(
                    tokens, (0, step), ops.where(was_done, -1, token)[:, None]
                )
                count = state["count"] + 1
                row_max_new = ops.repeat(max_new, num_beams, axis=0)
                done = finished_rows(was_done, token, count, stop_ids, row_max_new)
                positions = ops.take(state["positions"], origin, axis=0)
                hidden, caches = engine.forward_step(
                    token[:, None], positions[:, None], caches, state["index"], left_pad
                )
                logits = ops.cast(engine.backbone.logits(hidden[:, -1, :]), "float32")
            new_state = {
                "logits": logits,
                "caches": caches,
                "scores": ops.reshape(best, (-1,)),
                "index": state["index"] + 1,
                "positions": positions + 1,
                "count": count,
                "done": done,
            }
            if history is not None:
                history = {k: ops.take(v, origin, axis=0) for k, v in history.items()}
            carry_history(new_state, history, token, was_done, vocab)
            return step + 1, new_state, left_pad, tokens

        zero = ops.convert_to_tensor(0, "int32")
        _, state, _, tokens = ops.while_loop(cond, body, (zero, state, left_pad, tokens))
        return state["scores"], tokens

    return loop


def beam_search(engine, request, sampler) -> GenerationResult:
    """Run beam search; returns the best beam per row (and all beams, best first)."""
    num_beams = sampler.num_beams
    batch = len(request.prompts)
    start = engine.start_search(request, sampler, repeat=num_beams)
    if start is None:
        empty = [[] for _ in range(batch)]
        return GenerationResult(tokens=empty, log_probs=empty, beams=[[([], 0.0)]] * batch
                                if sampler.return_all_beams else None)
    steps = start.steps
    # Only the first beam of each row starts alive, so the first step picks distinct tokens.
    initial = np.tile(np.array([0.0] + [_NEG_INF] * (num_beams - 1), np.float32), batch)
    processors = list(request.processors)
    prompts = [p for p in request.prompts for _ in range(num_beams)]
    state = initial_state(start.logits, start.caches, start.width, start.lengths,
                          np.repeat(start.max_new <= 0, num_beams), processors, prompts)
    state["scores"] = ops.convert_to_tensor(initial)
    loop = engine.compiled(
        "beam", sampler, lambda s, p=(): _build_beam_loop(engine, s, p), processors
    )
    history = np.full((batch * num_beams, steps), -1, np.int32)
    scores, history = loop(
        [v.value for v in sampler.variables],
        state,
        start.stop_ids,
        ops.convert_to_tensor(start.max_new),
        ops.convert_to_tensor(start.left_pad, "int32"),
        ops.convert_to_tensor(history),
    )
    scores = ops.convert_to_numpy(scores).reshape(batch, num_beams)
    history = ops.convert_to_numpy(history).reshape(batch, num_beams, steps)
    beams = []
    for row in range(batch):
        row_beams = []
        for beam in np.argsort(-scores[row], kind="stable"):
            ids = history[row, beam]
            row_beams.append((ids[ids >= 0].tolist(), float(scores[row, beam])))
        beams.append(row_beams)
    best = [b[0][0] for b in beams]
    return GenerationResult(
        tokens=best,
        log_probs=[[] for _ in best],
        beams=beams if sampler.return_all_beams else None,
        extras={"scores": scores},
    )
