"""`Tokenizer`: the base class: strings ⇄ token ids, special tokens, presets, assets."""

import numpy as np

from keras_lm.checks import token_id_array, utf8_text
from keras_lm.presets.mixin import PresetMixin


def to_python_strings(inputs, name: str = "inputs"):
    """Normalize a string, list, numpy array or tf tensor of strings; return (strings, batched).

    Bytes must be UTF-8 and strings valid Unicode (no lone surrogates): anything else raises a
    ValueError naming `name` and the item.
    """
    if hasattr(inputs, "numpy") and not isinstance(inputs, np.ndarray):
        inputs = inputs.numpy()
    if isinstance(inputs, (str, bytes)):
        return [utf8_text(inputs, name)], False
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 0:
            return to_python_strings(inputs.item(), name)
        inputs = inputs.tolist()
    if isinstance(inputs, (list, tuple)):
        out = []
        for i, item in enumerate(inputs):
            if not isinstance(item, (str, bytes)):
                raise TypeError(
                    f"`{name}` must be a string or a list of strings; item {i} is "
                    f"{type(item).__name__}: {item!r}"
                )
            out.append(utf8_text(item, f"{name}[{i}]"))
        return out, True
    raise TypeError(
        f"`{name}` must be a string or a list of strings. Received: {type(inputs).__name__}"
    )


def to_id_rows(inputs):
    """Normalize token ids (list, nested list, numpy or backend tensor) to (rows, batched)."""
    if hasattr(inputs, "numpy") and not isinstance(inputs, np.ndarray):
        inputs = inputs.numpy() if not hasattr(inputs, "detach") else inputs.detach().cpu().numpy()
    if isinstance(inputs, (list, tuple)):
        if not inputs or not isinstance(inputs[0], (list, tuple, np.ndarray)):
            return [np.asarray(inputs, dtype=np.int64)], False
        return [np.asarray(row, dtype=np.int64) for row in inputs], True
    array = np.asarray(inputs)
    if array.ndim == 0:
        return [array.reshape(1).astype(np.int64)], False
    if array.ndim == 1:
        return [array.astype(np.int64)], False
    return [row.astype(np.int64) for row in array], True


class Tokenizer(PresetMixin):
    """Base tokenizer. Subclasses implement `_encode(list[str]) -> list[list[int]]`,
    `_decode(list[int]) -> str`, the vocabulary lookups, and asset saving.

    Family subclasses declare `special_tokens_spec` (attribute name → token) and
    `pad_token_spec`; each becomes `<name>` and `<name>_id` attributes.

    Example:
    >>> ids = tokenizer("The quick fox")  # doctest: +SKIP
    >>> tokenizer.detokenize(ids)  # doctest: +SKIP
    'The quick fox'
    """

    preset_kind = "tokenizer"
    special_tokens_spec: dict = {}
    pad_token_spec: str | None = None
    extra_stop_tokens: tuple = ()  # also end generation (e.g. a chat turn's end), when present
    asset_files: tuple = ()
    default_chat_template: str | None = None  # the family's format, when a checkpoint has none

    def __init__(self, sequence_length: int | None = None, dtype: str = "int32", name=None,
                 stop_token_ids=None):
        if sequence_length is not None and (
            not isinstance(sequence_length, int) or sequence_length <= 0
        ):
            raise ValueError(
                f"`sequence_length` must be a positive int or None. Received: {sequence_length!r}"
            )
        self.sequence_length = sequence_length
        self.dtype = dtype
        # More ids that end generation (a checkpoint's generation_config.json `eos_token_id`).
        self.stop_token_ids = tuple(int(i) for i in (stop_token_ids or ()))
        self.name = name or type(self).__name__
        self.start_token_id = self.end_token_id = None
        self.pad_token_id = 0
        # A checkpoint's Jinja chat template (kept as assets/tokenizer/chat_template.jinja).
        self.chat_template: str | None = None

    # -- special tokens ---------------------------------------------------------------------
    def _declared_special_tokens(self) -> list[str]:
        tokens = list(self.special_tokens_spec.values())
        if self.pad_token_spec:
            tokens.append(self.pad_token_spec)
        return list(dict.fromkeys(tokens))

    def _bind_special_tokens(self) -> None:
        for attr, token in self.special_tokens_spec.items():
            token_id = self.token_to_id(token)
            if token_id is None:
                raise ValueError(
                    f"Cannot find special token `{attr}` = {token!r} in the vocabulary of "
                    f"{type(self).__name__}. Add it to the vocabulary."
                )
            setattr(self, attr, token)
            setattr(self, f"{attr}_id", token_id)
        if self.pad_token_spec:
            pad_id = self.token_to_id(self.pad_token_spec)
            self.pad_token = self.pad_token_spec
            self.pad_token_id = 0 if pad_id is None else pad_id

    @property
    def special_tokens(self) -> list[str]:
        return self._declared_special_tokens()

    def tokenize_with_special_tokens(self, text: str) -> list[int]:
        """Ids of `text` with the special tokens written in it (`<bos>`, `<|eot_id|>`, ...)
        read as those tokens: how a rendered chat template is tokenized."""
        return np.asarray(self(text)).tolist()

    def chat_template_variables(self) -> dict:
        """What chat templates read besides the messages: the special tokens, by name."""
        names = {"bos_token": self.start_token_id, "eos_token": self.end_token_id,
                 "pad_token": self.pad_token_id}
        return {name: ("" if i is None else self.id_to_token(int(i)))
                for name, i in names.items()}

    def generation_stop_ids(self) -> tuple[int, ...]:
        """The token ids that end generation by default: the end token and `extra_stop_tokens`."""
        ids = [self.end_token_id] + [self.token_to_id(t) for t in self.extra_stop_tokens]
        ids += [i for i in self.stop_token_ids if 0 <= i < self.id_limit()]
        return tuple(dict.fromkeys(int(i) for i in ids if i is not None))

    @property
    def special_token_ids(self) -> list[int]:
        ids = [self.token_to_id(t) for t in self.special_tokens]
        return [i for i in ids if i is not None]

    # -- public API ---------------------------------------------------------------------------
    def __call__(self, inputs):
        return self.tokenize(inputs)

    def tokenize(self, inputs):
        """Strings to ids: a 1-D array for one string; a list of arrays (or a padded 2-D array
        when `sequence_length` is set) for a batch."""
        strings, batched = to_python_strings(inputs)
        rows = [np.asarray(r, dtype=self.dtype) for r in self._encode(strings)]
        if self.sequence_length is not None:
            rows = [self._pad(r) for r in rows]
            if batched:
                return np.stack(rows) if rows else np.zeros((0, self.sequence_length), self.dtype)
        return rows if batched else rows[0]

    def _pad(self, row):
        out = np.full((self.sequence_length,), self.pad_token_id, dtype=self.dtype)
        row = row[: self.sequence_length]
        out[: len(row)] = row
        return out

    def detokenize(self, inputs):
        """Ids to text: one string for a 1-D input, a list of strings for a batch."""
        rows, batched = to_id_rows(inputs)
        limit = self.id_limit()
        for row in rows:
            token_id_array(row, "inputs", limit)
        texts = [self._decode([int(i) for i in row]) for row in rows]
        return texts if batched else texts[0]

    def vocabulary_size(self) -> int:
        raise NotImplementedError

    def id_limit(self) -> int:
        """One past the largest token id (the vocabulary size when ids are dense)."""
        return self.vocabulary_size()

    def get_vocabulary(self) -> list[str]:
        return [self.id_to_token(i) for i in range(self.vocabulary_size())]

    def id_to_token(self, id: int) -> str:
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    # -- serialization ------------------------------------------------------------------------
    def get_config(self) -> dict:
        config = {"name": self.name, "sequence_length": self.sequence_length, "dtype": self.dtype}
        if self.stop_token_ids:
            config["stop_token_ids"] = list(self.stop_token_ids)
        return config

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def asset_config_keys(self) -> tuple:
        """Config keys whose values live in asset files rather than in the JSON config."""
        return ()

    def save_assets(self, directory: str) -> None:
        raise NotImplementedError

    @classmethod
    def asset_config_from_dir(cls, directory: str) -> dict:
        raise NotImplementedError
