"""A tiny, randomly initialized GPT-2 preset for trying the command line with no download."""

import os

import keras

DEMO_WORDS = (
    "the quick brown fox jumped over lazy dog keras is a deep learning library for people "
    "who want to build models and generate text"
).split()


def byte_level_vocabulary(words, ascii_only: bool = False) -> tuple[dict, list]:
    """`(vocabulary, merges)`: every byte symbol (or only printable ASCII, space and newline
    with `ascii_only`, so a random model cannot emit broken UTF-8), `<|endoftext|>` (id 0),
    and each word with and without a leading space as a whole token."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {"<|endoftext|>": 0}
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


def build_demo_preset(path: str, seed: int = 0) -> str:
    """Write the demo preset to `path` (once) and return the path.

    Example:
    >>> build_demo_preset("/tmp/keras_lm_demo")  # doctest: +SKIP
    """
    if os.path.isfile(os.path.join(path, "task.json")):
        return path  # built by an earlier run (same seed, same model)
    from keras_lm.models.gpt2 import GPT2Backbone, GPT2CausalLM, GPT2CausalLMPreprocessor

    keras.utils.set_random_seed(seed)
    tokenizer = demo_tokenizer()
    backbone = GPT2Backbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_heads=4, hidden_dim=64,
        intermediate_dim=128, max_sequence_length=256,
    )
    preprocessor = GPT2CausalLMPreprocessor(tokenizer, sequence_length=64)
    GPT2CausalLM(backbone=backbone, preprocessor=preprocessor).save_to_preset(path)
    return path
