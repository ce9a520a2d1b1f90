"""Write tiny KerasHub preset folders, and the logits and token ids KerasHub computes on them,
into tests/data/keras_hub/ (the fixtures of tests/test_keras_hub_presets.py).

Run with the real `keras-hub` package, never from the tests:

    python -m venv --system-site-packages /tmp/khenv
    /tmp/khenv/bin/pip install --no-deps keras-hub==0.32.0 kagglehub kagglesdk tensorflow-text
    KERAS_BACKEND=jax /tmp/khenv/bin/python scripts/make_keras_hub_fixtures.py

Every weight is drawn at random (KerasHub initializes norms to ones and biases to zeros, which
would hide a swapped or missing tensor), then the folder is written with KerasHub's own
`save_to_preset`. Besides one folder per family: an int8-quantized preset (its config holds a
`DTypePolicyMap`) and a preset whose weights are sharded.

`--check FOLDER...` loads preset folders that keras_lm saved from these fixtures (one per
fixture, named like it) with KerasHub and compares KerasHub's logits with the fixture's:

    KERAS_BACKEND=jax /tmp/khenv/bin/python scripts/make_keras_hub_fixtures.py --check /tmp/rt/*
"""

import io
import json
import os
import shutil
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import sentencepiece  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                    "keras_hub")
WORDS = "the quick brown fox jumped over lazy dog keras is a deep learning library".split()
TEXTS = ["the quick brown fox", "keras is a deep learning library", "dog  over\nthe lazy"]
SP_SENTENCES = ["the quick brown fox jumped over the lazy dog"] * 4 + [
    "keras is a deep learning library", "where are you going", "i want to say hello"]


def byte_level_bpe(specials: list[str]) -> tuple[dict, list]:
    """Byte-level BPE over WORDS: the special tokens first, then every byte symbol."""
    from keras_lm.demo import byte_level_vocabulary

    return byte_level_vocabulary(WORDS, specials=tuple(specials))


def sentencepiece_model(pad: str, bos: str, eos: str, user_defined=()) -> bytes:
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SP_SENTENCES), model_writer=out, vocab_size=40,
        model_type="unigram", pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece=pad,
        bos_piece=bos, eos_piece=eos, unk_piece="<unk>", byte_fallback=False,
        normalization_rule_name="identity", user_defined_symbols=list(user_defined),
        minloglevel=2,
    )
    return out.getvalue()


def llama_like(vocab_size, **extra):
    return dict(vocabulary_size=vocab_size, num_layers=2, num_query_heads=4,
                num_key_value_heads=2, hidden_dim=16, intermediate_dim=24, **extra)


def family_models():
    """`{name: (CausalLM class, backbone class, backbone args, tokenizer)}`."""
    m = keras_hub.models
    gpt2_vocab, gpt2_merges = byte_level_bpe(["<|endoftext|>"])
    opt_vocab, opt_merges = byte_level_bpe(["<pad>", "</s>", "<unk>"])
    llama3_vocab, llama3_merges = byte_level_bpe(
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
         "<|eot_id|>"])
    qwen_vocab, qwen_merges = byte_level_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    llama_proto = sentencepiece_model("<pad>", "<s>", "</s>")
    gemma_proto = sentencepiece_model("<pad>", "<bos>", "<eos>")
    gemma3_proto = sentencepiece_model(
        "<pad>", "<bos>", "<eos>",
        ["<start_of_turn>", "<end_of_turn>", "<img>", "<start_of_image>", "<end_of_image>"])

    def bpe(cls, vocab, merges):
        return cls(vocabulary=vocab, merges=merges)

    gpt2_tok = bpe(m.GPT2Tokenizer, gpt2_vocab, gpt2_merges)
    opt_tok = bpe(m.OPTTokenizer, opt_vocab, opt_merges)
    llama3_tok = bpe(m.Llama3Tokenizer, llama3_vocab, llama3_merges)
    qwen_tok = bpe(m.QwenTokenizer, qwen_vocab, qwen_merges)
    qwen3_tok = bpe(m.Qwen3Tokenizer, qwen_vocab, qwen_merges)
    llama_tok = m.LlamaTokenizer(proto=llama_proto)
    mistral_tok = m.MistralTokenizer(proto=llama_proto)
    gemma_tok = m.GemmaTokenizer(proto=gemma_proto)
    gemma3_tok = m.Gemma3Tokenizer(proto=gemma3_proto)
    size = lambda tok: tok.vocabulary_size()  # noqa: E731
    return {
        "gpt2": (m.GPT2CausalLM, m.GPT2Backbone, dict(
            vocabulary_size=size(gpt2_tok), num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=24, max_sequence_length=64), gpt2_tok),
        "opt": (m.OPTCausalLM, m.OPTBackbone, dict(
            vocabulary_size=size(opt_tok), num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=24, max_sequence_length=64), opt_tok),
        "llama": (m.LlamaCausalLM, m.LlamaBackbone, llama_like(
            size(llama_tok), rope_max_wavelength=500.0), llama_tok),
        "llama3": (m.Llama3CausalLM, m.Llama3Backbone, llama_like(
            size(llama3_tok), tie_word_embeddings=True, rope_max_wavelength=500000.0,
            rope_frequency_adjustment_factor=32.0, rope_low_freq_factor=1.0,
            rope_high_freq_factor=4.0, rope_pretraining_sequence_length=16), llama3_tok),
        "mistral": (m.MistralCausalLM, m.MistralBackbone, llama_like(
            size(llama_tok), sliding_window=3), mistral_tok),
        "gemma": (m.GemmaCausalLM, m.GemmaBackbone, dict(
            vocabulary_size=size(gemma_tok), num_layers=2, num_query_heads=4,
            num_key_value_heads=2, hidden_dim=16, intermediate_dim=48, head_dim=8,
            use_post_ffw_norm=True, use_post_attention_norm=True,
            use_sliding_window_attention=True, sliding_window_size=3,
            attention_logit_soft_cap=5.0, final_logit_soft_cap=3.0), gemma_tok),
        "gemma3": (m.Gemma3CausalLM, m.Gemma3Backbone, dict(
            vocabulary_size=size(gemma3_tok), image_size=896, num_layers=3,
            num_query_heads=4, num_key_value_heads=1, hidden_dim=16, intermediate_dim=24,
            head_dim=8, query_head_dim_normalize=True, use_query_key_norm=True,
            use_post_ffw_norm=True, use_post_attention_norm=True,
            use_sliding_window_attention=True, sliding_window_size=3,
            vision_encoder=None), gemma3_tok),
        "qwen": (m.QwenCausalLM, m.QwenBackbone, llama_like(
            size(qwen_tok), tie_word_embeddings=False), qwen_tok),
        "qwen3": (m.Qwen3CausalLM, m.Qwen3Backbone, llama_like(
            size(qwen_tok), head_dim=8, tie_word_embeddings=False), qwen3_tok),
    }


def randomize(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "float" not in str(variable.dtype):
            continue
        value = rng.normal(0.0, 0.3, variable.shape)
        if any(name in variable.path for name in ("gamma", "scale")):
            value += 1.0
        variable.assign(value.astype("float32"))


def token_ids(vocab_size: int, seed: int):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, vocab_size, size=(2, 7)).astype("int32")
    mask = np.ones_like(ids, dtype=bool)
    mask[1, 5:] = False  # right padding, as KerasHub's preprocessors write it
    return ids, mask


def write_fixture(name, lm, folder, **save_kwargs):
    path = os.path.join(ROOT, folder)
    shutil.rmtree(path, ignore_errors=True)
    lm.save_to_preset(path, **save_kwargs)
    ids, mask = token_ids(lm.backbone.vocabulary_size, seed=len(folder))
    logits = lm({"token_ids": ids, "padding_mask": mask})
    tokenizer = lm.preprocessor.tokenizer
    tokenized = [np.asarray(tokenizer(text)).tolist() for text in TEXTS]
    arrays = dict(token_ids=ids, padding_mask=mask,
                  logits=keras.ops.convert_to_numpy(logits).astype("float32"))
    if name != "gemma3":  # KerasHub's Gemma 3 generate needs its image inputs
        preprocessor, lm.preprocessor = lm.preprocessor, None  # generate from token ids
        lm.compile(sampler="greedy")
        greedy = lm.generate({"token_ids": np.pad(ids[:1, :4], ((0, 0), (0, 6))),
                              "padding_mask": np.pad(mask[:1, :4], ((0, 0), (0, 6)))},
                             stop_token_ids=None)
        lm.preprocessor = preprocessor
        arrays["greedy"] = np.asarray(greedy["token_ids"])
    np.savez(os.path.join(ROOT, f"{folder}.npz"), **arrays)
    with open(os.path.join(ROOT, f"{folder}.json"), "w") as f:
        json.dump({"family": name, "texts": TEXTS, "token_ids": tokenized,
                   "keras_hub_version": keras_hub.__version__}, f, indent=1)
    print(f"wrote {folder}: {sorted(os.listdir(path))}")


def main(only=()):
    os.makedirs(ROOT, exist_ok=True)
    for seed, (name, (lm_cls, backbone_cls, args, tokenizer)) in enumerate(
            family_models().items()):
        if only and name not in only:
            continue
        backbone = backbone_cls(**args)
        randomize(backbone, seed)
        preprocessor = lm_cls.preprocessor_cls(tokenizer=tokenizer, sequence_length=16)
        lm = lm_cls(backbone=backbone, preprocessor=preprocessor)
        write_fixture(name, lm, name)
        if name == "llama":
            write_fixture(name, lm, "llama_sharded", max_shard_size=0.000005)
            lm.quantize("int8")
            write_fixture(name, lm, "llama_int8")
        if name in ("gpt2", "gemma"):
            lm.quantize("int8")
            write_fixture(name, lm, f"{name}_int8")


def check(folders) -> None:
    failed = 0
    for folder in folders:
        name = os.path.basename(os.path.normpath(folder))
        expected = np.load(os.path.join(ROOT, f"{name}.npz"))
        lm = keras_hub.models.CausalLM.from_preset(folder)
        logits = keras.ops.convert_to_numpy(lm({"token_ids": expected["token_ids"],
                                                "padding_mask": expected["padding_mask"]}))
        mask = expected["padding_mask"]
        error = float(np.abs(logits - expected["logits"])[mask].max())
        failed += error > 1e-4
        print(f"{name}: KerasHub loads it as {type(lm).__name__}, max |logit diff| {error:.2e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:
        check(sys.argv[2:])
    else:
        main(sys.argv[1:])
