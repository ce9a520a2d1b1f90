"""GGUF's 4-bit block types read as integer groups, without dequantizing.

Q4_0 (blocks of 32: a float16 scale `d`, values `d * (u - 8)`) and Q4_K (super-blocks of 256:
float16 `d` and `dmin`, eight 6-bit scales and minimums, values `d * sc * u - dmin * m` in
groups of 32) both hold, for every group of 32 values along a row, unsigned 4-bit codes `u`
with one float scale and one float offset. `four_bit_groups` returns them as
`q = u - 8` in [-8, 7], `scale` and `offset` with `w = q * scale + offset`: the file's own
numbers, ready for a 4-bit layout with float zero points (`keras_lm.layers.int4`).
"""

import numpy as np

FOUR_BIT_TYPES = ("Q4_0", "Q4_K")
GROUP = 32  # values sharing one scale and offset in both types
_BLOCK_BYTES = {"Q4_0": 18, "Q4_K": 144}


def _nibbles(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return codes & 0x0F, codes >> 4


def _q4_0(blocks: np.ndarray):
    """`[blocks, 18]` bytes -> (u [blocks, 32], scale [blocks], offset of `u - 8` [blocks])."""
    d = np.ascontiguousarray(blocks[:, :2]).view("<f2")[:, 0].astype(np.float32)
    low, high = _nibbles(blocks[:, 2:])
    codes = np.concatenate([low, high], axis=1)  # values 0-15 low nibbles, 16-31 high
    return codes, d, np.zeros_like(d)  # d * (u - 8): no offset once codes are signed


def _k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and minimums of Q4_K's 12 packed bytes: `[blocks, 8]` each."""
    packed = packed.astype(np.uint8)
    scales = np.empty((packed.shape[0], 8), np.uint8)
    mins = np.empty_like(scales)
    scales[:, :4] = packed[:, 0:4] & 63
    mins[:, :4] = packed[:, 4:8] & 63
    scales[:, 4:] = (packed[:, 8:12] & 0x0F) | ((packed[:, 0:4] >> 6) << 4)
    mins[:, 4:] = (packed[:, 8:12] >> 4) | ((packed[:, 4:8] >> 6) << 4)
    return scales, mins


def _q4_k(blocks: np.ndarray):
    """`[blocks, 144]` bytes -> (u [blocks * 8, 32], scale [blocks * 8], offset [...])."""
    halves = np.ascontiguousarray(blocks[:, :4]).view("<f2").astype(np.float32)
    d, dmin = halves[:, 0:1], halves[:, 1:2]
    scales, mins = _k_scales(blocks[:, 4:16])
    scale = d * scales.astype(np.float32)  # [blocks, 8]
    minimum = dmin * mins.astype(np.float32)
    # 128 code bytes in four runs of 32: run r holds group 2r in its low nibbles and
    # group 2r + 1 in its high nibbles.
    low, high = _nibbles(blocks[:, 16:].reshape(-1, 4, 32))
    codes = np.stack([low, high], axis=2).reshape(-1, 32)
    return codes, scale.reshape(-1), minimum.reshape(-1)


def four_bit_groups(raw: np.ndarray, type_name: str, shape: tuple):
    """`(q [rows, K] int8 in [-8, 7], scale [rows, K // 32], offset [rows, K // 32])` float32,
    with `q * scale + offset` equal to the file's values, for a tensor of `shape`
    (`[..., K]` in numpy order) stored as `raw` bytes of a 4-bit block type.

    Example:
    >>> q, scale, offset = four_bit_groups(raw, "Q4_K", (2048, 640))  # doctest: +SKIP
    """
    if type_name not in FOUR_BIT_TYPES:
        raise ValueError(f"{type_name} is not a 4-bit block type ({', '.join(FOUR_BIT_TYPES)})")
    k = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    blocks = np.asarray(raw, np.uint8).reshape(-1, _BLOCK_BYTES[type_name])
    if type_name == "Q4_0":
        codes, scale, offset = _q4_0(blocks)
    else:
        codes, scale, minimum = _q4_k(blocks)
        offset = 8.0 * scale - minimum  # u * s - min = (u - 8) * s + (8 s - min)
    q = (codes.astype(np.int8) - 8).reshape(rows, k)
    groups = k // GROUP
    return q, scale.reshape(rows, groups), offset.astype(np.float32).reshape(rows, groups)


def _row_order(forward, n: int, k: int):
    """The source row each output row of `forward` comes from, when `forward` maps a GGUF
    tensor `[n, k]` to a kernel whose `[k, n]` view is its transpose up to a reordering of
    whole rows (groups along k stay intact); else None (GPT-2's transposed Conv1D kernels)."""
    probe = np.arange(n * k, dtype=np.int64).reshape(n, k)
    try:
        out = np.asarray(forward(probe)).reshape(k, -1).T
    except ValueError:
        return None
    if out.shape != (n, k):
        return None
    rows = out[:, :1] // k
    if not (np.array_equal(out % k, np.broadcast_to(np.arange(k), (n, k)))
            and np.array_equal(out // k, np.broadcast_to(rows, (n, k)))):
        return None
    return rows[:, 0]


def attach_four_bit_groups(backbone, checkpoint, conversion) -> int:
    """Let each projection whose kernel came from a Q4_0 / Q4_K tensor keep the file's groups
    when it is quantized to int4 (`keras_lm.layers.int4.FILE_GROUPS`); returns how many.

    Example:
    >>> attach_four_bit_groups(backbone, reader.checkpoint, conversion)  # doctest: +SKIP
    18
    """
    from keras_lm.layers.int4 import FILE_GROUPS
    from keras_lm.layers.projection import Projection

    owners = {id(layer.stored_kernel): layer for layer in backbone._flatten_layers()
              if isinstance(layer, Projection) and layer.built}
    by_path = {v.path: v for v in backbone.weights}
    attached = 0
    for path, key, transform in conversion.rows:
        layer = owners.get(id(by_path.get(path)))
        name, gguf_transform = checkpoint.source(key)
        info = checkpoint.file.tensors[name]
        if layer is None or info.type_name not in FOUR_BIT_TYPES or len(info.shape) != 2:
            continue
        n, k = info.shape
        forward = transform if gguf_transform is None else \
            (lambda w, t=transform, g=gguf_transform: t(g(w)))
        order = _row_order(forward, n, k)
        if order is None or layer.kernel_rows != k:
            continue

        def groups(file=checkpoint.file, info=info, order=order):
            raw = file.raw(info.name)
            q, scale, offset = four_bit_groups(raw, info.type_name, info.shape)
            return q[order], scale[order], offset[order]

        FILE_GROUPS[layer] = groups
        attached += 1
    return attached
