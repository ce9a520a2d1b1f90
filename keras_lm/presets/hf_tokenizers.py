"""Tokenizers from the files a Hugging Face folder holds, preferring `tokenizer.json`, then
`tokenizer.model` (SentencePiece), then `vocab.json` + `merges.txt`."""

import os

from keras_lm.checks import json_object, read_json_file


def read_tokenizer_json(path: str) -> dict | None:
    file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(file):
        return None
    return json_object(read_json_file(file, "tokenizer file"), file, "tokenizer file")


def _split_pattern(pre_tokenizer: dict | None, source: str) -> str | None:
    """The word-splitting regex of a byte-level pre-tokenizer (None: GPT-2's own)."""
    if not pre_tokenizer:
        return None
    kind = pre_tokenizer.get("type")
    if kind == "ByteLevel":
        return None
    if kind == "Sequence":
        for step in pre_tokenizer.get("pretokenizers", []):
            pattern = (step.get("pattern") or {}).get("Regex")
            if step.get("type") == "Split" and pattern:
                return pattern
        return None
    raise ValueError(f"{source}: pre-tokenizer {kind!r} is not a byte-level BPE one.")


def byte_pair_tokenizer(cls, path: str, family: str, **kwargs):
    """A `BytePairTokenizer` subclass from `tokenizer.json` or `vocab.json` + `merges.txt`."""
    data = read_tokenizer_json(path)
    if data is not None:
        source = os.path.join(path, "tokenizer.json")
        model = data.get("model") or {}
        if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
            raise ValueError(f"{source}: {family} needs a byte-level BPE tokenizer.json.")
        vocabulary = dict(model["vocab"])
        added = [t for t in data.get("added_tokens") or [] if isinstance(t, dict)]
        for token in added:
            vocabulary[token["content"]] = token["id"]
        normalizer = (data.get("normalizer") or {}).get("type")
        options = dict(
            vocabulary=vocabulary, merges=model.get("merges") or [],
            unsplittable_tokens=[t["content"] for t in added],
            split_pattern=_split_pattern(data.get("pre_tokenizer"), source),
            normalization="NFC" if normalizer == "NFC" else None,
        )
        options.update(kwargs)
        return cls(**options)
    vocab, merges = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
    if os.path.isfile(vocab) and os.path.isfile(merges):
        return cls(vocabulary=vocab, merges=merges, **kwargs)
    raise ValueError(f"{path}: {family} needs tokenizer.json, or vocab.json and merges.txt.")


def sentencepiece_tokenizer(cls, path: str, family: str, **kwargs):
    """A `SentencePieceTokenizer` subclass from `tokenizer.json` (what `transformers` runs),
    else `tokenizer.model`."""
    data = read_tokenizer_json(path)
    if data is not None:
        with open(os.path.join(path, "tokenizer.json"), encoding="utf-8") as f:
            return cls(tokenizer_json=f.read(), **kwargs)
    model = os.path.join(path, "tokenizer.model")
    if not os.path.isfile(model):
        raise ValueError(f"{path}: {family} needs tokenizer.json or a SentencePiece "
                         "tokenizer.model file.")
    return cls(proto=model, **kwargs)
