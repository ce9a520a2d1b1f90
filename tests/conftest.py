"""Shared fixtures: tiny tokenizers, models and Hugging Face checkpoints built at test time."""

import json
import os
import tempfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("KERAS_LM_COMPILE_CACHE", "off")  # the CLI would write to ~/.cache
# Files keras_lm builds (the demo preset) go to a fresh folder per test session.
os.environ["KERAS_LM_CACHE"] = tempfile.mkdtemp(prefix="keras_lm_test_cache_")
# Tests rebuild the same tiny shapes many times: JAX compiles each distinct program once per
# run, shared by the xdist workers (one folder per run id), instead of once per model object.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"keras_lm_test_jax_{_RUN}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import keras  # noqa: E402
from families import tiny_gpt2_backbone  # noqa: E402

import keras_lm  # noqa: E402

BACKEND = keras.backend.backend()

WORDS = ["the", "quick", "brown", "fox", "jumped", "over", "lazy", "dog", "keras", "is", "a",
         "library", "i", "want", "to", "say", "this", "where", "are", "you", "forgot", "my",
         "homework", "deep", "learning"]


def tiny_bpe_vocabulary():
    """Byte-level BPE vocabulary: every byte symbol, the words above, and <|endoftext|>."""
    from keras_lm.demo import byte_level_vocabulary

    return byte_level_vocabulary(WORDS)


@pytest.fixture(scope="session")
def bpe_assets():
    return tiny_bpe_vocabulary()


@pytest.fixture(scope="session")
def gpt2_tokenizer(bpe_assets):
    vocab, merges = bpe_assets
    return keras_lm.models.GPT2Tokenizer(vocabulary=vocab, merges=merges)


@pytest.fixture
def gpt2_lm(gpt2_tokenizer):
    keras.utils.set_random_seed(0)
    backbone = tiny_gpt2_backbone(gpt2_tokenizer.vocabulary_size())
    preprocessor = keras_lm.models.GPT2CausalLMPreprocessor(gpt2_tokenizer, sequence_length=32)
    return keras_lm.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


@pytest.fixture(scope="session")
def gpt2_preset(tmp_path_factory, gpt2_tokenizer):
    """A native tiny GPT-2 preset folder saved by our own `save_to_preset`."""
    keras.utils.set_random_seed(1)
    backbone = tiny_gpt2_backbone(gpt2_tokenizer.vocabulary_size())
    preprocessor = keras_lm.models.GPT2CausalLMPreprocessor(gpt2_tokenizer, sequence_length=64)
    lm = keras_lm.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    path = tmp_path_factory.mktemp("presets") / "gpt2_tiny"
    lm.save_to_preset(str(path))
    return str(path)


def save_hf_gpt2(path, vocab, merges, seed=0, **config):
    """Save a random `transformers` GPT2LMHeadModel and GPT-2 tokenizer files to `path`."""
    import torch
    import transformers

    args = dict(vocab_size=len(vocab), n_positions=128, n_embd=32, n_layer=2, n_head=4,
                bos_token_id=0, eos_token_id=0)
    args.update(config)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**args)).eval()
    model.save_pretrained(str(path))
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return model


@pytest.fixture(scope="session")
def hf_gpt2(tmp_path_factory, bpe_assets):
    vocab, merges = bpe_assets
    path = tmp_path_factory.mktemp("hf") / "gpt2"
    model = save_hf_gpt2(path, vocab, merges)
    return str(path), model


@pytest.fixture(scope="session")
def family_lms():
    """`family_lms(family)`: that family's tiny CausalLM, built once per session."""
    built = {}

    def get(family):
        key = family.lm_cls.__name__
        if key not in built:
            keras.utils.set_random_seed(0)
            built[key] = family.lm_cls(backbone=family.backbone_cls(**family.args))
        return built[key]

    return get


PRIMARY_BACKEND = "jax"


def parity_matrix(configs: list) -> list:
    """Every config on the primary backend; the first (default) one elsewhere, so each family
    is still checked against `transformers` on every backend without repeating the matrix."""
    return list(configs) if BACKEND == PRIMARY_BACKEND else list(configs[:1])


def random_ids(batch, length, vocab, seed=0):
    return np.random.default_rng(seed).integers(1, vocab, size=(batch, length)).astype("int32")


def assert_greedy_matches_transformers(lm, reference, prompts, width):
    """Our greedy generation of a right-padded ragged batch equals `reference.generate` on
    each prompt alone."""
    import torch

    lm.compile(sampler="greedy")
    token_ids = np.zeros((len(prompts), width), "int32")
    mask = np.zeros((len(prompts), width), bool)
    for i, prompt in enumerate(prompts):
        token_ids[i, : len(prompt)] = prompt
        mask[i, : len(prompt)] = True
    out = lm.generate({"token_ids": token_ids, "padding_mask": mask}, stop_token_ids=None)
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            expected = reference.generate(
                torch.tensor(prompt[None], dtype=torch.long), max_length=width, do_sample=False,
                pad_token_id=0, eos_token_id=None,
            )[0].numpy()
        np.testing.assert_array_equal(out["token_ids"][i], expected)
        assert out["padding_mask"][i].all()


SPM_SENTENCES = ["the quick brown fox jumps over the lazy dog"] * 5 + [
    "keras is a deep learning library", "i want to say hello", "where are you going"]


def sentencepiece_proto(vocab_size=48, pad="<pad>", eos="</s>", bos="<s>", unk="<unk>",
                        user_defined=()):
    """A tiny unigram SentencePiece model (serialized bytes) with ids pad 0, eos 1, bos 2,
    unk 3, then `user_defined` pieces."""
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_SENTENCES), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece=pad,
        eos_piece=eos, bos_piece=bos, unk_piece=unk,
        user_defined_symbols=",".join(user_defined) if user_defined else "",
    )
    return model.getvalue()
