"""`ReleasesVariablesWithoutCollecting`: a layer mixin for the layers `quantize` rewrites.

Keras' `Layer.__delattr__` runs a full `gc.collect()` after every variable it deletes, and
`quantize` deletes each float kernel it replaces. In a process holding many objects (a test
session, a server) one collection takes 0.1 s or more, so quantizing a 2-layer model took 1.9 s
of collections and a real model one per layer. These layers untrack and delete the variable
as Keras does; models with `CollectsOnceAfterQuantize` collect once at the end.

Example:
>>> class Scaled(ReleasesVariablesWithoutCollecting, keras.layers.Dense): pass
>>> layer = Scaled(2); layer.build((None, 3)); del layer._kernel
>>> len(layer.weights)
1
"""

import gc

import keras


class ReleasesVariablesWithoutCollecting:
    def __delattr__(self, name):
        value = getattr(self, name, None)
        if isinstance(value, keras.Variable):
            self._untrack_variable(value)
            # `Layer.__delattr__` minus its `gc.collect()`: the next class after Layer.
            super(keras.layers.Layer, self).__delattr__(name)
        else:
            super().__delattr__(name)


class CollectsOnceAfterQuantize:
    """Model mixin: one `gc.collect()` after `quantize`, so the replaced float kernels are
    freed before it returns (Keras' intent for its per-variable collections)."""

    def quantize(self, *args, **kwargs):
        super().quantize(*args, **kwargs)
        gc.collect()
