"""A tiny, randomly initialized GPT-2 preset for trying the command line with no download."""

import hashlib
import json
import os

import keras

DEMO_WORDS = (
    "the quick brown fox jumped over lazy dog keras is a deep learning library for people "
    "who want to build models and generate text"
).split()


def byte_level_vocabulary(words, ascii_only: bool = False,
                          specials: tuple = ("<|endoftext|>",)) -> tuple[dict, list]:
    """`(vocabulary, merges)`: the `specials` first (`<|endoftext|>`, id 0, by default), every
    byte symbol (or only printable ASCII, space and newline with `ascii_only`, so a random model
    cannot emit broken UTF-8), and each word with and without a leading space as a whole
    token."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {token: i for i, token in enumerate(specials)}
    symbols = sorted(ByteLevel.alphabet())
    if ascii_only:
        symbols = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    merges = []
    for word in words:
        for token in (word, "Ġ" + word):
            pieces = list(token)
            while len(pieces) > 1:
                rule = f"{pieces[0]} {pieces[1]}"
                if rule not in merges:
                    merges.append(rule)
                merged = pieces[0] + pieces[1]
                vocab.setdefault(merged, len(vocab))
                pieces = [merged] + pieces[2:]
    return vocab, merges


def demo_tokenizer():
    """A GPT-2 tokenizer over `byte_level_vocabulary(DEMO_WORDS)`."""
    from keras_lm.models.gpt2 import GPT2Tokenizer

    vocab, merges = byte_level_vocabulary(DEMO_WORDS, ascii_only=True)
    return GPT2Tokenizer(vocabulary=vocab, merges=merges)


DEMO_SHAPE = dict(num_layers=2, num_heads=4, hidden_dim=64, intermediate_dim=128,
                  max_sequence_length=256)


def cache_root() -> str:
    """Where keras_lm keeps files it builds (`KERAS_LM_CACHE`, else ~/.cache/keras_lm)."""
    return os.path.expanduser(
        os.environ.get("KERAS_LM_CACHE") or os.path.join("~", ".cache", "keras_lm")
    )


def demo_preset_path(seed: int = 0) -> str:
    """The demo preset's folder, named by everything that shapes it (a changed demo or
    library version gets a new folder, never a stale one)."""
    from keras_lm.version import __version__

    spec = json.dumps([__version__, keras.__version__, DEMO_WORDS, DEMO_SHAPE, seed])
    digest = hashlib.sha256(spec.encode()).hexdigest()[:12]
    return os.path.join(cache_root(), f"demo-{digest}")


def build_demo_preset(path: str | None = None, seed: int = 0) -> str:
    """Write the demo preset to `path` (default `demo_preset_path(seed)`) unless an earlier
    run did, and return the path.

    Example:
    >>> build_demo_preset()  # doctest: +SKIP
    """
    path = path or demo_preset_path(seed)
    if os.path.isfile(os.path.join(path, "task.json")):
        return path  # saves are all-or-nothing: a task.json means a complete preset
    from keras_lm.models.gpt2 import GPT2Backbone, GPT2CausalLM, GPT2CausalLMPreprocessor

    keras.utils.set_random_seed(seed)
    tokenizer = demo_tokenizer()
    backbone = GPT2Backbone(vocabulary_size=tokenizer.vocabulary_size(), **DEMO_SHAPE)
    preprocessor = GPT2CausalLMPreprocessor(tokenizer, sequence_length=64)
    GPT2CausalLM(backbone=backbone, preprocessor=preprocessor).save_to_preset(path)
    return path
