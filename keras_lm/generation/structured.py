"""`generate(..., json_schema=...)`: JSON that always parses and validates, through the same
batcher (and llguidance mask) as the server's `response_format`.

Example:
>>> lm.generate("A person as JSON:", max_new_tokens=64, json_schema={
...     "type": "object", "properties": {"name": {"type": "string"}}})  # doctest: +SKIP
"""

import secrets

import numpy as np

from keras_lm import samplers as samplers_lib
from keras_lm.generation.batcher import BatchRequest, ContinuousBatcher
from keras_lm.generation.grammar import json_grammar, new_matcher
from keras_lm.generation.row_sampling import RowSettings

NOT_WITH_SCHEMA = ("stream", "return_log_probs", "stop_strings", "repetition_penalty",
                   "logits_processors")


def row_settings(sampler, min_p=None, presence_penalty=None, frequency_penalty=None,
                 logit_bias=None) -> RowSettings:
    """`RowSettings` equal to a built-in token sampler and `generate`'s processor options."""
    kind = type(sampler)
    common = dict(min_p=min_p or 0.0, presence_penalty=presence_penalty or 0.0,
                  frequency_penalty=frequency_penalty or 0.0,
                  logit_bias=tuple(sorted((logit_bias or {}).items())),
                  seed=secrets.randbits(31) if sampler.seed is None else int(sampler.seed))
    if kind is samplers_lib.GreedySampler:
        return RowSettings(**common)
    if kind is samplers_lib.RandomSampler:
        return RowSettings(temperature=sampler.temperature, **common)
    if kind is samplers_lib.TopKSampler:
        return RowSettings(temperature=sampler.temperature, top_k=sampler.k, **common)
    if kind is samplers_lib.TopPSampler:
        return RowSettings(temperature=sampler.temperature, top_p=sampler.p,
                           top_k=sampler.k or 0, **common)
    raise ValueError(
        f"`json_schema` works with the greedy, random, top_k and top_p samplers; got "
        f"{kind.__name__}."
    )


def generate_json(lm, prompts, max_new: np.ndarray, stop_ids, schema, sampler, *,
                  min_p=None, presence_penalty=None, frequency_penalty=None, logit_bias=None,
                  **refusable):
    """Per prompt, the generated ids, each sequence constrained to JSON valid against `schema`
    (True: any JSON object); the stop token that ends the JSON is not kept. `refusable`:
    `generate`'s other options, which must be unset."""
    refused = [name for name in NOT_WITH_SCHEMA if refusable.get(name)]
    if refused:
        raise ValueError(f"`json_schema` cannot be combined with `{refused[0]}`.")
    settings = row_settings(sampler, min_p, presence_penalty, frequency_penalty, logit_bias)
    tokenizer = getattr(lm.preprocessor, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("`json_schema` needs a preprocessor with a tokenizer.")
    if not stop_ids:
        raise ValueError("`json_schema` needs stop token ids (the JSON ends with one); pass "
                         "`stop_token_ids=\"auto\"`.")
    grammar = json_grammar(None if schema is True else schema)
    vocabulary = lm.backbone.vocabulary_size
    batcher = ContinuousBatcher(lm, slots=min(len(prompts), 8), prefix_cache_bytes=0,
                                stop_token_ids=stop_ids)
    requests = [BatchRequest(np.asarray(p, np.int32), int(n), settings,
                             grammar=new_matcher(tokenizer, vocabulary, stop_ids, grammar))
                for p, n in zip(prompts, max_new, strict=True)]
    tokens = [[] for _ in prompts]
    pending, owner = list(range(len(prompts))), {}
    while pending or batcher.running():
        while pending and batcher.free_slots():
            row = pending.pop(0)
            owner[batcher.add(requests[row])] = row
        for slot, output in batcher.step().items():
            tokens[owner[slot]].extend(output.tokens)
            if output.finished:
                batcher.release(slot)
    stops = set(int(i) for i in stop_ids)
    return [row[:-1] if row and row[-1] in stops else row for row in tokens]
