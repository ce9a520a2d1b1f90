"""Continuous batching (`ContinuousBatcher`) and per-row sampling (`RowSampler`): requests that
join and leave a running batch generate exactly what they generate alone."""

import json
import os

import numpy as np
import pytest

import keras_lm
from keras_lm.backend import ops
from keras_lm.generation.batcher import BatchRequest, ContinuousBatcher
from keras_lm.generation.row_sampling import (
    RowSettings,
    _draw_candidates,
    _draw_full,
    counter_uniform,
)

PRESETS = os.path.join(os.path.dirname(__file__), "data", "keras_hub")


@pytest.fixture(scope="module")
def lm():
    model = keras_lm.models.CausalLM.from_preset(os.path.join(PRESETS, "qwen"))
    model.compile(sampler="greedy")
    return model


def alone(lm, prompt, max_new, stop="auto", **options):
    out = lm.generate({"token_ids": prompt[None], "padding_mask": np.ones((1, len(prompt)), bool)},
                      max_new_tokens=max_new, stop_token_ids=stop, **options)
    row, mask = np.asarray(out["token_ids"])[0], np.asarray(out["padding_mask"])[0]
    return row[len(prompt):][mask[len(prompt):]].tolist()


def run_all(batcher, requests, widths=None):
    """Feed `requests` in order as slots free up; each one's generated tokens and outputs
    (and the number of decode rows of every step into `widths`)."""
    pending, owner = list(range(len(requests))), {}
    tokens = {i: [] for i in pending}
    outputs = {i: [] for i in pending}
    while pending or batcher.running():
        while pending and batcher.free_slots():
            i = pending.pop(0)
            owner[batcher.add(requests[i])] = i
        for slot, output in batcher.step().items():
            if widths is not None:
                widths.append(batcher.width)
            tokens[owner[slot]].extend(output.tokens)
            outputs[owner[slot]].append(output)
            if output.finished:
                batcher.release(slot)
    return tokens, outputs


def random_prompts(lm, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, lm.backbone.vocabulary_size, size=n).astype(np.int32)
            for n in lengths]


@pytest.mark.tensorflow
def test_joining_and_leaving_rows_generate_what_they_generate_alone(lm):
    # 4 slots, 11 requests of mixed lengths: rows join mid-run, a 70-token prompt arrives
    # after short ones started (every row shifts right) and the cache runs out of room
    # (rows shift left).
    prompts = random_prompts(lm, (5, 12, 3, 30, 7, 70, 2, 17, 40, 4, 6))
    budgets = (20, 5, 33, 12, 40, 8, 25, 3, 16, 30, 7)
    batcher = ContinuousBatcher(lm, slots=4, chunk_size=4, prefix_cache_bytes=0)
    widths = []
    requests = [BatchRequest(p, n) for p, n in zip(prompts, budgets, strict=True)]
    got, _ = run_all(batcher, requests, widths)
    for i, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
        assert got[i] == alone(lm, prompt, budget), i
    assert batcher.caches is None and batcher.index == 0  # idle: memory given back
    # The rows follow the load: 4 while the queue is full, 1 for the last long request.
    assert max(widths) == 4 and widths[-1] == 1


def test_cache_follows_live_rows_not_the_time_the_server_has_run(lm):
    # B joins after A has run 32 steps; once A leaves, B's slots move to the front instead
    # of the cache growing past what the live rows hold.
    first, second = random_prompts(lm, (5, 6), seed=6)
    batcher = ContinuousBatcher(lm, slots=2, chunk_size=4, prefix_cache_bytes=0,
                                stop_token_ids=())
    got, owner, capacities = {0: [], 1: []}, {batcher.add(BatchRequest(first, 40)): 0}, []
    for step in range(200):
        if step == 8:
            owner[batcher.add(BatchRequest(second, 56))] = 1
        for slot, output in batcher.step().items():
            got[owner[slot]].extend(output.tokens)
            if output.finished:
                batcher.release(slot)
        capacities.append(batcher.capacity)
        if not batcher.running():
            break
    assert got[0] == alone(lm, first, 40, None) and got[1] == alone(lm, second, 56, None)
    assert max(capacities) == 64  # B alone needs 62 slots; A + B ran over 100 steps


def test_prefix_cache_reuses_earlier_turns_with_identical_output(lm):
    system = random_prompts(lm, (40,), seed=1)[0]
    first = np.concatenate([system, [7, 8, 9]]).astype(np.int32)
    outputs, prefilled = [], []
    for size in (0, 64 << 20):
        batcher = ContinuousBatcher(lm, slots=2, chunk_size=4, prefix_cache_bytes=size)
        reply = run_all(batcher, [BatchRequest(first, 12)])[0][0]
        # The next turn: the whole first exchange, then new tokens; and another user with
        # the same system prompt.
        second = np.concatenate([first, reply, [11, 12, 13, 14, 15]]).astype(np.int32)
        other = np.concatenate([system, [21, 22]]).astype(np.int32)
        got = run_all(batcher, [BatchRequest(second, 10), BatchRequest(other, 10)])[0]
        outputs.append((reply, got[0], got[1]))
        prefilled.append(batcher.prefilled_tokens)
        if size:
            assert batcher.prefix_cache.hits == 2
    assert outputs[0] == outputs[1]
    assert outputs[1][1] == alone(lm, second, 10) and outputs[1][2] == alone(lm, other, 10)
    assert prefilled[1] < prefilled[0] / 2  # most of the prompts were not run again


def test_per_row_penalties_and_bias_equal_generate_alone(lm):
    prompts = random_prompts(lm, (6, 9, 4), seed=2)
    settings = [RowSettings(presence_penalty=1.5), RowSettings(),
                RowSettings(frequency_penalty=0.7, logit_bias=((5, 4.0), (6, -100.0)))]
    options = [dict(presence_penalty=1.5), {},
               dict(frequency_penalty=0.7, logit_bias={5: 4.0, 6: -100.0})]
    batcher = ContinuousBatcher(lm, slots=3, chunk_size=4, prefix_cache_bytes=0)
    got, _ = run_all(batcher, [BatchRequest(p, 16, s) for p, s in zip(prompts, settings,
                                                                         strict=True)])
    for i in range(3):
        assert got[i] == alone(lm, prompts[i], 16, **options[i]), i


def test_seeded_sampling_does_not_depend_on_the_batch(lm):
    prompt = random_prompts(lm, (8,), seed=3)[0]
    settings = RowSettings(temperature=1.0, top_p=0.9, seed=42)

    def sample(neighbours):
        batcher = ContinuousBatcher(lm, slots=4, chunk_size=4, prefix_cache_bytes=0)
        others = [BatchRequest(p, 20, RowSettings(temperature=0.7, seed=i))
                  for i, p in enumerate(random_prompts(lm, (5,) * neighbours, seed=4))]
        return run_all(batcher, others + [BatchRequest(prompt, 20, settings)])[0][neighbours]

    first = sample(0)
    assert sample(3) == first
    other_seed = ContinuousBatcher(lm, slots=1, chunk_size=4, prefix_cache_bytes=0)
    changed = run_all(other_seed, [BatchRequest(prompt, 20, RowSettings(temperature=1.0,
                                                                         seed=43))])[0][0]
    assert changed != first
    # top_k=1 samples the greedy token.
    greedy = ContinuousBatcher(lm, slots=1, chunk_size=4, prefix_cache_bytes=0)
    top1 = run_all(greedy, [BatchRequest(prompt, 12, RowSettings(temperature=1.0, top_k=1))])
    assert top1[0][0] == alone(lm, prompt, 12)


def test_log_probs_and_alternatives_are_the_models(lm):
    prompt = random_prompts(lm, (6,), seed=5)[0]
    batcher = ContinuousBatcher(lm, slots=2, chunk_size=4, prefix_cache_bytes=0)
    tokens, outputs = run_all(batcher, [BatchRequest(prompt, 6, top_log_probs=3)])
    log_probs = [lp for o in outputs[0] for lp in o.log_probs]
    top = [t for o in outputs[0] for t in o.top]
    ids = np.concatenate([prompt, tokens[0]])[None]
    logits = np.asarray(ops.convert_to_numpy(lm.score(ids)), np.float64)[0]
    expected_all = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - logits.max(-1, keepdims=True)
    for step, token in enumerate(tokens[0]):
        expected = expected_all[len(prompt) + step - 1]
        np.testing.assert_allclose(log_probs[step], expected[token], atol=1e-4)
        top_ids, top_values = top[step]
        assert top_ids == np.argsort(-expected)[:3].tolist()  # greedy: the first is the token
        np.testing.assert_allclose(top_values, np.sort(expected)[::-1][:3], atol=1e-4)


def test_bad_requests_are_refused_by_name(lm):
    batcher = ContinuousBatcher(lm, slots=1, prefix_cache_bytes=0)
    with pytest.raises(ValueError, match="at least one token"):
        batcher.add(BatchRequest(np.zeros((0,), np.int32), 4))
    with pytest.raises(ValueError, match=r"\[0, "):
        batcher.add(BatchRequest(np.array([10 ** 6], np.int32), 4))
    with pytest.raises(ValueError, match="top_k"):
        RowSettings(temperature=1.0, top_k=10 ** 4)
    batcher.add(BatchRequest(np.array([5, 6], np.int32), 4))
    with pytest.raises(RuntimeError, match="busy"):
        batcher.add(BatchRequest(np.array([5, 6], np.int32), 4))


def test_draws_follow_the_distribution():
    # Evenly spaced uniforms through the inverse CDF reproduce the probabilities.
    rng = np.random.default_rng(0)
    vocab, draws = 1000, 20000
    logits = (rng.normal(size=(1, vocab)) * 2).astype(np.float32)
    p = np.exp(logits[0] - logits[0].max())
    p /= p.sum()
    uniform = ops.convert_to_tensor(((np.arange(draws) + 0.5) / draws).astype(np.float32))
    repeated = ops.convert_to_tensor(np.repeat(logits, draws, 0))

    def frequencies(tokens):
        return np.bincount(ops.convert_to_numpy(tokens), minlength=vocab) / draws

    assert np.abs(frequencies(_draw_full(repeated, uniform)) - p).max() < 1e-3
    order = np.argsort(-p)
    for top_k, top_p in ((5, 1.0), (0, 0.5)):
        keep = order[:top_k] if top_k else order[np.cumsum(p[order]) - p[order] < top_p]
        q = np.zeros(vocab)
        q[keep] = p[keep] / p[keep].sum()
        got = _draw_candidates(repeated, uniform,
                               ops.convert_to_tensor(np.full(draws, top_k, np.int32)),
                               ops.convert_to_tensor(np.full(draws, top_p, np.float32)))
        assert np.abs(frequencies(got) - q).max() < 1e-3


def test_counter_uniforms_are_uniform_and_deterministic():
    seeds = ops.convert_to_tensor(np.repeat(np.arange(50, dtype=np.int32), 200))
    counters = ops.convert_to_tensor(np.tile(np.arange(200, dtype=np.int32), 50))
    u = ops.convert_to_numpy(counter_uniform(seeds, counters))
    assert ((u > 0) & (u < 1)).all()
    assert np.abs(np.histogram(u, bins=10, range=(0, 1))[0] / len(u) - 0.1).max() < 0.01
    assert len(np.unique(u)) > 0.99 * len(u)
    again = ops.convert_to_numpy(counter_uniform(seeds, counters))
    np.testing.assert_array_equal(u, again)


def test_generate_with_a_json_schema_validates(lm):
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("llguidance")
    schema = {"type": "object", "required": ["name", "size"], "additionalProperties": False,
              "properties": {"name": {"type": "string", "maxLength": 6},
                             "size": {"type": "integer", "minimum": 1, "maximum": 9}}}
    texts = lm.generate(["the quick", "a lazy dog", "hello"], max_new_tokens=48,
                        json_schema=schema, strip_prompt=True,
                        sampler=keras_lm.samplers.TopPSampler(p=0.95, temperature=1.5, seed=2))
    for text in texts:
        jsonschema.validate(json.loads(text), schema)
    with pytest.raises(ValueError, match="stream"):
        lm.generate("x", json_schema=schema, stream=True)
    with pytest.raises(ValueError, match="objectx"):
        lm.generate("x", json_schema={"type": "objectx"})
    with pytest.raises(ValueError, match="BeamSampler"):
        lm.generate("x", json_schema=schema, sampler="beam")
