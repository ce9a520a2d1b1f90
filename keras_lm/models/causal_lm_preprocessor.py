"""`CausalLMPreprocessor`: strings → packed, shifted training data, and generation prompts."""

import warnings

import keras
import numpy as np

from keras_lm.models.preprocessor import Preprocessor
from keras_lm.models.task import is_prompt_response
from keras_lm.tokenizers.tokenizer import to_id_rows, to_python_strings


def pack_rows(rows, length, start_id, end_id, pad_id, add_start, add_end):
    """Pack token rows into `[batch, length]` ids and a mask: start, content, end, padding.

    Over-long content is truncated on the right; the start and end tokens are kept.
    """
    ids = np.full((len(rows), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), length), dtype=bool)
    budget = length - int(add_start) - int(add_end)
    for i, row in enumerate(rows):
        packed = ([start_id] if add_start else []) + list(row[: max(budget, 0)])
        packed += [end_id] if add_end else []
        packed = packed[:length]
        ids[i, : len(packed)] = packed
        mask[i, : len(packed)] = True
    return ids, mask


def pack_segments(examples, length: int, pad_id: int, pack: bool = False):
    """Examples of `(ids, trained)` segments → `[rows, length]` ids, padding mask and loss mask.

    The loss mask is True on the tokens a model learns to predict (e.g. a response, not its
    prompt). Without `pack` each example is one row, truncated on the right; with `pack` the
    examples are laid end to end and cut into full rows (the last one padded).

    Example:
    >>> ids, mask, trained = pack_segments([[([1, 2], False), ([3], True)]], 4, pad_id=0)
    >>> ids.tolist(), trained.tolist()
    ([[1, 2, 3, 0]], [[False, False, True, False]])
    """
    flat = []
    for example in examples:
        tokens, flags = [], []
        for ids, trained in example:
            tokens += [int(t) for t in ids]
            flags += [bool(trained)] * len(ids)
        flat.append((tokens, flags))
    if pack:
        tokens = [t for row, _ in flat for t in row]
        flags = [f for _, row in flat for f in row]
        flat = [(tokens[i:i + length], flags[i:i + length]) for i in range(0, len(tokens), length)]
    ids = np.full((len(flat), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(flat), length), dtype=bool)
    trained = np.zeros((len(flat), length), dtype=bool)
    for i, (tokens, flags) in enumerate(flat):
        n = min(len(tokens), length)
        ids[i, :n] = tokens[:n]
        mask[i, :n] = True
        trained[i, :n] = flags[:n]
    return ids, mask, trained


def shift_for_training(ids, mask, trained):
    """Packed rows → `(inputs, labels, sample_weight)`: each position predicts the next token,
    weighted by whether that token is trained."""
    inputs = {"token_ids": ids[:, :-1], "padding_mask": mask[:, :-1]}
    return inputs, ids[:, 1:], (mask & trained)[:, 1:].astype("float32")


@keras.saving.register_keras_serializable(package="keras_lm")
class CausalLMPreprocessor(Preprocessor):
    """Tokenizes strings, adds start/end tokens and shifts them into `(x, y, sample_weight)`.

    Example:
    >>> x, y, sw = preprocessor(["The quick brown fox."])  # doctest: +SKIP
    >>> x["token_ids"].shape  # doctest: +SKIP
    (1, 1024)
    """

    def __init__(
        self,
        tokenizer=None,
        sequence_length: int = 1024,
        add_start_token: bool = True,
        add_end_token: bool = True,
        name=None,
        **kwargs,
    ):
        super().__init__(tokenizer=tokenizer, name=name)
        if kwargs:
            raise TypeError(f"Unexpected arguments for {type(self).__name__}: {sorted(kwargs)}")
        if not isinstance(sequence_length, int) or sequence_length <= 0:
            raise ValueError(
                f"`sequence_length` must be a positive int. Received: {sequence_length!r}"
            )
        self.sequence_length = sequence_length
        self.add_start_token = add_start_token
        self.add_end_token = add_end_token

    def _pack(self, strings, length, add_end):
        tok = self.tokenizer
        rows = tok._encode(strings)
        return pack_rows(
            rows,
            length,
            tok.start_token_id,
            tok.end_token_id,
            tok.pad_token_id,
            self.add_start_token and tok.start_token_id is not None,
            add_end and tok.end_token_id is not None,
        )

    def __call__(self, x, y=None, sample_weight=None, sequence_length: int | None = None):
        """Returns `({"token_ids", "padding_mask"}, y, sample_weight)`, labels shifted by one.

        `x` is strings (every token trained) or `{"prompts": [...], "responses": [...]}`
        (KerasHub's form: the loss covers only each response and its end token).
        """
        if y is not None or sample_weight is not None:
            warnings.warn(
                f"{type(self).__name__} computes labels from `x`; the given `y` and "
                "`sample_weight` are ignored.",
                stacklevel=2,
            )
        length = sequence_length or self.sequence_length
        if is_prompt_response(x):
            examples = self.prompt_response_segments(x["prompts"], x["responses"])
            return shift_for_training(*pack_segments(
                examples, length + 1, self.tokenizer.pad_token_id))
        strings, _ = to_python_strings(x, "x")
        ids, mask = self._pack(strings, length + 1, self.add_end_token)
        inputs = {"token_ids": ids[:, :-1], "padding_mask": mask[:, :-1]}
        return inputs, ids[:, 1:], mask[:, 1:].astype("float32")

    def prompt_response_segments(self, prompts, responses) -> list:
        """`(ids, trained)` segments per pair: start + prompt untrained, response + end trained.

        Example:
        >>> preprocessor.prompt_response_segments(["Q: 2+2?"], [" 4"])  # doctest: +SKIP
        [[(array([2, 48, 25, ...]), False), (array([604, 1]), True)]]
        """
        prompts, _ = to_python_strings(prompts, "x['prompts']")
        responses, _ = to_python_strings(responses, "x['responses']")
        if len(prompts) != len(responses):
            raise ValueError(
                f"`x['prompts']` has {len(prompts)} items but `x['responses']` has "
                f"{len(responses)}; they must pair up."
            )
        tok = self.tokenizer
        start = [tok.start_token_id] if (
            self.add_start_token and tok.start_token_id is not None) else []
        end = [tok.end_token_id] if (
            self.add_end_token and tok.end_token_id is not None) else []
        return [[(start + list(p), False), (list(r) + end, True)]
                for p, r in zip(tok._encode(prompts), tok._encode(responses), strict=True)]

    def prompt_rows(self, x) -> list[np.ndarray]:
        """Prompt strings → one int32 id array per prompt (start token added, no end token,
        no padding): the engine's input, sized by the prompts alone.

        Example:
        >>> preprocessor.prompt_rows(["a quick", "fox"])  # doctest: +SKIP
        [array([0, 4, 5], dtype=int32), array([0, 6], dtype=int32)]
        """
        strings, _ = to_python_strings(x, "inputs")
        if not strings:
            raise ValueError("`inputs` must hold at least one prompt; received an empty list.")
        tok = self.tokenizer
        start = [tok.start_token_id] if (
            self.add_start_token and tok.start_token_id is not None
        ) else []
        return [np.asarray(start + list(row), dtype=np.int32) for row in tok._encode(strings)]

    def chat_template(self) -> str:
        """The chat template in use: the checkpoint's, else the family's built-in one."""
        tok = self.tokenizer
        template = getattr(tok, "chat_template", None) or tok.default_chat_template
        if not template:
            raise ValueError(
                f"{type(tok).__name__} has no chat template (this checkpoint carries none and "
                "the family has no chat format); set `preprocessor.tokenizer.chat_template` "
                "to a Jinja template."
            )
        return template

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tools=None,
                            documents=None, **variables) -> str:
        """`messages` rendered as a prompt with the chat template (exactly as `transformers`'
        `apply_chat_template(..., tokenize=False)`).

        Example:
        >>> preprocessor.apply_chat_template([{"role": "user", "content": "Hi"}])  # doctest: +SKIP
        '<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n'
        """
        from keras_lm.chat.template import render_chat_template

        context = self.tokenizer.chat_template_variables()
        context.update(variables)
        return render_chat_template(self.chat_template(), messages,
                                    add_generation_prompt=add_generation_prompt, tools=tools,
                                    documents=documents, **context)

    def chat_prompt_ids(self, messages, **kwargs) -> np.ndarray:
        """The rendered chat prompt as ids (special tokens in it read as themselves; the start
        token comes from the template, not added again)."""
        text = self.apply_chat_template(messages, **kwargs)
        return np.asarray(self.tokenizer.tokenize_with_special_tokens(text), dtype=np.int32)

    def generate_preprocess(self, x, sequence_length: int | None = None):
        """Prompt strings → right-padded `{"token_ids", "padding_mask"}` without an end token.

        A prompt longer than `sequence_length` keeps its first `sequence_length` tokens, as
        in KerasHub (`generate` itself refuses such a prompt with a clear error instead).
        """
        length = sequence_length or self.sequence_length
        rows = [row[:length] for row in self.prompt_rows(x)]
        ids, mask = pack_rows(rows, length, None, None, self.tokenizer.pad_token_id,
                              add_start=False, add_end=False)
        return {"token_ids": ids, "padding_mask": mask}

    def generate_postprocess(self, x):
        """`{"token_ids", "padding_mask"}` → strings, dropping padding, start and end tokens."""
        rows, batched = to_id_rows(x["token_ids"])
        masks, _ = to_id_rows(x["padding_mask"])
        special = {self.tokenizer.start_token_id, self.tokenizer.end_token_id} - {None}
        texts = []
        for row, mask in zip(rows, masks, strict=True):
            kept = [int(t) for t, m in zip(row, mask, strict=True) if m and int(t) not in special]
            texts.append(self.tokenizer._decode(kept))
        return texts if batched else texts[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            sequence_length=self.sequence_length,
            add_start_token=self.add_start_token,
            add_end_token=self.add_end_token,
        )
        return config
