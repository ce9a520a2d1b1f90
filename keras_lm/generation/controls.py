"""Generation with text-level controls: stop strings, streaming, returned log-probs."""

import numpy as np
from keras import ops

from keras_lm.generation.beam import beam_search
from keras_lm.generation.contrastive import contrastive_search
from keras_lm.generation.engine import DecodeControl, GenerationRequest, GenerationResult
from keras_lm.generation.text import RowText

STREAM_CHUNK = 4  # tokens per compiled chunk while streaming: small, so text flows steadily


def _trackers(request, tokenizer):
    special = {tokenizer.start_token_id, tokenizer.end_token_id} - {None}
    return [RowText(tokenizer._decode, p, special) for p in request.prompts]


# Whole-sequence searches by `Sampler.strategy`; "token" samplers run the engine's chunk loop.
SEARCHES = {"beam": beam_search, "contrastive": contrastive_search}


def search_for(sampler):
    """The search function for `sampler.strategy` (None for token-by-token samplers)."""
    strategy = getattr(sampler, "strategy", "token")
    if strategy == "token":
        return None
    if strategy not in SEARCHES:
        raise ValueError(
            f"{type(sampler).__name__}.strategy is {strategy!r}; expected \"token\" or one of "
            f"{sorted(SEARCHES)}."
        )
    return SEARCHES[strategy]


def decode(engine, request: GenerationRequest, sampler, tokenizer=None,
           stop_strings=()) -> GenerationResult:
    """Generate; rows stop at their first stop string (judged between chunks). The result's
    `texts` holds each row's completion text when `stop_strings` are given."""
    search = search_for(sampler)
    trackers = _trackers(request, tokenizer) if stop_strings else None
    if search is not None:
        result = search(engine, request, sampler)
        result.log_probs = [None] * len(result.tokens)
        if trackers is not None:
            for row, tracker in enumerate(trackers):
                tracker.extend(result.tokens[row])
                tracker.cut_at_stop(stop_strings)
    else:
        result = GenerationResult(
            tokens=[[] for _ in request.prompts],
            log_probs=[[] if request.log_probs else None for _ in request.prompts],
        )
        _collect_chunks(engine, request, sampler, result, trackers, stop_strings)
    if trackers is not None:
        result.texts = []
        for row, tracker in enumerate(trackers):
            result.tokens[row] = result.tokens[row][: len(tracker.tokens)]
            if result.log_probs[row] is not None:
                result.log_probs[row] = result.log_probs[row][: len(tracker.tokens)]
            result.texts.append(tracker.text)
    return result


def _collect_chunks(engine, request, sampler, result, trackers, stop_strings):
    tokens, log_probs = result.tokens, result.log_probs
    control = DecodeControl(len(request.prompts))
    for chunk_tokens, chunk_log_probs in engine.iterate(request, sampler, control=control):
        for row in range(len(tokens)):
            if control.stopped[row]:
                continue
            keep = chunk_tokens[row] >= 0
            tokens[row].extend(chunk_tokens[row][keep].tolist())
            if log_probs[row] is not None:
                log_probs[row].extend(chunk_log_probs[row][keep].tolist())
            if trackers is not None:
                trackers[row].extend(chunk_tokens[row][keep].tolist())
                if trackers[row].cut_at_stop(stop_strings):
                    control.stopped[row] = True


def fill_log_probs(causal_lm, prompts, tokens, log_probs):
    """Log-probs (raw model distribution) of generated tokens, scoring rows that lack them."""
    out = []
    for prompt, row_tokens, row_log_probs in zip(prompts, tokens, log_probs, strict=True):
        if row_log_probs is None:
            row_log_probs = []
            if row_tokens:
                ids = np.asarray(list(prompt) + list(row_tokens), np.int32)[None]
                logits = ops.convert_to_numpy(ops.cast(causal_lm.score(ids), "float32"))[0]
                shifted = logits - logits.max(-1, keepdims=True)
                log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
                start = len(prompt)
                row_log_probs = [float(log_softmax[start + i - 1, t])
                                 for i, t in enumerate(row_tokens)]
        out.append(np.asarray(row_log_probs, np.float32))
    return out


class TextStream:
    """What `generate(stream=True)` returns: an iterator of new text (a string per step for
    one prompt, a list per step for a batch), which also tells, at any point, each row's
    generated token ids (`completion_ids`, cut after a stop string) and whether a stop
    string ended it (`stopped_by_string`)."""

    def __init__(self, pieces, trackers, control):
        self._pieces = pieces
        self._trackers = trackers
        self._control = control

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._pieces)

    def close(self) -> None:
        """Stop generating (the engine stops at its next chunk)."""
        self._pieces.close()

    @property
    def completion_ids(self) -> list[list[int]]:
        return [list(tracker.tokens) for tracker in self._trackers]

    @property
    def stopped_by_string(self) -> list[bool]:
        return [bool(s) for s in self._control.stopped]


def stream(engine, request: GenerationRequest, sampler, tokenizer, stop_strings, batched):
    """New text as it is generated (a `TextStream`): a string for one prompt, a list (one
    entry per row, "" when a row has nothing new) for a batch. Partial UTF-8 characters are
    held back."""
    if search_for(sampler) is not None:
        raise ValueError(
            "`stream=True` needs a token-by-token sampler; beam and contrastive search decide "
            "their text only at the end."
        )
    trackers = _trackers(request, tokenizer)
    control = DecodeControl(len(request.prompts))
    pieces = _stream_pieces(engine, request, sampler, stop_strings, batched, trackers, control)
    return TextStream(pieces, trackers, control)


def _stream_pieces(engine, request, sampler, stop_strings, batched, trackers, control):
    for chunk_tokens, _ in engine.iterate(request, sampler, STREAM_CHUNK, control=control):
        pieces = []
        for row, tracker in enumerate(trackers):
            if not control.stopped[row]:
                tracker.extend(chunk_tokens[row][chunk_tokens[row] >= 0].tolist())
                if stop_strings and tracker.cut_at_stop(stop_strings):
                    control.stopped[row] = True
            pieces.append(tracker.take_new())
        if any(pieces):
            yield pieces if batched else pieces[0]
    rest = [tracker.text[tracker.emitted:] for tracker in trackers]
    if any(rest):
        yield rest if batched else rest[0]


def without_final_stop(pieces, stop_texts):
    """Text pieces, one step behind, with a stop token's text (an end-of-turn marker) cut off
    the last one."""
    previous = None
    for piece in pieces:
        if previous is not None:
            yield previous
        previous = piece
    if previous is not None:
        for stop in stop_texts:
            if stop and previous.endswith(stop):
                previous = previous[: -len(stop)]
                break
        if previous:
            yield previous
