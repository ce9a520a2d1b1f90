"""`BytePairTokenizer`: GPT-2 style byte-level BPE on the `tokenizers` library."""

import json
import os
import re

import keras
import numpy as np

from keras_lm.checks import read_json_file
from keras_lm.tokenizers.tokenizer import Tokenizer

VOCABULARY_FILE = "vocabulary.json"
MERGES_FILE = "merges.txt"


def read_vocabulary(vocabulary) -> dict:
    source = "`vocabulary`"
    if isinstance(vocabulary, str):
        source = vocabulary
        vocabulary = read_json_file(vocabulary, "vocabulary file")
    if not isinstance(vocabulary, dict) or not vocabulary:
        raise ValueError(
            f"{source} must be a non-empty dict of token -> id (or the path of a JSON file "
            "holding one)."
        )
    bad = [(k, v) for k, v in vocabulary.items()
           if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise ValueError(f"{source}: token ids must be non-negative ints; found {bad[:3]}")
    return {str(k): v for k, v in vocabulary.items()}


def read_merges(merges) -> list[str]:
    if isinstance(merges, str):
        if not os.path.isfile(merges):
            raise ValueError(f"`merges` file not found: {merges!r}")
        try:
            with open(merges, encoding="utf-8") as f:
                merges = [line.rstrip("\n") for line in f]
        except UnicodeDecodeError as error:
            raise ValueError(f"The merges file {merges} is not UTF-8 text: {error}") from None
        merges = [m for m in merges if m and not m.startswith("#version")]
    merges = [" ".join(m) if isinstance(m, (list, tuple)) else m for m in merges]
    for rule in merges:
        if len(rule.split(" ")) != 2:
            raise ValueError(f"Each merge rule must be two tokens separated by a space: {rule!r}")
    return list(merges)


@keras.saving.register_keras_serializable(package="keras_lm")
class BytePairTokenizer(Tokenizer):
    """Byte-level BPE; special tokens are never split.

    Text is split into words by `split_pattern` (a regex; None: GPT-2's), after the Unicode
    `normalization` ("NFC" or None), then each word's bytes are merged. Families set their
    defaults (Llama 3's and Qwen's patterns) as class attributes. Pieces that are not in
    `vocabulary` (for example characters no merge reaches) are dropped.

    Example:
    >>> vocab = {"a": 0, "Ġquick": 1, "Ġfox": 2}
    >>> merges = ["Ġ q", "u i", "c k", "ui ck", "Ġq uick", "Ġ f", "o x", "Ġf ox"]
    >>> tok = BytePairTokenizer(vocab, merges)
    >>> tok("a quick fox").tolist(), tok.detokenize([0, 1, 2])
    ([0, 1, 2], 'a quick fox')
    """

    asset_files = (VOCABULARY_FILE, MERGES_FILE)
    default_split_pattern: str | None = None
    default_normalization: str | None = None
    ignore_merges = False  # True: a word already in the vocabulary is one token (Llama 3)

    def __init__(
        self,
        vocabulary=None,
        merges=None,
        sequence_length: int | None = None,
        add_prefix_space: bool = False,
        unsplittable_tokens: list[str] | None = None,
        split_pattern: str | None = None,
        normalization: str | None = None,
        dtype: str = "int32",
        stop_token_ids=None,
        name=None,
        **kwargs,
    ):
        super().__init__(sequence_length=sequence_length, dtype=dtype, name=name,
                         stop_token_ids=stop_token_ids)
        if kwargs:
            raise TypeError(f"Unexpected arguments for {type(self).__name__}: {sorted(kwargs)}")
        if normalization not in (None, "NFC"):
            raise ValueError(f"`normalization` must be None or 'NFC'. Received: {normalization!r}")
        self.add_prefix_space = add_prefix_space
        self.unsplittable_tokens = list(unsplittable_tokens or [])
        self.split_pattern = split_pattern or self.default_split_pattern
        self.normalization = normalization or self.default_normalization
        self.vocabulary = None
        self.merges = None
        if vocabulary is not None or merges is not None:
            self.set_vocabulary_and_merges(vocabulary, merges)

    def set_vocabulary_and_merges(self, vocabulary, merges) -> None:
        from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        if vocabulary is None or merges is None:
            raise ValueError("BytePairTokenizer needs both `vocabulary` and `merges`.")
        self.vocabulary = read_vocabulary(vocabulary)
        self.merges = read_merges(merges)
        # The `tokenizers` BPE model needs every merge piece in its vocabulary; pieces missing
        # from ours get hidden ids that `_encode` drops.
        internal = dict(self.vocabulary)
        next_id = max(internal.values()) + 1
        for rule in self.merges:
            left, right = rule.split(" ")
            for piece in (left, right, left + right):
                if piece not in internal:
                    internal[piece] = next_id
                    next_id += 1
        self._known_limit = max(self.vocabulary.values())
        self._id_to_token = {v: k for k, v in self.vocabulary.items()}
        model = models.BPE(vocab=internal, merges=[tuple(m.split(" ")) for m in self.merges],
                           ignore_merges=self.ignore_merges)
        backend = HFTokenizer(model)
        if self.split_pattern is None:
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(
                add_prefix_space=self.add_prefix_space, use_regex=True
            )
        else:
            try:
                split = pre_tokenizers.Split(Regex(self.split_pattern), behavior="isolated")
            except Exception as error:  # the Rust regex engine's own error type
                raise ValueError(f"`split_pattern` is not a valid regex: {error}") from None
            backend.pre_tokenizer = pre_tokenizers.Sequence([
                split, pre_tokenizers.ByteLevel(add_prefix_space=self.add_prefix_space,
                                                use_regex=False)])
        if self.normalization == "NFC":
            backend.normalizer = normalizers.NFC()
        backend.decoder = decoders.ByteLevel()
        declared = self._declared_special_tokens() + self.unsplittable_tokens
        unsplittable = list(dict.fromkeys(declared))
        for token in unsplittable:
            if token not in self.vocabulary:
                raise ValueError(
                    f"Special token {token!r} is not in the vocabulary of "
                    f"{type(self).__name__}; add it to the vocabulary."
                )
        backend.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in unsplittable]
        )
        self._backend = backend
        self._marker_pattern = None
        self._bind_special_tokens()

    def _require_vocabulary(self):
        if self.vocabulary is None:
            raise ValueError(
                f"{type(self).__name__} has no vocabulary: pass `vocabulary` and `merges`, or "
                "use `from_preset`."
            )

    def _encode(self, strings):
        self._require_vocabulary()
        encodings = self._backend.encode_batch(strings, add_special_tokens=False)
        known = self._id_to_token
        return [[i for i in e.ids if i in known] for e in encodings]

    def _decode(self, ids):
        self._require_vocabulary()
        ids = [i for i in ids if i in self._id_to_token]
        return self._backend.decode(ids, skip_special_tokens=False)

    def vocabulary_size(self) -> int:
        self._require_vocabulary()
        return len(self.vocabulary)

    def id_limit(self) -> int:
        self._require_vocabulary()
        return max(self._id_to_token) + 1

    def get_vocabulary(self) -> list[str]:
        self._require_vocabulary()
        return [t for t, _ in sorted(self.vocabulary.items(), key=lambda kv: kv[1])]

    def id_to_token(self, id: int) -> str:
        self._require_vocabulary()
        if int(id) not in self._id_to_token:
            raise ValueError(f"`id` must be a token id in the vocabulary. Received: id={id}")
        return self._id_to_token[int(id)]

    def token_to_id(self, token: str) -> int | None:
        self._require_vocabulary()
        return self.vocabulary.get(token)

    def tokenize_with_special_tokens(self, text: str) -> list[int]:
        # Besides the declared special tokens, every `<|...|>` entry of the vocabulary (the
        # markers chat templates write, such as ChatML's `<|im_start|>`) is read as itself.
        if getattr(self, "_marker_pattern", None) is None:
            markers = [t for t in self.vocabulary if t.startswith("<|") and t.endswith("|>")]
            markers += self.unsplittable_tokens + self._declared_special_tokens()
            markers = sorted(set(markers), key=len, reverse=True)
            self._marker_pattern = re.compile("(" + "|".join(map(re.escape, markers)) + ")") \
                if markers else re.compile("(?!)")
        ids = []
        for index, part in enumerate(self._marker_pattern.split(text)):
            if index % 2:
                ids.append(self.vocabulary[part])
            elif part:
                ids.extend(np.asarray(self(part)).tolist())
        return ids

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            vocabulary=self.vocabulary,
            merges=self.merges,
            add_prefix_space=self.add_prefix_space,
            unsplittable_tokens=self.unsplittable_tokens,
        )
        # Beyond KerasHub's arguments: written only where they differ from the family's.
        if self.split_pattern != self.default_split_pattern:
            config["split_pattern"] = self.split_pattern
        if self.normalization != self.default_normalization:
            config["normalization"] = self.normalization
        return config

    def asset_config_keys(self) -> tuple:
        return ("vocabulary", "merges")

    def save_assets(self, directory: str) -> None:
        self._require_vocabulary()
        with open(os.path.join(directory, VOCABULARY_FILE), "w", encoding="utf-8") as f:
            json.dump(self.vocabulary, f, ensure_ascii=False)
        with open(os.path.join(directory, MERGES_FILE), "w", encoding="utf-8") as f:
            f.write("\n".join(self.merges) + "\n")

    @classmethod
    def asset_config_from_dir(cls, directory: str) -> dict:
        return {
            "vocabulary": os.path.join(directory, VOCABULARY_FILE),
            "merges": os.path.join(directory, MERGES_FILE),
        }


