"""generate() controls beyond KerasHub: stop strings, streaming, log-probs, logits processors."""

import keras
import numpy as np
import pytest

import keras_lm
from keras_lm.generation.text import RowText

pytestmark = pytest.mark.tensorflow

PROMPTS = ["the quick", "i want to"]


def greedy(lm, prompts=PROMPTS, **kwargs):
    return lm.generate(prompts, max_length=24, stop_token_ids=None, sampler="greedy",
                       strip_prompt=True, **kwargs)


def test_multi_token_stop_string_is_judged_per_row(gpt2_lm):
    free = greedy(gpt2_lm)
    tok = gpt2_lm.preprocessor.tokenizer
    completion = free[0]
    # The same greedy tokens as ids, to take a stop string spanning two of them.
    prompt = gpt2_lm.preprocessor.prompt_rows([PROMPTS[0]])[0]
    out = gpt2_lm.generate({"token_ids": prompt[None], "padding_mask": np.ones((1, len(prompt)))},
                           max_length=24, stop_token_ids=None, sampler="greedy")
    pieces = [tok.detokenize([int(i)]) for i in out["token_ids"][0, len(prompt):]]
    assert "".join(pieces) == completion
    k = next(k for k in range(len(pieces) // 3, len(pieces) - 2)
             if pieces[k] and pieces[k + 1] and pieces[k] + pieces[k + 1] not in pieces)
    stop = pieces[k] + pieces[k + 1]
    assert not any(stop in piece for piece in pieces)  # no single token holds it
    stopped = greedy(gpt2_lm, stop_strings=[stop])
    expected0 = completion[: completion.find(stop) + len(stop)]
    assert stopped[0] == expected0 and len(expected0) < len(completion)
    position = free[1].find(stop)
    expected1 = free[1] if position < 0 else free[1][: position + len(stop)]
    assert stopped[1] == expected1


def test_stop_strings_truncate_tokens_and_log_probs(gpt2_lm):
    free, free_lp = greedy(gpt2_lm, return_log_probs=True)
    stop = free[0][2:5]
    out, lp = greedy(gpt2_lm, stop_strings=stop, return_log_probs=True)
    assert out[0].endswith(stop)
    assert 0 < len(lp[0]) < len(free_lp[0])
    np.testing.assert_allclose(lp[0], free_lp[0][: len(lp[0])], atol=1e-5)


def test_stream_pieces_add_up_to_the_completion(gpt2_lm):
    expected = greedy(gpt2_lm)
    pieces = list(gpt2_lm.generate("the quick", max_length=24, stop_token_ids=None,
                                   sampler="greedy", stream=True))
    assert all(isinstance(p, str) for p in pieces) and len(pieces) > 1
    assert "".join(pieces) == expected[0]
    batched = list(gpt2_lm.generate(PROMPTS, max_length=24, stop_token_ids=None,
                                    sampler="greedy", stream=True))
    assert all(isinstance(p, list) and len(p) == 2 for p in batched)
    assert ["".join(p[i] for p in batched) for i in range(2)] == expected


def test_stream_honours_stop_strings(gpt2_lm):
    expected = greedy(gpt2_lm)
    stop = expected[0][3:6]
    pieces = gpt2_lm.generate("the quick", max_length=24, stop_token_ids=None,
                              sampler="greedy", stream=True, stop_strings=[stop])
    text = "".join(pieces)
    assert text == expected[0][: expected[0].find(stop) + len(stop)]


def test_partial_utf8_characters_are_held_back(gpt2_tokenizer):
    ids = gpt2_tokenizer("é").tolist()  # two byte tokens in byte-level BPE
    assert len(ids) == 2
    row = RowText(gpt2_tokenizer._decode, [], [])
    row.extend(ids[:1])
    assert row.take_new() == ""
    row.extend(ids[1:])
    assert row.take_new() == "é"


def test_log_probs_are_the_model_log_probs(gpt2_lm):
    gpt2_lm.preprocessor = None
    prompt = {"token_ids": np.array([[0, 5, 6]]), "padding_mask": np.ones((1, 3), bool)}
    out, log_probs = gpt2_lm.generate(prompt, max_length=9, stop_token_ids=None,
                                      sampler="greedy", return_log_probs=True)
    ids = out["token_ids"][0]
    logits = keras.ops.convert_to_numpy(gpt2_lm.score(ids[None]))[0]
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = [log_softmax[t - 1, ids[t]] for t in range(3, 9)]
    np.testing.assert_allclose(log_probs[0], expected, atol=1e-4)
    _, beam_log_probs = gpt2_lm.generate(prompt, max_length=9, stop_token_ids=None,
                                         sampler=keras_lm.samplers.BeamSampler(num_beams=1),
                                         return_log_probs=True)
    np.testing.assert_allclose(beam_log_probs[0], expected, atol=1e-4)


def test_logit_bias_forces_a_token_with_every_sampler(gpt2_lm):
    target = gpt2_lm.preprocessor.tokenizer.token_to_id("Ġfox")
    for sampler in ["greedy", keras_lm.samplers.RandomSampler(seed=1),
                    keras_lm.samplers.TopPSampler(p=0.5, seed=1),
                    keras_lm.samplers.BeamSampler(num_beams=2),
                    keras_lm.samplers.ContrastiveSampler(k=3)]:
        out = gpt2_lm.generate(["the"], max_length=8, stop_token_ids=None, strip_prompt=True,
                               sampler=sampler, logit_bias={target: 1e4})
        assert out[0] == " fox" * 6, sampler


def test_min_p_one_makes_random_sampling_greedy(gpt2_lm):
    expected = greedy(gpt2_lm)
    sampled = gpt2_lm.generate(PROMPTS, max_length=24, stop_token_ids=None, strip_prompt=True,
                               sampler=keras_lm.samplers.RandomSampler(seed=3), min_p=1.0)
    assert sampled == expected


def _generated_ids(lm, **kwargs):
    lm.preprocessor = None
    prompt = {"token_ids": np.array([[0, 5, 6]]), "padding_mask": np.ones((1, 3), bool)}
    out = lm.generate(prompt, max_length=40, stop_token_ids=None, sampler="greedy", **kwargs)
    return out["token_ids"][0]


def test_frequency_and_presence_penalties_forbid_repeats(gpt2_lm):
    for kwargs in ({"frequency_penalty": 1e4}, {"presence_penalty": 1e4}):
        generated = _generated_ids(gpt2_lm, **kwargs)[3:]
        assert len(set(generated.tolist())) == len(generated), kwargs


def test_repetition_penalty_matches_its_definition(gpt2_lm):
    penalty = 3.0
    ids = _generated_ids(gpt2_lm, repetition_penalty=penalty)
    for t in range(3, 8):
        logits = keras.ops.convert_to_numpy(gpt2_lm.score(ids[None, :t]))[0, -1]
        seen = np.zeros_like(logits, bool)
        seen[ids[:t]] = True
        penalized = np.where(logits > 0, logits / penalty, logits * penalty)
        assert ids[t] == np.argmax(np.where(seen, penalized, logits))


def test_custom_logits_processor(gpt2_lm):
    banned = gpt2_lm.preprocessor.tokenizer.token_to_id("Ġfox")

    def no_fox(logits, context):
        vocab = keras.ops.shape(logits)[-1]
        return keras.ops.where(keras.ops.arange(vocab)[None, :] == banned, -1e9, logits)

    boosted = gpt2_lm.generate(["the"], max_length=8, stop_token_ids=None, sampler="greedy",
                               logit_bias={banned: 50.0}, logits_processors=[no_fox])
    assert "fox" not in boosted


def test_control_errors(gpt2_lm):
    with pytest.raises(ValueError, match="stop_strings"):
        gpt2_lm.generate("the", max_length=8, stop_strings=[""])
    with pytest.raises(ValueError, match="stream"):
        next(iter(gpt2_lm.generate("the", max_length=8, stream=True,
                                   sampler=keras_lm.samplers.BeamSampler(num_beams=2))))
    with pytest.raises(ValueError, match="min_p"):
        gpt2_lm.generate("the", max_length=8, min_p=2.0)
    with pytest.raises(ValueError, match="logit_bias"):
        gpt2_lm.generate("the", max_length=8, logit_bias={10**9: 1.0})
    gpt2_lm.preprocessor = None
    with pytest.raises(ValueError, match="tokenizer"):
        gpt2_lm.generate({"token_ids": np.array([[0, 5]])}, max_length=8, stop_strings=["a"])
