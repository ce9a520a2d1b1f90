"""Fresh copies of initializers, so that variables sharing an initializer get distinct values.

A Keras 3 random initializer without a seed draws a fixed seed when it is created, so calling
one instance for several variables of the same shape gives them identical values (every
layer's query kernel equal to its key kernel, every block equal to the first).

Inside `weights_to_be_loaded()` they give zeros instead: a model built to receive a
checkpoint would otherwise draw every weight at random first (for a 270M model, seconds of
work and a random-number buffer larger than the weights).
"""

import contextlib
import threading

import keras

_state = threading.local()


@contextlib.contextmanager
def weights_to_be_loaded():
    """Within this block, variables built through `fresh_initializer` start as zeros.

    Example:
    >>> with weights_to_be_loaded():
    ...     values = fresh_initializer("glorot_uniform")((2, 2))
    >>> float(keras.ops.sum(keras.ops.abs(values)))
    0.0
    """
    previous = getattr(_state, "skip_random", False)
    _state.skip_random = True
    try:
        yield
    finally:
        _state.skip_random = previous


class LazyZeros(keras.initializers.Initializer):
    """Zeros that take no memory until written (`backend.host_arrays.lazy_zeros`)."""

    def __call__(self, shape, dtype=None):
        from keras_lm.backend.host_arrays import lazy_zeros

        return lazy_zeros(shape, dtype or "float32")


def fresh_initializer(initializer):
    """A new instance of `initializer` with its own seed (unchanged when it was seeded).

    Example:
    >>> init = keras.initializers.RandomNormal(stddev=0.02)
    >>> a, b = fresh_initializer(init)((2, 2)), fresh_initializer(init)((2, 2))
    >>> bool(keras.ops.all(a == b))
    False
    """
    initializer = keras.initializers.get(initializer)
    if initializer is None:
        return None
    if getattr(_state, "skip_random", False):
        return LazyZeros()
    return initializer.__class__.from_config(initializer.get_config())
