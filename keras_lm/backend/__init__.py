"""The bottom of keras_lm: per-backend operations and kernels, chosen when imported.

`ops` is `keras.ops` for hot paths plus the backend's kernels (fast matmuls, int8 products,
KV-cache writes, the greedy choice); `direct_call` skips Keras' per-call bookkeeping on the
decode path. Backend libraries are imported only here (and in `generation/compile.py`); this
package imports nothing of keras_lm above it.
"""

import keras


def decode_companions(backbone) -> list:
    """Inference-only variables the backend keeps beside `backbone`'s weights (JAX: row-major
    int8 copies of quantized kernels), which compiled generation functions receive with the
    model's variables. Empty elsewhere."""
    if keras.backend.backend() != "jax":
        return []
    from keras_lm.backend import xla_kernels

    return xla_kernels.row_major_companions(backbone)
