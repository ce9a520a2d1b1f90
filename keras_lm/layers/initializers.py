"""Fresh copies of initializers, so that variables sharing an initializer get distinct values.

A Keras 3 random initializer without a seed draws a fixed seed when it is created, so calling
one instance for several variables of the same shape gives them identical values (every
layer's query kernel equal to its key kernel, every block equal to the first).
"""

import keras


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
    return initializer.__class__.from_config(initializer.get_config())
