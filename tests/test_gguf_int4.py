"""GGUF 4-bit blocks kept as they are: Q4_0 / Q4_K tensors read as integer groups (checked
against the `gguf` package's own dequantization) and held exactly by `quantize("int4")`."""

import warnings

import keras
import numpy as np
import pytest

import keras_lm
from keras_lm.layers.int4 import FILE_GROUPS, dense_kernel, zero_points
from keras_lm.presets.conversion import transposed_to
from keras_lm.presets.gguf_blocks import _row_order, four_bit_groups
from tests.gguf_files import write_gguf
from tests.test_gguf import MIXED_GEMMA3_TYPES, VOCAB, write_gemma3


def _gguf_reference(raw, type_name, shape):
    import gguf

    kind = gguf.GGMLQuantizationType[type_name]
    return gguf.quants.dequantize(raw, kind).reshape(shape)


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_K"])
def test_four_bit_groups_equal_the_gguf_packages_dequantization(type_name):
    import gguf

    rng = np.random.default_rng(0)
    shape = (6, 512)
    if type_name == "Q4_0":
        raw = gguf.quants.quantize(rng.normal(size=shape).astype(np.float32),
                                   gguf.GGMLQuantizationType.Q4_0)
    else:  # random super-blocks with finite float16 d and dmin
        raw = rng.integers(0, 256, size=(shape[0] * shape[1] // 256, 144), dtype=np.uint8)
        halves = rng.uniform(-0.01, 0.01, size=(raw.shape[0], 2)).astype(np.float16)
        raw[:, :4] = halves.view(np.uint8)
    q, scale, offset = four_bit_groups(raw, type_name, shape)
    assert q.dtype == np.int8 and q.min() >= -8 and q.max() <= 7
    assert scale.shape == offset.shape == (6, 16)
    ours = (q.reshape(6, 16, 32) * scale[..., None] + offset[..., None]).reshape(shape)
    np.testing.assert_allclose(ours, _gguf_reference(raw, type_name, shape), rtol=1e-6,
                               atol=1e-7)


def test_zero_points_hold_constant_groups_exactly():
    q = np.arange(64, dtype=np.int8).reshape(1, 64) % 16 - 8
    scale = np.array([[0.0, 0.5]], np.float32)
    offset = np.array([[-0.25, 0.125]], np.float32)  # group 0: every value is -0.25
    q2, scale2, zero = zero_points(q, scale, offset)
    values = (q2.reshape(1, 2, 32) - zero[..., None]) * scale2[..., None]
    expected = q.reshape(1, 2, 32) * scale[..., None] + offset[..., None]
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_row_order_accepts_transposes_with_row_permutations_only():
    transform = transposed_to((8, 2, 3), (8, 6))
    np.testing.assert_array_equal(_row_order(transform, 6, 8), np.arange(6))
    permuted = _row_order(lambda w: transform(w[[1, 0, 3, 2, 5, 4]]), 6, 8)
    np.testing.assert_array_equal(permuted, [1, 0, 3, 2, 5, 4])
    assert _row_order(lambda w: w, 8, 8) is None  # a kernel stored as in the file: not groups
    assert _row_order(lambda w: w[:, ::-1].T, 6, 8) is None  # values reordered within rows


def _quantize(lm, config=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras names layers without weights to quantize
        lm.quantize("int4", config=config)


def _kernel(layer):
    """A projection's kernel as `[contracted rows, outputs]` floats (int4 dequantized)."""
    if layer.quantization_mode == "int4":
        return keras.ops.convert_to_numpy(dense_kernel(*layer.int4_weights())).T
    return keras.ops.convert_to_numpy(layer.stored_kernel.value).reshape(layer.kernel_rows, -1)


def _scores(lm, ids):
    return keras.ops.convert_to_numpy(lm.score(ids))


@pytest.mark.tensorflow
def test_int4_keeps_a_gguf_files_four_bit_blocks_exactly_and_reloads(tmp_path):
    path = tmp_path / "tiny-gemma3.gguf"
    write_gemma3(path, MIXED_GEMMA3_TYPES)
    lm = keras_lm.models.CausalLM.from_preset(str(path))
    block = lm.backbone.get_layer("transformer_layer_0")
    from_file = {"Q4_K": block.attention.query, "Q4_0": block.feedforward.gate}
    requantized = block.attention.key  # Q5_K in the file: rounded to 4 bits by Keras' rule
    before = {name: _kernel(layer) for name, layer in
              [*from_file.items(), ("Q5_K", requantized)]}
    ids = np.array([[2, 5, 9, 17, 33, 40, 61]], "int32")
    float_scores = _scores(lm, ids)
    _quantize(lm)  # Keras' default asks for groups of 128: the file's groups of 32 win
    for name, layer in from_file.items():
        assert layer.quantization_mode == "int4" and layer not in FILE_GROUPS
        assert layer.dtype_policy.name.startswith("int4/32")
        np.testing.assert_allclose(_kernel(layer), before[name], rtol=1e-6, atol=1e-7)
    assert np.abs(_kernel(requantized) - before["Q5_K"]).max() > 1e-4
    quantized_scores = _scores(lm, ids)
    # The rest (the 64-wide table and head included) is rounded to 4 bits in groups of 128.
    assert np.corrcoef(quantized_scores.ravel(), float_scores.ravel())[0, 1] > 0.8

    lm.save_to_preset(str(tmp_path / "int4"))
    restored = keras_lm.models.CausalLM.from_preset(str(tmp_path / "int4"))
    layer = restored.backbone.get_layer("transformer_layer_0").attention.query
    assert keras.backend.standardize_dtype(layer.kernel_zero.dtype) == "float32"
    np.testing.assert_allclose(_kernel(layer), before["Q4_K"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_scores(restored, ids), quantized_scores, atol=1e-5)


def test_one_scale_per_row_ignores_the_files_groups(tmp_path):
    path = tmp_path / "tiny-gemma3.gguf"
    write_gemma3(path, MIXED_GEMMA3_TYPES)
    lm = keras_lm.models.CausalLM.from_preset(str(path))
    query = lm.backbone.get_layer("transformer_layer_0").attention.query
    before = _kernel(query)
    _quantize(lm, keras.quantizers.Int4QuantizationConfig(block_size=-1))
    assert query.dtype_policy.name.startswith("int4/-1")
    assert np.abs(_kernel(query) - before).max() > 1e-4


def test_llama_q4_0_rows_follow_the_undone_permutation(tmp_path):
    import torch
    import transformers

    from tests.conftest import sentencepiece_proto
    from tests.gguf_files import llama_gguf_tensors, sentencepiece_metadata

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rope_theta=10000.0)
    model = transformers.LlamaForCausalLM(config).eval()
    metadata = {"context_length": 128, "embedding_length": 64, "block_count": 1,
                "feed_forward_length": 96, "attention.head_count": 4,
                "attention.head_count_kv": 2, "rope.dimension_count": 16,
                "attention.layer_norm_rms_epsilon": 1e-6, "rope.freq_base": 10000.0,
                **sentencepiece_metadata(sentencepiece_proto(vocab_size=40),
                                         add_space_prefix=True, size=VOCAB)}
    path = tmp_path / "tiny-llama.gguf"
    write_gguf(path, "llama", metadata, llama_gguf_tensors(model),
               {"blk.0.attn_q.weight": "Q4_0", "blk.0.attn_k.weight": "Q4_0"})
    lm = keras_lm.models.CausalLM.from_preset(str(path))
    attention = lm.backbone.get_layer("transformer_layer_0").attention
    before = [_kernel(attention.query), _kernel(attention.key)]
    _quantize(lm, keras.quantizers.Int4QuantizationConfig(block_size=32))
    for layer, expected in zip([attention.query, attention.key], before, strict=True):
        np.testing.assert_allclose(_kernel(layer), expected, rtol=1e-6, atol=1e-7)
