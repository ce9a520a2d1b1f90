"""The one place that compiles generation functions per backend (jit / tf.function / no_grad).

A compiled function is `fn(model_values, *args)`. On JAX `model_values` are the current
variable values passed as arguments (so weights are never baked into the program); elsewhere
it is None and the layers read their variables directly.

Torch runs the decode loop eagerly, where Python and Keras dispatch cost more than the math of
a one-token step; `TracedStep` records that step once per input shapes with TorchScript and
replays it (weights are again arguments, so the recording never goes stale).
"""

import contextlib
import os
import warnings

import keras


class CompiledFunction:
    """Wrap `fn` for the active backend; `trace_count` counts (re)compilations on JAX and TF.

    `donate` lists positions in the call's arguments whose buffers JAX may reuse for outputs
    (the caller never reads them again): caches passed through are then updated in place
    instead of copied on every call.
    """

    def __init__(self, fn, variables, donate: tuple = ()):
        self._fn = fn
        self._variables = variables
        self.trace_count = 0
        backend = keras.backend.backend()
        self.backend = backend
        if backend == "jax":
            import jax

            # +1: the model's values come first.
            self._compiled = jax.jit(self._traced, donate_argnums=tuple(i + 1 for i in donate))
        elif backend == "tensorflow":
            import tensorflow as tf

            self._compiled = tf.function(self._traced, reduce_retracing=True)
        else:
            self._compiled = None

    def _traced(self, model_values, *args):
        self.trace_count += 1
        return self._fn(model_values, *args)

    def __call__(self, *args):
        if self.backend == "jax":
            return self._compiled([v.value for v in self._variables], *args)
        if self.backend == "tensorflow":
            return self._compiled(None, *args)
        if self.backend == "torch":
            import torch

            with torch.no_grad():
                return self._fn(None, *args)
        return self._fn(None, *args)


class TracedStep:
    """`fn(*tensors)` on torch, recorded by `torch.jit.trace` once per input shapes and dtypes.

    `fn` runs with the model's variables mapped to traced inputs, and must write caches in
    place (see `keras_lm.backend.ops.write_cache`) and return tensors. Tracing failures fall
    back to eager calls. Other backends (and `enabled=False`) call `fn` eagerly.
    """

    def __init__(self, fn, variables, enabled: bool = True):
        self._fn = fn
        self._variables = variables
        self._traced = {}
        self.trace_count = 0
        self.enabled = enabled and keras.backend.backend() == "torch"

    def _with_values(self, *flat):
        values, args = flat[: len(self._variables)], flat[len(self._variables) :]
        with keras.StatelessScope(state_mapping=list(zip(self._variables, values, strict=True))):
            return self._fn(*args)

    @contextlib.contextmanager
    def weights_fixed(self):
        """Read the variables once for the steps run inside (a decode chunk, within which
        weights cannot change), and let go of them after. Reading them every step cost ~3 ms a
        step on Gemma 3 270M (366 `Variable.value` calls)."""
        self._snapshot, self._fixed = None, True
        try:
            yield
        finally:
            self._snapshot, self._fixed = None, False

    _snapshot = None
    _fixed = False

    def _weights(self):
        if self._snapshot is not None:
            return self._snapshot
        values = [v.value for v in self._variables]
        # Versions change on in-place writes: packed int8 weights are constants of a
        # recording, which also bakes in the weights' layout (`joint_projection`).
        identity = tuple((v._version, v.data_ptr(), v.stride()) for v in values)
        if self._fixed:
            self._snapshot = (values, identity)
        return values, identity

    def __call__(self, *args):
        if not self.enabled:
            return self._fn(*args)
        import torch

        values, identity = self._weights()
        key = (tuple((tuple(a.shape), a.dtype) for a in args), identity)
        traced = self._traced.get(key)
        if traced is None:
            traced = self._traced[key] = self._trace(values, args)
        if traced is False:
            return self._fn(*args)
        # The profiling executor's re-optimisation costs ~0.4 s and gains nothing here.
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return traced(*values, *args)

    def _trace(self, values, args):
        import torch

        from keras_lm.backend import torch_kernels

        self.trace_count += 1
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._fn(*args)  # eager first: packs int8 weights (cache writes are idempotent)
                # TorchScript only records custom objects (packed weights) owned by a module.
                module = torch.nn.Module()
                for i, packed in enumerate(torch_kernels.packed_weights()):
                    setattr(module, f"packed_{i}", packed)
                module.forward = self._with_values
                traced = torch.jit.trace(module, (*values, *args), check_trace=False)
            specialize_shapes(traced.graph)
            return traced
        except Exception as error:  # noqa: BLE001 - any tracer limitation means "run eagerly"
            warnings.warn(f"Decode step runs eagerly (tracing failed: {error})", stacklevel=3)
            return False


def specialize_shapes(graph) -> None:
    """Fold a traced graph's shape arithmetic into constants, and drop casts that change nothing.

    The tracer records every `tensor.shape` read as `aten::size` plus int conversions, and every
    same-dtype `cast` as `aten::to`: about 1,000 tiny ops per GPT-2 step, ~40% of its time.
    A recording is only replayed for the input shapes it was made with, and each value's
    recorded type carries its full sizes, so those sizes are constants.
    """
    import torch

    for node in list(graph.nodes()):
        if node.kind() != "aten::size":
            continue
        sizes = _static_sizes(node.inputsAt(0))
        if sizes is None:
            continue
        if node.inputsSize() == 1:
            value = list(sizes)
        else:
            dim = node.inputsAt(1).toIValue()
            if not isinstance(dim, int):
                continue
            value = sizes[dim]
        with graph.insert_point_guard(node):
            constant = graph.insertConstant(value)
        node.output().replaceAllUsesWith(constant)
    torch._C._jit_pass_constant_propagation(graph)
    for node in list(graph.nodes()):
        if node.kind() == "aten::to" and _is_noop_cast(node):
            node.output().replaceAllUsesWith(node.inputsAt(0))
    torch._C._jit_pass_dce(graph)


def _static_sizes(value):
    import torch

    kind = value.type()
    sizes = kind.sizes() if isinstance(kind, torch.TensorType) else None
    if sizes is None or any(size is None for size in sizes):
        return None
    return sizes


def _is_noop_cast(node) -> bool:
    """`aten::to` that returns its input unchanged: same dtype and device, no copy, no layout."""
    import torch

    source, result = node.inputsAt(0).type(), node.output().type()
    if not isinstance(source, torch.TensorType) or not isinstance(result, torch.TensorType):
        return False
    if source.scalarType() is None or source.scalarType() != result.scalarType():
        return False
    if source.device() != result.device():
        return False
    schema = torch._C.parse_schema(node.schema())
    for argument, value in zip(schema.arguments[1:], list(node.inputs())[1:], strict=False):
        constant = value.toIValue()
        if argument.name == "copy" and constant is not False:
            return False
        if argument.name == "memory_format" and constant is not None:
            return False
    return True


def prepare_decode_weights(backbone) -> int:
    """Lay out float weights for fast one-token steps where the backend cares (torch on CPU:
    see `torch_kernels.row_major_kernels`); values, shapes and variables are unchanged.
    Returns how many weights were re-laid out."""
    if keras.backend.backend() != "torch":
        return 0
    from keras_lm.backend import torch_kernels
    from keras_lm.layers.attention import CachedAttention
    from keras_lm.layers.embedding import ReversibleEmbedding
    from keras_lm.layers.feedforward import FeedForward
    from keras_lm.layers.projection import Projection

    def kernel(layer):
        return layer.decode_kernel()

    groups, grouped = [], set()
    for layer in backbone._flatten_layers():
        members = ()
        if isinstance(layer, CachedAttention):
            members = (layer.query, layer.key, layer.value)
        elif isinstance(layer, FeedForward) and layer.gated:
            members = (layer.gate, layer.intermediate)
        if members:
            groups.append([kernel(m) for m in members])
            grouped.update(id(m) for m in members)
    for layer in backbone._flatten_layers():
        if isinstance(layer, Projection) and layer.decode_kernel() is not None:
            if id(layer) not in grouped:
                groups.append([kernel(layer)])
        elif isinstance(layer, ReversibleEmbedding) and not layer.tie_weights:
            reverse = getattr(layer, "reverse_embeddings", None)
            if reverse is not None and len(reverse.shape) == 2:
                groups.append([(reverse, reverse.shape[0])])
    return torch_kernels.row_major_kernels(groups)


def use_compilation_cache(directory: str) -> bool:
    """Keep JAX's compiled generation programs in `directory`, so a later process (the next
    `keras-lm generate`) skips XLA compilation. Does nothing off JAX or when the user already
    configured a cache; returns whether it was switched on.

    Example:
    >>> use_compilation_cache(os.path.expanduser("~/.cache/keras_lm/jax"))  # doctest: +SKIP
    """
    if keras.backend.backend() != "jax":
        return False
    import jax

    if jax.config.jax_compilation_cache_dir:
        return False
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    # Generation programs compile in 0.3-2 s; JAX only stores those over 1 s by default. Any
    # threshold makes what is stored depend on the machine's load (a program near it is kept
    # in one run and compiled again in the next), so every program is kept.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return True


def to_numpy(x):
    """A backend tensor as a numpy array."""
    return keras.ops.convert_to_numpy(x)
