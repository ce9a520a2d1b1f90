"""A model's reply to a conversation: the chat template's prompt, generated until the turn
ends (shared by `CausalLM.chat`, `keras-lm chat` and the server)."""

import numpy as np

from keras_lm.generation.controls import without_final_stop

NOT_FOR_CHAT = ("max_length", "strip_prompt", "return_log_probs")


def stream_ids(lm, prompt_ids, max_new_tokens: int, **generate_options):
    """`(stream, pieces)`: generation from `prompt_ids` as a `TextStream` (which tells the
    completion ids when done) and its text pieces with the end-of-turn marker cut off."""
    generate_options.setdefault("stop_token_ids", "auto")
    inputs = {"token_ids": prompt_ids[None], "padding_mask": np.ones((1, len(prompt_ids)), bool)}
    stream = lm.generate(inputs, max_new_tokens=max_new_tokens, stream=True, **generate_options)
    tokenizer = lm.preprocessor.tokenizer
    stop_texts = [tokenizer.id_to_token(i) for i in
                  lm._stop_ids(generate_options["stop_token_ids"])]
    return stream, without_final_stop((step[0] for step in stream), stop_texts)


def reply(lm, messages, *, max_new_tokens: int, tools=None, stream: bool = False,
          template_variables: dict | None = None, **generate_options):
    """See `CausalLM.chat`."""
    if lm.preprocessor is None:
        raise ValueError("`chat` needs a preprocessor with a tokenizer.")
    for key in NOT_FOR_CHAT:
        if key in generate_options:
            raise TypeError(f"`chat` does not take `{key}`; use `max_new_tokens`.")
    ids = lm.preprocessor.chat_prompt_ids(messages, tools=tools, **(template_variables or {}))
    if stream:
        return stream_ids(lm, ids, max_new_tokens, **generate_options)[1]
    generate_options.setdefault("stop_token_ids", "auto")
    inputs = {"token_ids": ids[None], "padding_mask": np.ones((1, len(ids)), bool)}
    out = lm.generate(inputs, max_new_tokens=max_new_tokens, **generate_options)
    row = np.asarray(out["token_ids"])[0]
    mask = np.asarray(out["padding_mask"])[0].astype(bool)
    tokens = [int(i) for i in row[len(ids):][mask[len(ids):]]]
    if tokens and tokens[-1] in set(lm._stop_ids(generate_options["stop_token_ids"])):
        tokens = tokens[:-1]
    return lm.preprocessor.tokenizer.detokenize(tokens)
