"""Rotary position embeddings (RoPE) with linear and Llama 3.1 frequency scaling."""

import math

import numpy as np

from keras_lm.backend import ops


def rope_inverse_frequencies(
    head_dim: int,
    max_wavelength: float = 10000.0,
    scaling_factor: float = 1.0,
    llama3_scaling: dict | None = None,
) -> np.ndarray:
    """Inverse frequencies for the `head_dim // 2` rotary pairs, as float32 numpy.

    `scaling_factor` divides every frequency (linear position interpolation). `llama3_scaling`
    holds `factor`, `low_freq_factor`, `high_freq_factor` and
    `original_max_position_embeddings` for Llama 3.1's smooth per-band scaling.

    Example:
    >>> rope_inverse_frequencies(4).shape
    (2,)
    """
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    inv_freq = 1.0 / (max_wavelength**exponents)
    if llama3_scaling:
        factor = llama3_scaling["factor"]
        low = llama3_scaling["low_freq_factor"]
        high = llama3_scaling["high_freq_factor"]
        original = llama3_scaling["original_max_position_embeddings"]
        wavelength = 2 * math.pi / inv_freq
        low_freq_wavelength = original / low
        high_freq_wavelength = original / high
        smooth = (original / wavelength - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = np.where(
            wavelength > low_freq_wavelength,
            inv_freq / factor,
            np.where(wavelength < high_freq_wavelength, inv_freq, blended),
        )
    return (inv_freq / scaling_factor).astype(np.float32)


def rope_cos_sin(positions, inverse_frequencies: np.ndarray):
    """Cosine and sine tables of shape `positions.shape + (1, head_dim)` in float32."""
    angles = ops.cast(positions, "float32")[..., None] * ops.convert_to_tensor(inverse_frequencies)
    angles = ops.concatenate([angles, angles], axis=-1)[..., None, :]
    return ops.cos(angles), ops.sin(angles)


def apply_rope(x, cos, sin):
    """Rotate `x` of shape `[batch, time, heads, head_dim]` by the half-split convention."""
    half = ops.shape(x)[-1] // 2
    x32 = ops.cast(x, "float32")
    rotated = ops.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return ops.cast(x32 * cos + rotated * sin, x.dtype)
