"""Fine-tuning: the prompt/response loss mask, chat turns marked from the template, the
`keras-lm finetune` job (LoRA and full, an int8 base, checkpoints that resume to the same
weights, a merged preset equal to base + adapters), remat, and output folder safety."""

import json
import os

import keras
import numpy as np
import pytest

import keras_lm
from keras_lm.finetune import FinetuneOptions, run_finetune
from keras_lm.finetune.data import DataError, chat_segments, load_examples

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "keras_hub")
ROWS = [{"text": "the quick brown fox jumped over the lazy dog"},
        {"prompt": "where are you", "completion": " i forgot my homework"},
        {"text": "keras is a deep learning library"},
        {"prompt": "i want to say", "completion": " this is a dog"}] * 3


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def logits(lm, ids):
    x = {"token_ids": np.asarray(ids, "int32"), "padding_mask": np.ones_like(ids, "int32")}
    return keras.ops.convert_to_numpy(lm(x))


@pytest.mark.tensorflow
def test_prompt_response_loss_covers_only_the_response(gpt2_lm):
    preprocessor = gpt2_lm.preprocessor
    tok = preprocessor.tokenizer
    x, y, weight = preprocessor({"prompts": ["where are you", "the dog"],
                                 "responses": [" i forgot", " jumped over the fox"]},
                                sequence_length=16)
    for row, (prompt, response) in enumerate([("where are you", " i forgot"),
                                              ("the dog", " jumped over the fox")]):
        prompt_ids = [tok.start_token_id] + tok(prompt).tolist()
        response_ids = tok(response).tolist() + [tok.end_token_id]
        full = prompt_ids + response_ids
        assert x["token_ids"][row, :len(full)].tolist() == full
        assert y[row, :len(full) - 1].tolist() == full[1:]
        # Labels predicting prompt tokens weigh 0; the response and its end token weigh 1.
        want = [0.0] * (len(prompt_ids) - 1) + [1.0] * len(response_ids)
        assert weight[row, :len(full) - 1].tolist() == want
        assert not weight[row, len(full) - 1:].any()
    with pytest.raises(ValueError, match="pair up"):
        preprocessor({"prompts": ["a", "b"], "responses": ["c"]})
    # `fit` takes the same dict (KerasHub's form).
    gpt2_lm.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = gpt2_lm.fit({"prompts": ["where are you"] * 4, "responses": [" i forgot"] * 4},
                          batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_chat_turns_are_marked_from_the_template(tmp_path):
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, "qwen"))
    preprocessor = lm.preprocessor
    tok = preprocessor.tokenizer
    messages = [{"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Another?"},
                {"role": "assistant", "content": "Green."}]
    segments = chat_segments(preprocessor, messages, "test")
    ids = [t for seg, _ in segments for t in seg]
    whole = preprocessor.apply_chat_template(messages, add_generation_prompt=False)
    assert ids == tok.tokenize_with_special_tokens(whole)
    trained = [tok._decode(list(seg)) for seg, flag in segments if flag]
    assert trained == ["Blue.<|im_end|>\n", "Green.<|im_end|>\n"]
    assert "Name a colour." in tok._decode([t for seg, f in segments if not f for t in seg])
    with pytest.raises(DataError, match="no assistant"):
        chat_segments(preprocessor, messages[:1], "test")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        load_examples(preprocessor, str(bad))
    bad.write_text('{"text": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_examples(preprocessor, str(bad))


def _options(tmp_path, preset, **overrides):
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    evaluation = write_jsonl(tmp_path / "eval.jsonl", ROWS[:4])
    settings = dict(data=data, eval_data=evaluation, out=str(tmp_path / "run"), preset=preset,
                    lora_rank=4, epochs=2, batch_size=4, learning_rate=5e-3,
                    sequence_length=24)
    settings.update(overrides)
    return FinetuneOptions(**settings)


def _trained_weights(out):
    from keras_lm.presets.safetensors_io import SafetensorsFile

    stored = SafetensorsFile(os.path.join(out, "checkpoint", "trainable.safetensors"))
    return {k: stored.get(k) for k in stored.keys()}


@pytest.mark.tensorflow
def test_lora_job_learns_resumes_and_merges(tmp_path, gpt2_preset):
    options = _options(tmp_path, gpt2_preset, epochs=3)
    result = run_finetune(options, progress=False, log=lambda *_: None)
    metrics = [json.loads(line) for line in open(os.path.join(options.out, "metrics.jsonl"))]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["eval_loss"] < metrics[0]["eval_loss"]
    assert result.steps == 9 and os.path.isfile(result.adapter_file)
    # The merged preset equals the base with the adapters: same logits, no LoRA left.
    merged = keras_lm.models.CausalLM.from_preset(result.model_dir)
    assert merged.backbone._lora_rank is None
    adapted = keras_lm.models.CausalLM.from_preset(gpt2_preset)
    adapted.backbone.load_lora_weights(result.adapter_file)
    ids = [[1, 5, 9, 3, 7, 2]]
    np.testing.assert_allclose(logits(merged, ids), logits(adapted, ids), atol=2e-5)
    base = keras_lm.models.CausalLM.from_preset(gpt2_preset)
    assert np.abs(logits(merged, ids) - logits(base, ids)).max() > 1e-3
    assert merged.generate("where are you", max_length=12)

    # Stopped after 4 steps, then run again: it resumes and ends on the same weights.
    os.makedirs(tmp_path / "second")
    interrupted = _options(tmp_path / "second", gpt2_preset, epochs=3, max_steps=4)
    run_finetune(interrupted, progress=False, log=lambda *_: None)
    lines = []
    resumed = run_finetune(_options(tmp_path / "second", gpt2_preset, epochs=3),
                           progress=False, log=lines.append)
    assert any("Resuming at step 4 of 9" in line for line in lines)
    assert resumed.steps == 9
    first, second = _trained_weights(options.out), _trained_weights(interrupted.out)
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_allclose(first[key], second[key], atol=1e-5, err_msg=key)


def test_output_folder_is_never_taken_over(tmp_path, gpt2_preset):
    options = _options(tmp_path, gpt2_preset, max_steps=1, epochs=1)
    os.makedirs(options.out)
    foreign = os.path.join(options.out, "notes.txt")
    with open(foreign, "w") as f:
        f.write("mine")
    with pytest.raises(ValueError, match="did not write"):
        run_finetune(options, progress=False, log=lambda *_: None)
    assert open(foreign).read() == "mine"
    os.remove(foreign)
    run_finetune(options, progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="other settings.*lora_rank"):
        run_finetune(_options(tmp_path, gpt2_preset, max_steps=1, epochs=1, lora_rank=2),
                     progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="only with LoRA"):
        run_finetune(_options(tmp_path, gpt2_preset, lora_rank=0, quantize="int8"))


@pytest.mark.tensorflow
def test_lora_on_an_int8_base_and_full_finetuning(tmp_path, gpt2_preset):
    options = _options(tmp_path, gpt2_preset, quantize="int8", epochs=2)
    result = run_finetune(options, progress=False, log=lambda *_: None)
    metrics = [json.loads(line) for line in open(os.path.join(options.out, "metrics.jsonl"))]
    assert metrics[-1]["eval_loss"] < metrics[0]["eval_loss"]
    trained = _trained_weights(options.out)
    assert trained and all("lora_kernel" in key for key in trained)  # the int8 base is frozen
    # The merged model is the float base plus the adapters trained over int8.
    merged = keras_lm.models.CausalLM.from_preset(result.model_dir)
    adapted = keras_lm.models.CausalLM.from_preset(gpt2_preset)
    adapted.backbone.load_lora_weights(result.adapter_file)
    ids = [[1, 5, 9, 3, 7, 2]]
    np.testing.assert_allclose(logits(merged, ids), logits(adapted, ids), atol=2e-5)

    os.makedirs(tmp_path / "full")
    full = _options(tmp_path / "full", gpt2_preset, lora_rank=0, epochs=2, learning_rate=1e-3)
    result = run_finetune(full, progress=False, log=lambda *_: None)
    assert result.adapter_file is None
    trained = _trained_weights(full.out)
    assert any(key.endswith("embeddings") for key in trained)
    reloaded = keras_lm.models.CausalLM.from_preset(result.model_dir)
    key = next(k for k in trained if k.endswith("query/kernel"))
    variable = next(v for v in reloaded.backbone.weights if v.path == key)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), trained[key], atol=1e-6)


@pytest.mark.tensorflow
@pytest.mark.parametrize("mode", ["full", "list_of_layers", "larger_than"])
def test_remat_scope_gives_the_same_training_steps(gpt2_tokenizer, mode):
    """Models built under `keras.RematScope` train to the same weights, dropout included
    (its masks must be the same in the recomputation and as without remat)."""
    from families import tiny_gpt2_backbone

    scope = dict(full=dict(mode="full"), larger_than=dict(mode="larger_than",
                                                          output_size_threshold=100),
                 list_of_layers=dict(mode="list_of_layers",
                                     layer_names=["transformer_layer_0", "feedforward"]))[mode]

    def train(remat):
        keras.utils.set_random_seed(3)
        if remat:
            with keras.RematScope(**scope):
                backbone = tiny_gpt2_backbone(gpt2_tokenizer.vocabulary_size(), dropout=0.1)
        else:
            backbone = tiny_gpt2_backbone(gpt2_tokenizer.vocabulary_size(), dropout=0.1)
        preprocessor = keras_lm.models.GPT2CausalLMPreprocessor(gpt2_tokenizer,
                                                                 sequence_length=16)
        lm = keras_lm.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
        lm.compile(optimizer=keras.optimizers.SGD(0.5))
        lm.fit(["the quick brown fox", "where are you"], batch_size=2, epochs=2, verbose=0)
        return [keras.ops.convert_to_numpy(v) for v in lm.backbone.trainable_weights]

    plain = train(False)
    for before, after in zip(plain, train(True), strict=True):
        np.testing.assert_allclose(after, before, atol=1e-5)
    initial = keras_lm.models.GPT2Backbone.from_config(
        tiny_gpt2_backbone(gpt2_tokenizer.vocabulary_size(), dropout=0.1).get_config())
    assert len(initial.trainable_weights) == len(plain)


def test_finetune_command_then_generate(tmp_path, gpt2_preset, capsys):
    from keras_lm.cli import main

    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    out = str(tmp_path / "run")
    assert main(["finetune", "--preset", gpt2_preset, "--data", data, "--out", out,
                 "--lora-rank", "2", "--batch-size", "3", "--pack",
                 "--sequence-length", "16"]) == 0
    printed = capsys.readouterr().out
    assert "steps, train loss" in printed and os.path.join(out, "model") in printed
    assert main(["generate", "--preset", os.path.join(out, "model"), "where are you",
                 "--max-new-tokens", "4"]) == 0
    assert main(["finetune", "--data", str(tmp_path / "missing.jsonl"), "--out", out]) == 2
    assert "Data file not found" in capsys.readouterr().err


def input_gradient(fn, x):
    """d sum(fn(x)^2) / dx on the current backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: (fn(v) ** 2).sum())(x))
    if backend == "torch":
        import torch

        v = torch.tensor(x, requires_grad=True)
        (fn(v) ** 2).sum().backward()
        return v.grad.numpy()
    import tensorflow as tf

    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fn(v) ** 2)
    return tape.gradient(loss, v).numpy()


@pytest.mark.tensorflow
@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("tied", [True, False])
def test_gradients_flow_through_a_quantized_head(mode, tied):
    """Upstream of a quantized head (every LoRA adapter of a quantized base) the gradient is
    that of the float product with the dequantized weights: not zero from rounding the
    activations, and present where a fast kernel computes the logits."""
    from keras_lm.layers.embedding import ReversibleEmbedding

    keras.utils.set_random_seed(0)
    head = ReversibleEmbedding(50, 16, tie_weights=tied)
    head.build((None, None))
    x = np.random.default_rng(0).normal(size=(2, 3, 16)).astype("float32")
    with _quiet():
        head.quantize(mode)
    dequantized = keras.ops.convert_to_numpy(_dequantized_head(head))
    want = 2 * np.einsum("btv,dv->btd", x @ dequantized, dequantized)
    got = input_gradient(lambda v: head(v, reverse=True), x)
    # The forward may round activations (int8) or run in bfloat16 (torch's 4-bit kernel).
    np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05 * np.abs(want).max())


def _dequantized_head(head):
    from keras_lm.layers.int4 import dense_kernel

    if head.quantization_mode == "int4":
        return keras.ops.transpose(dense_kernel(*head.int4_weights()))
    if head.tie_weights:
        kernel, scale = keras.ops.transpose(head._embeddings), head.embeddings_scale
    else:
        kernel, scale = head.reverse_embeddings, head.reverse_embeddings_scale
    return keras.ops.cast(kernel, "float32") / scale


class _quiet:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)
