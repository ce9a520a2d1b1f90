"""The gradient barrier at each decoder block's input (JAX): same gradients, and XLA keeps it."""

import keras
import numpy as np
import pytest
from families import tiny_gpt2_backbone

import keras_lm

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="a JAX compiler hint")


def _gradient_fn(lm):
    import jax
    import jax.numpy as jnp

    x = {"token_ids": jnp.asarray(np.arange(12).reshape(2, 6) % 30 + 1, "int32"),
         "padding_mask": jnp.asarray([[1] * 6, [1] * 4 + [0] * 2], "int32")}
    non_trainable = [v.value for v in lm.non_trainable_variables]

    def loss(trainable):
        logits, _ = lm.stateless_call(trainable, non_trainable, x, training=True)
        return (jax.nn.log_softmax(logits)[..., 3] * x["padding_mask"]).sum()

    return jax.jit(jax.grad(loss)), [v.value for v in lm.trainable_variables]


def _lm():
    # dropout 0 so both runs are deterministic
    return keras_lm.models.GPT2CausalLM(tiny_gpt2_backbone(40, num_layers=3, dropout=0.0),
                                        preprocessor=None)


def test_barrier_leaves_gradients_unchanged(monkeypatch):
    from keras_lm.backend import ops as backend_ops

    lm = _lm()
    gradient, trainable = _gradient_fn(lm)
    with_barrier = gradient(trainable)
    monkeypatch.setattr(backend_ops, "materialized_gradient", lambda x: x)
    gradient, trainable = _gradient_fn(lm)
    without = gradient(trainable)
    for a, b in zip(with_barrier, without, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_xla_keeps_one_conditional_per_block():
    lm = _lm()
    gradient, trainable = _gradient_fn(lm)
    program = gradient.lower(trainable).compile().as_text()
    assert program.count(" conditional(") == 3


def test_nan_activation_gives_nan_gradient():
    import jax
    import jax.numpy as jnp

    from keras_lm.backend.jax_gradients import materialized_gradient

    x = jnp.asarray([jnp.nan, 1.0, 2.0])
    assert np.isnan(np.asarray(jax.grad(lambda v: materialized_gradient(v).sum())(x))).all()
    x = jnp.asarray([0.5, 1.0, 2.0])
    np.testing.assert_array_equal(jax.grad(lambda v: (materialized_gradient(v) * v).sum())(x),
                                  2 * x)
