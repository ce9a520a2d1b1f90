"""Fine-tuning data: JSONL lines → `(ids, trained)` segments a preprocessor packs into rows.

Each line is one JSON object of one of these forms:
- `{"text": "..."}`: every token is trained;
- `{"prompt": "...", "completion": "..."}`: only the completion (and its end token);
- `{"messages": [{"role": ..., "content": ...}, ...]}`: rendered with the model's chat
  template; only the assistant turns are trained.
"""

import json

import numpy as np

from keras_lm.models.causal_lm_preprocessor import pack_segments, shift_for_training


class DataError(ValueError):
    """A training file that cannot be read as fine-tuning data; names the file and line."""


def read_jsonl(path: str) -> list[dict]:
    """The JSON objects of a JSONL file (blank lines skipped).

    Example:
    >>> read_jsonl("train.jsonl")[0]  # doctest: +SKIP
    {'text': 'The quick brown fox.'}
    """
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}, line {number}: not valid JSON ({error.msg}).") \
                        from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}, line {number}: expected a JSON object, got "
                                    f"{type(record).__name__}.")
                records.append((number, record))
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}).") \
            from None
    if not records:
        raise DataError(f"{path} holds no examples (one JSON object per line expected).")
    return records


def record_segments(preprocessor, record: dict, where: str) -> list:
    """One JSONL record → `(ids, trained)` segments."""
    tokenizer = preprocessor.tokenizer
    if "messages" in record:
        return chat_segments(preprocessor, record["messages"], where)
    if "prompt" in record or "completion" in record:
        prompt, completion = record.get("prompt"), record.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataError(f"{where}: `prompt` and `completion` must both be strings.")
        return preprocessor.prompt_response_segments([prompt], [completion])[0]
    if "text" in record:
        if not isinstance(record["text"], str):
            raise DataError(f"{where}: `text` must be a string.")
        start = [tokenizer.start_token_id] if (
            preprocessor.add_start_token and tokenizer.start_token_id is not None) else []
        end = [tokenizer.end_token_id] if (
            preprocessor.add_end_token and tokenizer.end_token_id is not None) else []
        return [(start + list(tokenizer._encode([record["text"]])[0]) + end, True)]
    raise DataError(f"{where}: expected a `text`, `prompt`/`completion` or `messages` field; "
                    f"found {sorted(record)}.")


def chat_segments(preprocessor, messages, where: str) -> list:
    """A conversation rendered with the chat template; assistant turns trained, the rest not.

    The template is rendered once per assistant turn: the text up to the turn's generation
    prompt is context, the text the turn adds is what the model learns to write.
    """
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: `messages` must be a non-empty list.")
    try:
        from keras_lm.chat.template import check_messages

        check_messages(messages)
    except (TypeError, ValueError) as error:
        raise DataError(f"{where}: {error}") from None
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant message to learn from.")
    render = preprocessor.apply_chat_template
    boundaries, done = [], ""  # (character offset where a part ends, whether it is trained)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(messages[:i], add_generation_prompt=True)
        after = render(messages[:i + 1], add_generation_prompt=False)
        if not before.startswith(done) or not after.startswith(before):
            raise DataError(f"{where}: the chat template does not render this conversation "
                            "turn by turn (an earlier part changes when a turn is added), so "
                            "the assistant turns cannot be marked.")
        boundaries += [(len(before), False), (len(after), True)]
        done = after
    whole = render(messages, add_generation_prompt=False)
    boundaries.append((len(whole), False))
    # Tokenize the whole conversation once (as a prompt is at inference), then cut it where
    # each part's text ends: a part tokenized alone could split differently.
    encode = preprocessor.tokenizer.tokenize_with_special_tokens
    ids = list(encode(whole))
    segments, start = [], 0
    for offset, trained in boundaries:
        end = len(ids) if offset == len(whole) else _shared_prefix(encode(whole[:offset]), ids)
        if end > start:
            segments.append((ids[start:end], trained))
            start = end
    return segments


def _shared_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def load_examples(preprocessor, path: str) -> list:
    """Every example of a JSONL file as segments."""
    return [record_segments(preprocessor, record, f"{path}, line {number}")
            for number, record in read_jsonl(path)]


def training_arrays(examples, sequence_length: int, pad_id: int, pack: bool = False):
    """Examples → `(inputs, labels, sample_weight)` numpy arrays of `sequence_length` columns.

    Raises DataError when no example keeps a trained token after truncation.
    """
    ids, mask, trained = pack_segments(examples, sequence_length + 1, pad_id, pack=pack)
    x, y, weight = shift_for_training(ids, mask, trained)
    keep = weight.sum(axis=1) > 0
    if not keep.any():
        raise DataError(f"No example has a trained token within {sequence_length} tokens "
                        "(prompts too long?): raise `--sequence-length`.")
    return {k: v[keep] for k, v in x.items()}, y[keep], weight[keep]


def fitting_length(examples, limit: int, multiple: int = 64) -> int:
    """The longest example's length (+1 for the shift) rounded up to `multiple`, at most
    `limit`: rows no wider than the data needs."""
    longest = max(sum(len(ids) for ids, _ in example) for example in examples)
    return int(min(limit, max(multiple, -(-longest // multiple) * multiple)))


def count_tokens(weight: np.ndarray) -> int:
    return int(weight.sum())
