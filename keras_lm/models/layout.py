"""Model-parallel layouts of the decoder's weights for Keras' distribution API (JAX).

Megatron-style: attention heads and the MLP's inner width go along the model axis, the
hidden width along the data axis (weights sharded there too, as KerasHub does), the
vocabulary along the model axis. Every family shares the decoder, so one table serves all.
A dimension that the mesh axis does not divide (e.g. 2 key/value heads on a 4-way model
axis) is replicated along that axis instead, once the model's sizes are known.
"""

import warnings

import keras

# (variable path pattern, the dimensions of the variable, the axis each dimension goes on:
# "model", "data" or None)
_RULES = (
    (".*token_embedding/embeddings", ("vocabulary", "hidden"), ("model", "data")),
    (".*token_embedding/reverse_embeddings", ("hidden", "vocabulary"), ("data", "model")),
    (".*attention/query/kernel", ("hidden", "query_heads", "head"), ("data", "model", None)),
    (".*attention/(key|value)/kernel", ("hidden", "key_value_heads", "head"),
     ("data", "model", None)),
    (".*attention/attention_output/kernel", ("query_heads", "head", "hidden"),
     ("model", None, "data")),
    (".*feedforward/(gate|intermediate)/kernel", ("hidden", "intermediate"), ("data", "model")),
    (".*feedforward/output/kernel", ("intermediate", "hidden"), ("model", "data")),
    # LoRA adapters follow the kernel they adapt on its input side; the rank stays whole.
    (".*attention/query/lora_kernel_a", ("hidden", "query_heads", "rank"),
     ("data", "model", None)),
    (".*attention/(key|value)/lora_kernel_a", ("hidden", "key_value_heads", "rank"),
     ("data", "model", None)),
    (".*attention/attention_output/lora_kernel_a", ("query_heads", "head", "rank"),
     ("model", None, None)),
    (".*feedforward/(gate|intermediate)/lora_kernel_a", ("hidden", "rank"), ("data", None)),
    (".*feedforward/output/lora_kernel_a", ("intermediate", "rank"), ("model", None)),
    (".*/lora_kernel_b", None, None),  # small: replicated
)


class DecoderLayoutMap(keras.distribution.LayoutMap):
    """The `LayoutMap` `get_layout_map` returns; `fit_to(sizes)` replicates any dimension
    its mesh axis does not divide (the backbone calls it before creating its weights)."""

    def __init__(self, device_mesh, model_axis: str, data_axis: str):
        super().__init__(device_mesh)
        self._axes = {"model": model_axis, "data": data_axis}
        self.replicated = []  # (pattern, dimension) pairs `fit_to` had to replicate
        self.fit_to({})

    def fit_to(self, sizes: dict) -> None:
        """Set every layout for a model whose dimensions are `sizes` (name → size)."""
        mesh = dict(zip(self.device_mesh.axis_names, self.device_mesh.shape, strict=True))
        self.replicated = []
        for pattern, dimensions, axes in _RULES:
            self._layout_map.pop(pattern, None)  # (re)set: LayoutMap refuses to overwrite
            if axes is None:
                self[pattern] = (None, None)
                continue
            layout = []
            for dimension, axis in zip(dimensions, axes, strict=True):
                name = self._axes.get(axis) if axis else None
                size = sizes.get(dimension)
                if name is not None and size is not None and size % mesh[name]:
                    self.replicated.append((pattern, dimension))
                    name = None
                layout.append(name)
            self[pattern] = tuple(layout)


def layout_map(device_mesh, model_parallel_dim_name: str = "model",
               data_parallel_dim_name: str = "batch") -> DecoderLayoutMap:
    for name in (model_parallel_dim_name, data_parallel_dim_name):
        if name not in device_mesh.axis_names:
            raise ValueError(f"The device mesh has no axis {name!r}; its axes are "
                             f"{list(device_mesh.axis_names)}.")
    return DecoderLayoutMap(device_mesh, model_parallel_dim_name, data_parallel_dim_name)


def fit_active_layout(options) -> None:
    """Fit the active distribution's `DecoderLayoutMap` to a model about to be built from
    `options` (a `DecoderOptions`), warning about dimensions left whole."""
    distribution = keras.distribution.distribution()
    layouts = getattr(distribution, "_layout_map", None)
    if not isinstance(layouts, DecoderLayoutMap):
        return
    head = options.head_dim or options.hidden_dim // options.num_query_heads
    layouts.fit_to(dict(vocabulary=options.vocabulary_size, hidden=options.hidden_dim,
                        query_heads=options.num_query_heads,
                        key_value_heads=options.num_key_value_heads, head=head,
                        intermediate=options.intermediate_dim))
    if layouts.replicated:
        listed = ", ".join(sorted({dimension for _, dimension in layouts.replicated}))
        warnings.warn(f"The model axis does not divide this model's {listed}: those "
                      "weights are replicated along it instead of sharded.", stacklevel=3)


def cache_layout(batch_size: int, kv_heads: int):
    """`(device mesh, axes)` of KV cache rows (`b * kv_heads + h`) under the active distribution, or
    None: sequences split along the data axis; when each data shard holds one sequence and
    the model axis divides the heads, heads along the model axis too (the rows of one
    sequence's head group are then contiguous)."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    mesh = distribution.device_mesh
    sizes = dict(zip(mesh.axis_names, mesh.shape, strict=True))
    data = getattr(distribution, "batch_dim_name", None) or mesh.axis_names[0]
    layouts = getattr(distribution, "_layout_map", None)
    model = layouts._axes["model"] if isinstance(layouts, DecoderLayoutMap) else None
    axes = []
    if batch_size % sizes[data] == 0:
        axes.append(data)
        if model and batch_size == sizes[data] and kv_heads % sizes[model] == 0:
            axes.append(model)
    rows = tuple(axes) if len(axes) > 1 else (axes[0] if axes else None)
    return mesh, (rows, None, None)
