"""Torch inference fast paths: block-split / oneDNN matmuls and the traced decode step."""

import numpy as np
import pytest

from tests.conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="torch backend only")


@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("shape,transposed", [((96, 4099), False), ((96, 4099), True),
                                              ((2048, 512), False), ((16, 8), False)])
def test_matmul_matches_torch(rows, shape, transposed):
    import torch

    from keras_lm.backend import ops as fast_ops
    from keras_lm.backend import torch_kernels

    assert fast_ops.matmul is torch_kernels.matmul
    generator = torch.Generator().manual_seed(0)
    k, n = shape
    kernel = (torch.randn(n, k, generator=generator).T if transposed
              else torch.randn(k, n, generator=generator))
    x = torch.randn(rows, 1, k, generator=generator)
    with torch.no_grad():
        ours = torch_kernels.matmul(x, kernel)
    expected = torch.matmul(x.double(), kernel.double()).float()
    assert ours.shape == (rows, 1, n)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-3)


def test_matmul_keeps_gradients_and_dtype_rules():
    import torch

    from keras_lm.backend import torch_kernels

    kernel = torch.randn(96, 4099, requires_grad=True)
    x = torch.randn(1, 96)
    torch_kernels.matmul(x, kernel).sum().backward()
    np.testing.assert_allclose(kernel.grad.numpy(), np.repeat(x.numpy().T, 4099, axis=1),
                               rtol=1e-6)
    ints = torch_kernels.matmul(torch.ones(2, 3, dtype=torch.int32),
                               torch.ones(3, 4, dtype=torch.int32))
    assert ints.dtype == torch.int32 and int(ints[0, 0]) == 3


def test_decode_step_is_traced_once_per_shape_and_reads_current_weights(gpt2_lm, monkeypatch):
    import keras
    import torch

    traces = []
    real_trace = torch.jit.trace
    monkeypatch.setattr(torch.jit, "trace", lambda *a, **k: traces.append(1) or real_trace(*a, **k))
    gpt2_lm.compile(sampler="greedy")
    prompt = "the quick brown"
    first = gpt2_lm.generate(prompt, max_length=12)
    assert gpt2_lm.generate("the lazy dog", max_length=12) is not None
    assert len(traces) == 1  # same batch and cache shape: replayed, not re-recorded

    # New weights reach the recorded step: outputs equal a fresh model holding them.
    embeddings = gpt2_lm.backbone.token_embedding.embeddings
    embeddings.assign(keras.ops.flip(embeddings.value, axis=1))
    changed = gpt2_lm.generate(prompt, max_length=12)
    fresh = type(gpt2_lm).from_config(gpt2_lm.get_config())
    fresh.set_weights(gpt2_lm.get_weights())
    fresh.compile(sampler="greedy")
    monkeypatch.setattr(torch.jit, "trace", real_trace)
    assert changed != first
    assert changed == fresh.generate(prompt, max_length=12)


def test_int8_projection_matches_the_dequantized_kernel():
    import torch

    from keras_lm.backend import torch_kernels

    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(64, 300, generator=generator)
    scale = 127.0 / weights.abs().amax(dim=0)  # Keras' convention: q = round(w * scale)
    kernel = torch.round(weights * scale).to(torch.int8)
    x = torch.randn(3, 64, generator=generator)
    owner = torch.nn.Module()  # any weak-referenceable owner of the packed copy
    with torch.no_grad():
        ours = torch_kernels.int8_projection(owner, x, kernel, scale)
    expected = x @ (kernel.float() / scale)
    # Inputs are quantized to 7 bits on the fly (FBGEMM's reduce_range): ~1% error.
    assert torch.abs(ours - expected).max() < 0.03 * torch.abs(expected).max()
    assert torch_kernels.int8_projection(owner, x.requires_grad_(), kernel, scale) is None


def test_decode_layout_keeps_values_parameters_training_and_saving(gpt2_lm, monkeypatch,
                                                                   tmp_path):
    import keras

    from keras_lm.backend import torch_kernels
    from keras_lm.models import CausalLM

    monkeypatch.setattr(torch_kernels, "_MIN_SPLIT_ELEMENTS", 0)  # tiny kernels qualify too
    gpt2_lm.compile(sampler="greedy")
    layers = [layer for layer in gpt2_lm.backbone._flatten_layers()
              if getattr(layer, "kernel_rows", None)]
    kernels = [layer.stored_kernel for layer in layers]
    params = [k.value for k in kernels]
    before = [keras.ops.convert_to_numpy(k) for k in kernels]
    scores = keras.ops.convert_to_numpy(gpt2_lm.score(np.array([[5, 9, 13, 2]])))
    text = gpt2_lm.generate("the quick brown", max_length=12)

    for layer, param, value in zip(layers, params, before, strict=True):
        assert layer.stored_kernel.value is param  # same Parameter: optimizers keep their handle
        # Stored as the transpose of a row-major [outputs, contracted] matrix.
        assert param.reshape(layer.kernel_rows, -1).stride() == (1, layer.kernel_rows)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.stored_kernel), value)
    after = keras.ops.convert_to_numpy(gpt2_lm.score(np.array([[5, 9, 13, 2]])))
    np.testing.assert_allclose(after, scores, atol=1e-5)

    # The same tokens as a model that never changed layout.
    fresh = type(gpt2_lm).from_config(gpt2_lm.get_config())
    fresh.set_weights(gpt2_lm.get_weights())
    fresh.compile(sampler="greedy")
    monkeypatch.setattr(torch_kernels, "row_major_kernels", lambda kernels: 0)
    assert fresh.generate("the quick brown", max_length=12) == text

    # Saving and training still work on the re-laid-out variables.
    gpt2_lm.save_to_preset(str(tmp_path / "preset"))
    loaded = CausalLM.from_preset(str(tmp_path / "preset"))
    for a, b in zip(loaded.get_weights(), gpt2_lm.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    gpt2_lm.compile(optimizer=keras.optimizers.SGD(0.1), sampler="greedy")
    gpt2_lm.fit(["the quick brown fox"], epochs=1, verbose=0)
    assert not np.array_equal(keras.ops.convert_to_numpy(kernels[0]), before[0])


def test_recorded_step_has_no_shape_arithmetic_and_matches_eager(gpt2_lm):
    import keras
    import torch

    from keras_lm.backend.direct_call import direct_layer_calls
    from keras_lm.generation.compile import TracedStep

    engine = gpt2_lm._engine
    backbone = gpt2_lm.backbone

    def step_inputs():
        caches = backbone.empty_cache(2, 16)
        for keys, values in caches:  # a prefix already in the cache
            keys.normal_()
            values.normal_()
        flat = [t for pair in caches for t in pair]
        return (torch.tensor([[3], [7]], dtype=torch.int32), torch.tensor([[5], [2]]).int(),
                torch.tensor(5, dtype=torch.int32), torch.tensor([0, 3], dtype=torch.int32),
                *flat)

    torch.manual_seed(0)
    eager_inputs = step_inputs()
    torch.manual_seed(0)
    traced_inputs = step_inputs()
    step = TracedStep(engine.next_logits, gpt2_lm.variables)
    with direct_layer_calls(True), torch.no_grad():
        expected = engine.next_logits(*eager_inputs)
        got = step(*traced_inputs)
    (recorded,) = step._traced.values()
    kinds = {node.kind() for node in recorded.graph.nodes()}
    assert "aten::size" not in kinds and "aten::Int" not in kinds
    for a, b in zip(got, expected, strict=True):  # logits and every updated cache
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   atol=1e-5)


@pytest.mark.parametrize("kind", ["attention", "gated_mlp"])
def test_joint_projection_over_side_by_side_kernels_matches_separate_calls(kind, monkeypatch):
    import keras
    import torch

    from keras_lm.backend import torch_kernels
    from keras_lm.backend.direct_call import direct_layer_calls, invoke, invoke_together
    from keras_lm.layers.attention import CachedAttention
    from keras_lm.layers.feedforward import FeedForward

    monkeypatch.setattr(torch_kernels, "_MIN_SPLIT_ELEMENTS", 0)
    keras.utils.set_random_seed(0)
    if kind == "attention":
        layer = CachedAttention(num_query_heads=4, num_key_value_heads=2, head_dim=8,
                                use_bias=True)
        layer.build((None, None, 24))
        members = [layer.query, layer.key, layer.value]
    else:
        layer = FeedForward(intermediate_dim=40, activation="silu", gated=True)
        layer.build((None, None, 24))
        members = [layer.gate, layer.intermediate]
    for member in members:  # non-zero biases, so each piece must get its own
        if member.bias is not None:
            member.bias.assign(keras.random.normal(member.bias.shape))
    x = torch.randn(3, 2, 24)
    with torch.no_grad(), direct_layer_calls(True):
        separate = [invoke(m, x) for m in members]
        assert torch_kernels.joint_projection(members, x) is None  # not side by side yet
        changed = torch_kernels.row_major_kernels([[m.decode_kernel()
                                                   for m in members]])
        assert changed == len(members)
        storages = {m._kernel.value.untyped_storage().data_ptr() for m in members}
        assert len(storages) == 1
        for rows in (x, x[:1, :1]):  # several rows (oneDNN) and one row (batched GEMV)
            joint = torch_kernels.joint_projection(members, rows)
            expected = [invoke(m, rows) for m in members]
            assert joint is not None and len(joint) == len(members)
            for a, b in zip(joint, expected, strict=True):
                assert a.shape == b.shape
                np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
        for a, b in zip(invoke_together(members, x), separate, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_batched_decode_step_with_onednn_products_is_recorded(monkeypatch):
    """Several rows against a large kernel take oneDNN's linear; the recorded step must
    contain it (the tracer once rejected its arguments, leaving batched decoding eager)."""
    import warnings

    import keras
    import torch

    import keras_lm
    from keras_lm.generation import compile as compile_module

    keras.utils.set_random_seed(0)
    backbone = keras_lm.models.GPT2Backbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=512, intermediate_dim=1024,
        max_sequence_length=64)
    lm = keras_lm.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    ids = np.array([[5, 9, 11, 3], [0, 0, 7, 2]], dtype="int32")
    inputs = {"token_ids": ids, "padding_mask": ids > 0}
    recorded = []
    real_trace = compile_module.TracedStep._trace
    monkeypatch.setattr(compile_module.TracedStep, "_trace",
                        lambda self, *a: recorded.append(real_trace(self, *a)) or recorded[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        traced = lm.generate(inputs, max_new_tokens=6, stop_token_ids=None)
    assert recorded and all(r is not False for r in recorded)
    kinds = {node.kind() for node in recorded[0].graph.nodes()}
    assert "keras_lm::linear_rows" in kinds
    monkeypatch.setattr(compile_module.TracedStep, "_trace", lambda self, *a: False)  # eager
    eager = lm.generate(inputs, max_new_tokens=6, stop_token_ids=None)
    np.testing.assert_array_equal(traced["token_ids"], eager["token_ids"])
    assert torch.is_tensor(torch.ops.keras_lm.linear_rows(torch.ones(2, 4), torch.ones(3, 4)))


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
def test_fused_adam_takes_keras_steps(kind):
    """The fused update gives Keras' own Adam/AdamW weights and moments (epsilon outside the
    bias-corrected root, weight decay before the step), with a learning-rate schedule and
    clipping still applied by Keras; other optimizers are left alone."""
    import keras

    from keras_lm.backend.torch_optimizers import fuse_adam

    def train(fused):
        rng = np.random.default_rng(0)
        weights = [keras.Variable(rng.normal(size=(5, 3)).astype("float32")),
                   keras.Variable(rng.normal(size=(7,)).astype("float32"))]
        schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)
        extra = dict(weight_decay=0.1) if kind == "AdamW" else {}
        optimizer = getattr(keras.optimizers, kind)(schedule, epsilon=1e-3, clipnorm=1.0,
                                                     **extra)
        if fused:
            assert fuse_adam(optimizer)
        for step in range(6):
            grads = [rng.normal(size=v.shape).astype("float32") * (step + 1) for v in weights]
            optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], weights)
        return [keras.ops.convert_to_numpy(v) for v in weights + optimizer.variables[1:]]

    keras_steps, fused_steps = train(False), train(True)
    for expected, actual in zip(keras_steps, fused_steps, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    assert not fuse_adam(keras.optimizers.SGD(0.1))
    assert not fuse_adam(keras.optimizers.Adam(0.1, amsgrad=True))


def test_causal_lm_compile_fuses_adam(gpt2_lm):
    import keras

    gpt2_lm.compile(optimizer=keras.optimizers.AdamW(1e-3))
    assert getattr(gpt2_lm.optimizer, "_keras_lm_fused", False)
    x = {"token_ids": np.array([[1, 2, 3, 4]]), "padding_mask": np.ones((1, 4), bool)}
    before = keras.ops.convert_to_numpy(gpt2_lm.backbone.trainable_variables[0])
    gpt2_lm.train_on_batch(x, np.array([[2, 3, 4, 5]]))
    assert not np.allclose(keras.ops.convert_to_numpy(gpt2_lm.backbone.trainable_variables[0]),
                           before)


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("tie", [True, False])
def test_quantized_decode_step_is_recorded_and_matches_eager(mode, tie):
    """A quantized head's custom gradient (an autograd `Function`) made the tracer fail, so
    every quantized model decoded eagerly; the recorded step must exist and give the eager
    tokens."""
    import warnings

    import keras

    import keras_lm

    keras.utils.set_random_seed(3)
    backbone = keras_lm.models.LlamaBackbone(
        vocabulary_size=304, num_layers=2, num_query_heads=4, hidden_dim=64,
        intermediate_dim=96, num_key_value_heads=2, tie_word_embeddings=tie)
    lm = keras_lm.models.LlamaCausalLM(backbone=backbone)
    if not tie:
        head = backbone.token_embedding.reverse_embeddings
        head.assign(keras.random.normal(head.shape, stddev=0.5, seed=3))
    config = keras.quantizers.Int4QuantizationConfig(block_size=32) if mode == "int4" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras names layers without weights to quantize
        lm.quantize(mode, config=config)
    lm.compile(sampler="greedy")
    prompt = {"token_ids": np.array([[1, 5, 9, 200, 0, 0]], "int32"),
              "padding_mask": np.array([[1, 1, 1, 1, 0, 0]], bool)}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Decode step runs eagerly")
        recorded = lm.generate(prompt, max_new_tokens=6, stop_token_ids=None)
    steps = lm._engine._traced_steps
    assert steps and all(traced is not False for step in steps
                         for traced in step._traced.values())
    # Weights are read once per chunk and let go after it (no copy outlives a quantize).
    assert all(step._snapshot is None for step in steps)
    for step in steps:
        step.enabled = False
    eager = lm.generate(prompt, max_new_tokens=6, stop_token_ids=None)
    np.testing.assert_array_equal(recorded["token_ids"], eager["token_ids"])
