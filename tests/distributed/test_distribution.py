"""Keras distribution on 8 virtual CPU devices (JAX): `get_layout_map` shards every family's
weights as it says, and `fit`, `score` and `generate` under `ModelParallel` (a 2 x 4 mesh) and
`DataParallel` give what one device gives, without gathering the weights or the KV cache."""

import keras
import numpy as np
import pytest
from families import FAMILIES, family

import keras_lm

MESH_SHAPE = (2, 4)  # ("batch", "model")


@pytest.fixture(autouse=True)
def no_distribution_after():
    yield
    keras.distribution.set_distribution(None)


def mesh():
    import jax

    return keras.distribution.DeviceMesh(MESH_SHAPE, ["batch", "model"], jax.devices()[:8])


def model_parallel(backbone_cls):
    layouts = backbone_cls.get_layout_map(mesh())
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="batch"))
    return layouts


def spec(variable):
    return tuple(variable.value.sharding.spec)


def expected_spec(layouts, variable):
    layout = layouts[variable.path]
    axes = tuple(layout.axes) if layout is not None else ()
    # JAX drops trailing unsharded axes from a PartitionSpec.
    while axes and axes[-1] is None:
        axes = axes[:-1]
    return axes


def assert_sharded_as_mapped(backbone, layouts):
    for variable in backbone.weights:
        got = spec(variable)
        while got and got[-1] is None:
            got = got[:-1]
        assert got == expected_spec(layouts, variable), variable.path


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_layout_map_shards_every_family(name):
    backbone_cls, _, args, _ = family(name)
    layouts = model_parallel(backbone_cls)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backbone = backbone_cls(**args)
    # A head count the 4-way model axis does not divide is replicated, and said so.
    heads = {"query_heads": backbone.num_query_heads,
             "key_value_heads": backbone.num_key_value_heads}
    undivided = {name for name, n in heads.items() if n % 4}
    assert {dimension for _, dimension in layouts.replicated} == undivided
    assert any("does not divide" in str(w.message) for w in caught) == bool(undivided)
    assert_sharded_as_mapped(backbone, layouts)
    table = backbone.token_embedding.embeddings
    assert spec(table) == ("model", "batch")
    vocabulary, hidden = table.shape
    shards = table.value.addressable_shards
    assert len(shards) == 8 and shards[0].data.shape == (vocabulary // 4, hidden // 2)
    query = next(v for v in backbone.weights if v.path.endswith("attention/query/kernel"))
    assert spec(query)[:2] == ("batch", None if backbone.num_query_heads % 4 else "model")
    gate = [v for v in backbone.weights
            if v.path.endswith(("feedforward/intermediate/kernel", "feedforward/gate/kernel"))]
    assert gate and all(spec(v) == ("batch", "model") for v in gate)
    backbone.enable_lora(2)
    assert_sharded_as_mapped(backbone, layouts)
    adapter = next(v for v in backbone.weights if v.path.endswith("query/lora_kernel_a"))
    assert spec(adapter)[:2] == spec(query)[:2]


def _twin(name, distribute, **overrides):
    """`(one-device model, distributed model)` of family `name` with the same weights."""
    import warnings

    backbone_cls, lm_cls, args, _ = family(name)
    args = {**args, **overrides}
    keras.utils.set_random_seed(0)
    single = lm_cls(backbone=backbone_cls(**args))
    single.compile(sampler="greedy")
    layouts = distribute(backbone_cls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a dimension left whole on the model axis
        distributed = lm_cls(backbone=backbone_cls(**args))
    for target, source in zip(distributed.weights, single.weights, strict=True):
        target.assign(np.array(source.value))  # a copy: training donates buffers
    distributed.compile(sampler="greedy")
    return single, distributed, layouts


class one_device:
    """No distribution inside (the one-device model's optimizer and caches stay local)."""

    def __enter__(self):
        self.saved = keras.distribution.distribution()
        keras.distribution.set_distribution(None)

    def __exit__(self, *exc):
        keras.distribution.set_distribution(self.saved)


def data_parallel(backbone_cls):
    import jax

    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices()[:8]))
    return None


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 40, (8, 12)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # some left padding
    return {"token_ids": ids, "padding_mask": mask}


def _train(lm, steps=3):
    x = _batch()
    y = np.roll(x["token_ids"], -1, axis=1)
    lm.compile(optimizer=keras.optimizers.SGD(0.5), sampler="greedy")
    history = lm.fit(x, y, batch_size=8, epochs=steps, verbose=0, shuffle=False)
    return history.history["loss"]


def _generate(lm):
    x = _batch()
    prompts = {"token_ids": x["token_ids"][:, :6], "padding_mask": x["padding_mask"][:, :6]}
    return np.asarray(lm.generate(prompts, max_length=14)["token_ids"])


@pytest.mark.parametrize("name,distribute", [("llama", model_parallel),
                                             ("gemma3", model_parallel),
                                             ("gpt2", data_parallel)])
def test_fit_score_and_generate_equal_one_device(name, distribute):
    single, distributed, layouts = _twin(name, distribute, dropout=0.0)
    x = _batch()
    with one_device():
        tokens, scores = _generate(single), np.asarray(single.score(**x))
        losses = _train(single)
        tokens_after = _generate(single)
    # Same greedy tokens and scores (float32 sums in another order).
    np.testing.assert_array_equal(_generate(distributed), tokens)
    np.testing.assert_allclose(np.asarray(distributed.score(**x)), scores, atol=1e-4)
    # Same losses over a few training steps, and the same weights after them.
    np.testing.assert_allclose(_train(distributed), losses, rtol=1e-4)
    for target, source in zip(distributed.weights, single.weights, strict=True):
        np.testing.assert_allclose(np.asarray(target.value), np.asarray(source.value),
                                   atol=1e-4, err_msg=target.path)
    np.testing.assert_array_equal(_generate(distributed), tokens_after)
    # Training and generating kept every weight where the layout put it.
    if layouts is not None:
        assert_sharded_as_mapped(distributed.backbone, layouts)
    else:
        assert all(v.value.sharding.is_fully_replicated for v in distributed.weights)


def test_kv_cache_is_sharded_by_sequences_and_heads():
    import keras_lm.samplers as samplers

    _, lm, _ = _twin("llama", model_parallel, num_query_heads=4, num_key_value_heads=4)
    x = _batch()
    tokens = x["token_ids"][:2, :6]
    positions = np.tile(np.arange(6, dtype="int32"), (2, 1))
    _, _, caches = lm._engine.run_prefill(samplers.get("greedy"), tokens, positions,
                                          np.zeros(2, "int32"), 16)
    # Batch 2 on a 2-way data axis, 4 heads on a 4-way model axis: one (sequence, head) each.
    keys = caches[0][0]
    assert tuple(keys.sharding.spec)[0] == ("batch", "model")
    assert {shard.data.shape[0] for shard in keys.addressable_shards} == {1}
    _, lm, _ = _twin("llama", model_parallel)
    _, _, caches = lm._engine.run_prefill(samplers.get("greedy"), x["token_ids"][:, :6],
                                          np.tile(np.arange(6, dtype="int32"), (8, 1)),
                                          np.zeros(8, "int32"), 16)
    assert tuple(caches[0][0].sharding.spec)[0] == "batch"
    assert len(caches[0][0].addressable_shards) == 8


def test_layout_map_rejects_a_mesh_without_the_axes():
    with pytest.raises(ValueError, match="no axis 'model'"):
        keras_lm.models.GemmaBackbone.get_layout_map(
            keras.distribution.DeviceMesh((8,), ["batch"], mesh().devices.flatten().tolist()))
