"""The conformance suite every family runs: shapes, cache equivalence, round trips, compiles."""

import keras
import numpy as np
import pytest

import keras_lm
from tests import families
from tests.conftest import random_ids

pytestmark = pytest.mark.tensorflow

VOCAB = families.VOCAB


@pytest.fixture(params=sorted(families.FAMILIES))
def family(request):
    keras.utils.set_random_seed(0)
    return families.family(request.param)


@pytest.fixture
def shared_lm(family, family_lms):
    """The family's tiny model, built once per test session (its compiled generation functions
    are reused across tests): for tests that do not change it."""
    return family_lms(family)


def test_shapes_and_dtypes(family, shared_lm):
    lm = shared_lm
    ids = random_ids(2, 7, VOCAB)
    hidden = lm.backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    assert tuple(hidden.shape) == (2, 7, family.args["hidden_dim"])
    assert keras.backend.standardize_dtype(hidden.dtype) == "float32"
    logits = lm({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    assert tuple(logits.shape) == (2, 7, VOCAB)


def test_fresh_weights_are_distinct(family):
    """One initializer serves many variables; each must still get its own random values
    (an unseeded Keras initializer reuses its seed, so shared instances gave equal layers)."""
    backbone_cls, _, args, non_default = family
    backbone = backbone_cls(**{**args, **non_default})
    random = [(v.path, keras.ops.convert_to_numpy(v.value)) for v in backbone.weights]
    random = [(path, value) for path, value in random if value.size > 1 and value.std() > 0]
    assert len(random) > 4 * args["num_layers"]
    for i, (path, value) in enumerate(random):
        for other_path, other in random[:i]:
            if other.size == value.size:
                assert not np.array_equal(other.ravel(), value.ravel()), (path, other_path)
                assert not np.array_equal(other.ravel()[:8], value.ravel()[:8]), (path, other_path)


def test_a_backbone_built_for_loading_draws_nothing_at_random(family):
    """Inside `weights_to_be_loaded` (what `from_preset` uses before reading a checkpoint)
    no variable is drawn at random: each holds one constant (zeros, or ones for scales)."""
    from keras_lm.layers.initializers import weights_to_be_loaded

    backbone_cls, _, args, non_default = family
    with weights_to_be_loaded():
        backbone = backbone_cls(**{**args, **non_default})
    varied = [v.path for v in backbone.weights
              if np.unique(keras.ops.convert_to_numpy(v.value)).size > 1]
    assert varied == []
    assert len(backbone.weights) > 4 * args["num_layers"]


def test_cached_decoding_equals_full_forward(shared_lm):
    lm = shared_lm
    ids = random_ids(2, 10, VOCAB)
    full = keras.ops.convert_to_numpy(lm.score(ids))
    engine = lm._engine
    caches = lm.backbone.empty_cache(2, 16)
    prefix = 6
    pad = keras.ops.zeros((2,), "int32")
    positions = np.tile(np.arange(10, dtype="int32"), (2, 1))
    hidden, caches = engine.forward_step(ids[:, :prefix], positions[:, :prefix], caches, 0, pad)
    stepwise = [keras.ops.convert_to_numpy(lm.backbone.logits(hidden))]
    for t in range(prefix, 10):
        hidden, caches = engine.forward_step(ids[:, t : t + 1], positions[:, t : t + 1], caches,
                                             t, pad)
        stepwise.append(keras.ops.convert_to_numpy(lm.backbone.logits(hidden)))
    np.testing.assert_allclose(np.concatenate(stepwise, axis=1), full, atol=1e-4)


def test_config_round_trip_with_non_default_values(family):
    backbone_cls, _, args, non_default = family
    backbone = backbone_cls(**{**args, **non_default})
    config = backbone.get_config()
    for key, value in non_default.items():
        assert config[key] == value
    rebuilt = backbone_cls.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.count_params() == backbone.count_params()


def test_save_and_load_gives_identical_outputs(family, shared_lm, tmp_path):
    lm, lm_cls = shared_lm, family.lm_cls
    ids = random_ids(1, 5, VOCAB)
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    lm.save_to_preset(str(tmp_path / "p"))
    loaded = keras_lm.models.CausalLM.from_preset(str(tmp_path / "p"))
    assert type(loaded) is lm_cls
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(lm(x))
    )


def test_generate_does_not_recompile(shared_lm):
    """JAX/TF compile, torch records its decode step with TorchScript: once per shape."""
    lm = shared_lm
    lm.compile(sampler="greedy")

    def prompt(n, seed):
        ids = np.zeros((2, 24), "int32")
        ids[:, :n] = random_ids(2, n, VOCAB, seed)
        mask = np.zeros((2, 24), bool)
        mask[:, :n] = True
        return {"token_ids": ids, "padding_mask": mask}

    lm.generate(prompt(5, 0), stop_token_ids=None)
    traces = lm._engine.trace_count()
    assert traces > 0  # something was compiled or recorded
    lm.generate(prompt(5, 1), stop_token_ids=None)
    lm.generate(prompt(7, 2), stop_token_ids=None)  # same prompt bucket
    assert lm._engine.trace_count() == traces


def test_ragged_batch_equals_one_by_one(shared_lm):
    lm = shared_lm
    lm.compile(sampler="greedy")
    lengths = (2, 9, 5)
    width = 30
    ids = np.zeros((3, width), "int32")
    mask = np.zeros((3, width), bool)
    for i, n in enumerate(lengths):
        ids[i, :n] = random_ids(1, n, VOCAB, seed=10 + i)[0]
        mask[i, :n] = True
    together = lm.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)
    for i in range(3):
        alone = lm.generate(
            {"token_ids": ids[i : i + 1], "padding_mask": mask[i : i + 1]}, stop_token_ids=None
        )
        np.testing.assert_array_equal(together["token_ids"][i], alone["token_ids"][0])


def test_training_step_reduces_loss(family):
    backbone_cls, lm_cls, args, _ = family
    lm = lm_cls(backbone=backbone_cls(**{**args, "dropout": 0.0}))
    lm.compile(optimizer=keras.optimizers.Adam(1e-2), sampler="greedy")
    ids = random_ids(4, 8, VOCAB)
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    y = np.roll(ids, -1, axis=1)
    history = lm.fit(x, y, batch_size=4, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="the TensorFlow subset covers LoRA and int8 in test_lora_and_dtypes")
def test_lora_trains_only_adapters_and_int8_keeps_scores_close(family):
    """LoRA fine-tuning and int8 quantization work on every family (the seed pages' LoRA
    example; `quantize("int8")`), on a fresh model."""
    import warnings

    backbone_cls, lm_cls, args, _ = family
    lm = lm_cls(backbone=backbone_cls(**{**args, "dropout": 0.0}))
    ids = random_ids(2, 8, VOCAB)
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    frozen = [v.numpy().copy() for v in lm.backbone.weights]
    lm.backbone.enable_lora(rank=2)
    lm.compile(optimizer=keras.optimizers.Adam(1e-2), sampler="greedy")
    lm.fit(x, np.roll(ids, -1, axis=1), batch_size=2, epochs=2, verbose=0)
    assert all(np.array_equal(a, v.numpy()) for a, v in
               zip(frozen, [w for w in lm.backbone.weights if "lora" not in w.path],
                   strict=True))
    assert any(np.abs(v.numpy()).max() > 0 for v in lm.backbone.lora_variables())

    fresh = lm_cls(backbone=backbone_cls(**{**args, "dropout": 0.0}))
    before = keras.ops.convert_to_numpy(fresh.score(ids))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns for layers without weights to quantize
        fresh.quantize("int8")
    after = keras.ops.convert_to_numpy(fresh.score(ids))
    assert not np.array_equal(after, before)  # the int8 weights are what ran
    assert np.corrcoef(after.ravel(), before.ravel())[0, 1] > 0.98
    fresh.compile(sampler="greedy")
    assert fresh.generate(x, max_new_tokens=3, stop_token_ids=None)["token_ids"].shape[1] >= 8


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="the TensorFlow subset covers int4 in test_int4")
def test_int4_quantizes_every_layer(family):
    """`quantize("int4")` covers every projection and the head of every family (decoding on
    int4 weights: tests/test_int4.py)."""
    import warnings

    backbone_cls, lm_cls, args, _ = family
    lm = lm_cls(backbone=backbone_cls(**{**args, "dropout": 0.0}))
    ids = random_ids(2, 8, VOCAB)
    before = keras.ops.convert_to_numpy(lm.score(ids))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns for layers without weights to quantize
        lm.quantize("int4", config=keras.quantizers.Int4QuantizationConfig(block_size=8))
    float_kernels = [v.path for v in lm.backbone.weights
                     if v.path.endswith(("kernel", "embeddings")) and "position" not in v.path
                     and keras.backend.standardize_dtype(v.dtype) != "int8"]
    assert not float_kernels
    after = keras.ops.convert_to_numpy(lm.score(ids))
    assert not np.array_equal(after, before)
    assert np.corrcoef(after.ravel(), before.ravel())[0, 1] > 0.95
