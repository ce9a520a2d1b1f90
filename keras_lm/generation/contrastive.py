"""Contrastive search: score the top-k candidates by probability minus their hidden state's
maximum cosine similarity to every earlier token."""

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


def _build_contrastive_loop(engine, sampler, processors=()):
    variables = engine.variables
    k, alpha = sampler.k, sampler.alpha
    kv_heads = engine.backbone.num_key_value_heads

    def loop(model_values, sampler_values, state, stop_ids, max_new, left_pad, out):
        batch = ops.shape(out)[0]
        steps = ops.shape(out)[1]

        def cond(step, state, out):
            return ops.logical_and(step < steps, ops.logical_not(ops.all(state["done"])))

        def body(step, state, out):
            with scope(variables, model_values, sampler, sampler_values, engine.direct_calls()):
                history = state.get("history")
                processed = apply_processors(processors, state["logits"], history)
                probs = ops.softmax(processed / sampler.temperature, axis=-1)
                top_probs, top_tokens = ops.top_k(probs, k=k)
                expand = lambda x: ops.repeat(x, k, axis=0)  # noqa: E731
                caches = kv_cache.take_rows(
                    state["caches"], ops.repeat(ops.arange(batch), k, axis=0), kv_heads
                )
                candidates = ops.cast(ops.reshape(top_tokens, (-1, 1)), "int32")
                positions = expand(state["positions"])[:, None]
                hidden, caches = engine.forward_step(
                    candidates, positions, caches, state["index"], expand(left_pad)
                )
                hidden = hidden[:, -1, :]
                logits = ops.cast(engine.backbone.logits(hidden), "float32")
                past = state["past"]  # [batch, capacity, dim]
                cand = ops.reshape(ops.cast(hidden, "float32"), (batch, k, -1))
                cand_n = cand / (ops.norm(cand, axis=-1, keepdims=True) + 1e-8)
                past_n = past / (ops.norm(past, axis=-1, keepdims=True) + 1e-8)
                sims = ops.einsum("bkd,bsd->bks", cand_n, past_n)
                sims = ops.where(state["valid"][:, None, :], sims, -1.0)
                score = (1 - alpha) * top_probs - alpha * ops.max(sims, axis=-1)
                choice = ops.argmax(score, axis=-1)
                flat = ops.arange(batch) * k + choice
                token = ops.take_along_axis(top_tokens, choice[:, None], axis=-1)[:, 0]
                token = ops.cast(token, "int32")
                done = state["done"]
                out = ops.slice_update(out, (0, step), ops.where(done, -1, token)[:, None])
                count = state["count"] + 1
                new_done = finished_rows(done, token, count, stop_ids, max_new)
                chosen_hidden = ops.take(ops.reshape(cand, (batch * k, -1)), flat, axis=0)
                slot = state["index"]
                past = ops.slice_update(past, (0, slot, 0), chosen_hidden[:, None, :])
                valid = ops.slice_update(
                    state["valid"], (0, slot), ops.ones((batch, 1), "bool")
                )
                new_state = {
                    "logits": ops.take(logits, flat, axis=0),
                    "caches": kv_cache.take_rows(caches, flat, kv_heads),
                    "past": past,
                    "valid": valid,
                    "index": slot + 1,
                    "positions": state["positions"] + 1,
                    "count": count,
                    "done": new_done,
                }
                carry_history(new_state, history, token, done, ops.shape(logits)[-1])
            return step + 1, new_state, out

        zero = ops.convert_to_tensor(0, "int32")
        _, state, out = ops.while_loop(cond, body, (zero, state, out))
        return out

    return loop


def contrastive_search(engine, request, sampler) -> GenerationResult:
    batch = len(request.prompts)
    start = engine.start_search(request, sampler)
    if start is None:
        return GenerationResult(tokens=[[] for _ in range(batch)],
                                log_probs=[[] for _ in range(batch)])
    width, capacity = start.width, start.capacity
    hidden = ops.cast(start.hidden, "float32")
    past = ops.pad(hidden, [[0, 0], [0, capacity - width], [0, 0]])
    slots = np.arange(capacity)[None, :]
    valid = (slots >= start.left_pad[:, None]) & (slots < width)
    processors = list(request.processors)
    state = initial_state(start.logits, start.caches, width, start.lengths, start.max_new <= 0,
                          processors, request.prompts)
    state["past"] = past
    state["valid"] = ops.convert_to_tensor(valid)
    loop = engine.compiled(
        "contrastive", sampler, lambda s, p=(): _build_contrastive_loop(engine, s, p), processors
    )
    out = loop(
        [v.value for v in sampler.variables],
        state,
        start.stop_ids,
        ops.convert_to_tensor(start.max_new),
        ops.convert_to_tensor(start.left_pad, "int32"),
        ops.convert_to_tensor(np.full((batch, start.steps), -1, np.int32)),
    )
    out = ops.convert_to_numpy(out)
    tokens = [row[row >= 0].tolist() for row in out]
    return GenerationResult(tokens=tokens, log_probs=[[] for _ in tokens])
