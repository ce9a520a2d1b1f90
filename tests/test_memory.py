"""Memory of generation follows what is used, not `max_length` or a huge default."""

import tracemalloc

import numpy as np


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_generate_with_max_new_tokens_only_allocates_by_what_is_used(gpt2_lm):
    gpt2_lm.compile(sampler="greedy")
    prompts = ["the quick brown fox", "keras is"] * 4
    gpt2_lm.generate(prompts, max_new_tokens=4)  # compile outside the measurement
    peak = _peak_bytes(lambda: gpt2_lm.generate(prompts, max_new_tokens=4))
    # A width-2**30 int32 block would be 4 GiB per row; a few MB are Python and numpy overhead.
    assert peak < 32 * 2**20, f"generate peaked at {peak / 2**20:.1f} MiB of host memory"


def test_dict_output_width_is_the_longest_reachable_row(gpt2_lm):
    gpt2_lm.preprocessor = None
    gpt2_lm.compile(sampler="greedy")
    prompt = {"token_ids": np.array([[0, 5, 6]]), "padding_mask": np.ones((1, 3), bool)}
    peak = _peak_bytes(lambda: gpt2_lm.generate(prompt, max_length=10**9, max_new_tokens=3,
                                                 stop_token_ids=None))
    out = gpt2_lm.generate(prompt, max_length=10**9, max_new_tokens=3, stop_token_ids=None)
    assert out["token_ids"].shape == (1, 6)
    assert peak < 32 * 2**20
