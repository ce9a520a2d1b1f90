"""Faster fp32 CPU matmuls for inference on the torch backend.

PyTorch's CPU matmul goes to MKL, whose matrix-vector path uses one thread and whose small-M
matrix product is slow on non-Intel CPUs (measured on a 2-core AMD EPYC: a one-token GPT-2
LM head takes 11.4 ms with `x @ E.T` and 2.9 ms split as below). For inference calls
(no autograd, fp32, CPU tensors) this module answers:

- one row (a decode step at batch 1): the kernel's output columns split into a few blocks,
  one batched matrix-vector product, so every thread streams its share of the weights;
- several rows: oneDNN's linear (`torch.ops.mkldnn._linear_pointwise`), which reads the
  kernel in place and runs about 2x faster than MKL at 8 rows here. It is called through our
  own operator `keras_lm::linear_rows`: the tracer cannot record the oneDNN op's empty
  `Scalar?[]` argument, which left every batched decode step untraced (eager).

Anything else (gradients, other dtypes or devices) takes Keras' own `matmul`.

Layers quantized with `quantize("int8")` keep Keras' int8 kernel and scale; for inference their
projection runs FBGEMM's dynamic int8 linear on a packed copy of that kernel (Keras' own int8
einsum is slower than fp32 here, FBGEMM about 6x faster). `keras_lm.backend.ops` picks these
functions when the backend is torch; models and layers never import torch. Layers are reached
through their public hooks (`Projection.stored_kernel`, `kernel_rows`, `finish`, ...).
"""

import warnings
import weakref

import torch
from keras.src.backend import core as _backend_core
from keras.src.backend import numpy as _backend_numpy

# Below this many kernel elements (~1 MB) the plain matmul is as fast.
_MIN_SPLIT_ELEMENTS = 1 << 18

_keras_matmul = _backend_numpy.matmul
_torch = torch
# oneDNN's linear (and so every fast float path here) is available in this torch build.
ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                          "_linear_pointwise")


def _one_row(row, kernel):
    """`row [1, K] @ kernel [K, N]` as a batched GEMV over blocks of output columns."""
    torch = _torch
    k, n = kernel.shape
    transposed = kernel.stride(0) == 1 and kernel.stride(1) == k
    # MKL's one-block GEMV over rows reads ~12 GB/s on one core here; two or more blocks ~28.
    blocks = max(torch.get_num_threads(), 2 if transposed else 1)
    split = n // blocks * blocks
    if transposed:
        # The transpose of a row-major [N, K] matrix (a tied LM head, or a kernel stored by
        # `row_major_kernels`): each block is a contiguous run of rows, read at full speed.
        rows = kernel.T[:split].reshape(blocks, split // blocks, k)
        out = torch.bmm(rows, row.T.expand(blocks, k, 1)).reshape(1, split)
    else:
        columns = kernel[:, :split].unflatten(1, (blocks, split // blocks)).permute(1, 0, 2)
        out = torch.bmm(row.expand(blocks, 1, k), columns).reshape(1, split)
    if split < n:
        out = torch.cat([out, row @ kernel[:, split:]], dim=1)
    return out


def row_major_kernels(groups) -> int:
    """Store float32 CPU kernels as transposes of row-major `[N, K]` matrices; returns how
    many changed. `groups` holds lists of `(variable, contracted_rows)`; the kernels of one
    group (projections of the same input: query/key/value, gate/up) share one buffer, side by
    side, so `joint_projection` can run them as one product.

    Values and shapes are unchanged (each variable's tensor becomes a strided view), but a
    one-row product then reads each output's weights contiguously: on a 2-core AMD EPYC a
    `[1, 3072] @ [3072, 768]` GEMV goes from ~20 to ~55 GB/s. The Parameter objects are kept
    (only `.data` is swapped), so optimizers and module references stay valid.
    """
    torch = _torch
    changed = 0
    for group in groups:
        params = [getattr(variable, "_value", None) for variable, _ in group]
        rows = {r for _, r in group}
        if (
            len(rows) != 1
            or None in rows
            or not all(isinstance(p, torch.Tensor) and p.dtype is torch.float32 and p.is_cpu
                       for p in params)
            or sum(p.numel() for p in params) < _MIN_SPLIT_ELEMENTS
        ):
            continue
        (rows,) = rows
        if _side_by_side([p.data for p in params], rows) is not None:
            continue  # already laid out
        try:
            flats = [p.data.view(rows, -1) if p.data.is_contiguous() else p.data.reshape(rows, -1)
                     for p in params]
            buffer = torch.cat([flat.T for flat in flats], dim=0)  # [sum N, K], row-major
            views, start = [], 0
            for param, flat in zip(params, flats, strict=True):
                width = flat.shape[1]
                views.append(buffer[start : start + width].T.view(param.shape))
                start += width
        except RuntimeError:  # a shape whose transposed storage has no view: leave it
            continue
        with torch.no_grad():
            for param, view in zip(params, views, strict=True):
                param.data = view
        changed += len(params)
    return changed


def _side_by_side(kernels, rows):
    """The `[rows, sum N]` view covering `kernels` when they are transposed row-major blocks,
    one after another in one storage (as `row_major_kernels` leaves them), else None."""
    first = kernels[0]
    storage = first.untyped_storage().data_ptr()
    offset = first.storage_offset()
    for kernel in kernels:
        if kernel.untyped_storage().data_ptr() != storage or kernel.storage_offset() != offset:
            return None
        try:
            flat = kernel.view(rows, -1)
        except RuntimeError:
            return None
        if flat.stride() != (1, rows):
            return None
        offset += flat.numel()
    width = (offset - first.storage_offset()) // rows
    return _torch.as_strided(first, (rows, width), (1, rows), first.storage_offset())


def joint_projection(layers, inputs):
    """Outputs of float `Projection`s of the same input as one product over their side-by-side
    kernels, or None when they are not laid out so (or autograd / other dtypes are involved)."""
    torch = _torch
    if torch.is_grad_enabled() or inputs.dtype is not torch.float32 or not inputs.is_cpu:
        return None
    rows = layers[0].kernel_rows
    for layer in layers:
        if (
            layer.dtype_policy.quantization_mode is not None
            or getattr(layer, "lora_enabled", False)
            or layer.kernel_rows != rows
        ):
            return None
    kernels = [layer.stored_kernel.value for layer in layers]
    combined = _side_by_side(kernels, rows)
    if combined is None:
        return None
    leading = inputs.shape[: inputs.ndim - layers[0].contracted_axes]
    out = matmul(inputs.reshape(-1, rows), combined)
    pieces = out.split([kernel.numel() // rows for kernel in kernels], dim=-1)
    return [
        layer.finish(piece.reshape(*leading, *layer.kernel_out_shape))
        for layer, piece in zip(layers, pieces, strict=True)
    ]


def matmul(x, y):
    """`keras.ops.matmul` with the fast CPU inference paths described in the module doc."""
    torch = _torch
    if (
        not isinstance(x, torch.Tensor)
        or not isinstance(y, torch.Tensor)
        or x.dtype is not y.dtype
        or not x.dtype.is_floating_point
    ):
        return _keras_matmul(x, y)  # dtype promotion and integer rules stay Keras'
    if (
        torch.is_grad_enabled()
        or x.dtype is not torch.float32
        or y.ndim != 2
        or x.ndim < 2
        or not x.is_cpu
        or not y.is_cpu
        or y.numel() < _MIN_SPLIT_ELEMENTS
    ):
        return torch.matmul(x, y)
    k, n = y.shape
    flat = x.reshape(-1, k)
    if flat.shape[0] == 1:
        out = _one_row(flat, y)
    else:
        out = _linear_rows(flat.contiguous(), y.T)
    return out.reshape(*x.shape[:-1], n)


def _onednn_linear(rows, weight):
    """`rows [M, K] @ weight [N, K].T` by oneDNN."""
    return _torch.ops.mkldnn._linear_pointwise(rows, weight, None, "none", [], "")


def _register_linear_rows(torch):
    """`keras_lm::linear_rows(rows, weight)`: the oneDNN linear behind a schema TorchScript's
    tracer records (a Python kernel; replaying it costs microseconds)."""
    global _linear_rows, _library
    if _linear_rows is not None:
        return
    try:
        library = torch.library.Library("keras_lm", "DEF")
        library.define("linear_rows(Tensor rows, Tensor weight) -> Tensor")
        library.impl("linear_rows", _onednn_linear, "CPU")
    except RuntimeError:  # defined elsewhere in this process: call oneDNN directly
        _linear_rows = _onednn_linear
        return
    _library = library  # the definition lives as long as this object
    _linear_rows = torch.ops.keras_lm.linear_rows


_linear_rows = None
_library = None


_packed = weakref.WeakKeyDictionary()  # layer -> (weights' identity and version, packed)


# FBGEMM's dynamic linear with 7-bit activations (`reduce_range`): with 8 bits its u8 x s8
# pair sums can saturate in int16. Measured on an AVX-512 VNNI CPU too: 8-bit activations
# moved a test model's probabilities further from the float ones than 7-bit ones.
REDUCE_RANGE = True


def records_gradients() -> bool:
    return _torch.is_grad_enabled()


def int8_projection(layer, inputs, kernel=None, scale=None):
    """`inputs [..., K] @ dequantized kernel [K, N]` for an int8 layer, or None when this path
    does not apply. `kernel`/`scale` default to a `Projection`'s `stored_kernel`/`kernel_scale`.
    """
    torch = _torch
    if torch.is_grad_enabled() or inputs.dtype is not torch.float32 or not inputs.is_cpu:
        return None
    if kernel is None:
        kernel, scale = layer.stored_kernel.value, layer.kernel_scale.value
    key = (kernel.data_ptr(), kernel._version, scale.data_ptr(), scale._version)
    entry = _packed.get(layer)
    if entry is None or entry[0] != key:
        packed = _pack_int8(torch, kernel.reshape(inputs.shape[-1], -1), scale.reshape(-1))
        if packed is None:
            return None
        entry = _packed[layer] = (key, packed)
    return torch.ops.quantized.linear_dynamic(inputs, entry[1], REDUCE_RANGE)


def packed_weights() -> list:
    """Every packed int8 weight currently alive (TorchScript needs them owned by a module)."""
    return [packed for _, packed in [*_packed.values(), *_int4_as_int8.values()]]


def _pack_int8(torch, kernel, scale):
    """FBGEMM weights from Keras' int8 kernel `[K, N]` (`q = round(w * scale)`, per column)."""
    if scale.numel() != kernel.shape[1]:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensors are "deprecated" but current
            weight = torch._make_per_channel_quantized_tensor(
                kernel.T.contiguous(), (1.0 / scale).double(),
                torch.zeros(scale.numel(), dtype=torch.long), 0,
            )
            return torch.ops.quantized.linear_prepack(weight, None)
    except (RuntimeError, AttributeError):  # a torch build without FBGEMM / quantized ops
        return None


_int4_packed = weakref.WeakKeyDictionary()  # layer -> (weights' identity and version, product)
_int4_as_int8 = weakref.WeakKeyDictionary()  # layer -> (None, FBGEMM weights) when chosen
_INT4_GROUPS = (32, 64, 128, 256)  # the group sizes torch's int4 CPU kernel takes


def int4_projection(layer, inputs):
    """`inputs [..., K] @ W.T` for a layer with int4 weights (`int4_weights()`, see
    `keras_lm.layers.int4`) for inference, or None when no fast path applies (autograd, other
    dtypes, shapes the kernels do not take).

    Two kernels (`KERAS_LM_INT4_KERNEL=int4|int8` forces one): torch's 4-bit CPU kernel
    (`_weight_int4pack_mm_for_cpu`; bfloat16 activations, its float32 path is a slow
    reference loop) on a packed copy where the CPU has AVX-512 (a 262144 x 640 head: 5.8 ms
    against FBGEMM's 6.9 ms), else FBGEMM's int8 linear on a copy requantized to int8 with
    one scale per output (on 2 AVX2 cores the 4-bit kernel unpacks slower than it reads:
    15.5 ms against 11.8 ms). The choice is by CPU, not timed per layer: timing picked
    different kernels in different processes, and so different greedy text from one model.
    """
    torch = _torch
    if torch.is_grad_enabled() or inputs.dtype is not torch.float32 or not inputs.is_cpu:
        return None
    sources = [v.value for v in _int4_sources(layer)]
    key = tuple((v.data_ptr(), v._version) for v in sources)
    entry = _int4_packed.get(layer)
    if entry is None or entry[0] != key:
        entry = _int4_packed[layer] = (key, _int4_kernel(torch, layer, inputs.shape[-1]))
    kernel = entry[1]
    return None if kernel is None else kernel(inputs)


def _int4_kernel(torch, layer, k):
    """The product for one int4 layer: a function of `inputs [..., K]`, or None."""
    import os

    weights = layer.int4_weights()
    choice = os.environ.get("KERAS_LM_INT4_KERNEL") or _DEFAULT_INT4_KERNEL
    if choice == "int4":
        packed = _pack_int4(torch, *weights)
        if packed is not None:
            return _four_bit_product(torch, *packed)
    from keras_lm.layers.int4 import dense_kernel

    dense = dense_kernel(*weights)  # [N, K]
    scale = 127.0 / dense.abs().amax(dim=1).clamp_min(1e-12)
    rows = torch.round(dense * scale[:, None]).clamp(-127, 127).to(torch.int8)
    packed8 = _pack_int8(torch, rows.T, scale)
    if packed8 is None:
        return None
    _int4_as_int8[layer] = (None, packed8)  # owned here for TorchScript (`packed_weights`)
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed8, REDUCE_RANGE)


_DEFAULT_INT4_KERNEL = "int4" if torch.backends.cpu.get_cpu_capability().startswith(
    ("AVX512", "AMX")) else "int8"


def _four_bit_product(torch, weights, scales_and_zeros, group, n):
    def product(inputs):
        rows = inputs.reshape(-1, inputs.shape[-1]).to(torch.bfloat16).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, weights, group, scales_and_zeros)
        return out[:, :n].float().reshape(*inputs.shape[:-1], n)

    return product


def _int4_sources(layer):
    """The variables an int4 layer's packed copy is made from (to notice reassignment)."""
    names = ("_kernel", "kernel_scale", "kernel_zero", "_embeddings", "embeddings_scale",
             "embeddings_zero", "reverse_embeddings", "reverse_embeddings_scale",
             "reverse_embeddings_zero")
    return [getattr(layer, name) for name in names if hasattr(layer, name)]


def _pack_int4(torch, q, scale, offset, block):
    """torch's int4 CPU layout from `w = q * scale + offset` (`q [N, K]` in [-8, 7], groups
    of `block` along K), or None when the kernel cannot take the shapes."""
    n, k = q.shape
    if block not in _INT4_GROUPS:  # one scale a row: the same scale in every group of 32
        if block != k or k % 32:
            return None
        scale, offset = scale.repeat(k // 32, 1), offset.repeat(k // 32, 1)
        block = 32
    if k % block:
        return None
    padded = -n % 16  # the kernel packs 16 output rows together
    with torch.no_grad():
        unsigned = torch.nn.functional.pad(q.to(torch.int32) + 8, (0, 0, 0, padded),
                                           value=8)
        weights = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unsigned.contiguous(), 1)
        # The kernel's own form is `(u - 8) * scale + zero` with `u = q + 8`: zero = offset.
        pairs = torch.stack([scale.float(), offset.float()], dim=-1)
        pairs = torch.nn.functional.pad(pairs, (0, 0, 0, padded))
        return weights, pairs.to(torch.bfloat16).contiguous(), block, n


def write_cache(cache, start, update):
    """Write `update` into `cache` at `[:, start:start + len]` (`[start:start + len]` for a
    cache of rank 2) and return the cache.

    In place (generation runs under no_grad and never reuses the old cache): a functional
    `slice_update` would copy the whole cache every step. `index_copy_` with a tensor of
    slots keeps a tensor `start` symbolic when `TracedStep` records the step.
    """
    update = _backend_core.cast(update, cache.dtype)
    if cache.requires_grad or not cache.is_contiguous():
        origin = (start, 0) if cache.dim() == 2 else (0, start, 0)
        return _backend_core.slice_update(cache, origin, update)
    axis = cache.dim() - 2
    slots = torch.arange(update.shape[axis], device=cache.device) + start
    cache.index_copy_(axis, slots, update)
    return cache


if ONEDNN:
    _register_linear_rows(torch)
