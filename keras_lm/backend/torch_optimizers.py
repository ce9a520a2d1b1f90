"""Keras' Adam and AdamW on torch, with the moment and weight updates in torch's fused CPU
kernel (`torch._fused_adam_`): one pass over each parameter instead of Keras' ten-odd
`_foreach` passes, which on the CPU are loops of separate allocating ops (a quarter of a
GPT-2 124M training step here).

Only the update of `_parallel_update_step` changes: gradient clipping and accumulation,
weight decay (Keras applies it before this step), EMA and loss scaling stay Keras' own, and
so do the optimizer's variables, so checkpoints and `get_config` are unchanged. The result
equals Keras' formula: Keras adds `epsilon` to `sqrt(v)` where torch adds it to
`sqrt(v / (1 - beta_2 ** t))`, so the kernel gets `epsilon / sqrt(1 - beta_2 ** t)`.
"""

import math
import types

import torch


def fuse_adam(optimizer) -> bool:
    """Give a Keras (torch backend) `Adam`/`AdamW` the fused update; returns whether it did.
    Other optimizers, AMSGrad and subclasses that change the update are left alone.

    Example:
    >>> fuse_adam(keras.optimizers.AdamW(1e-4))  # doctest: +SKIP
    True
    """
    from keras.src.backend.torch.optimizers import torch_adam

    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    update = getattr(type(optimizer), "_parallel_update_step", None)
    if (
        not isinstance(optimizer, torch_adam.Adam)
        or update is not torch_adam.Adam._parallel_update_step
        or optimizer.amsgrad
        or getattr(optimizer, "_keras_lm_fused", False)
    ):
        return False
    keras_update = optimizer._parallel_update_step
    optimizer._parallel_update_step = types.MethodType(
        lambda self, grads, variables, learning_rate: _fused_update(
            self, grads, variables, learning_rate, keras_update), optimizer)
    optimizer._keras_lm_fused = True
    return True


def _fused_update(optimizer, grads, variables, learning_rate, keras_update):
    values = [v.value for v in variables]
    if not _fusable(values, grads) or not all(
        isinstance(x, (int, float)) for x in (optimizer.beta_1, optimizer.beta_2,
                                              optimizer.epsilon)
    ):
        return keras_update(grads, variables, learning_rate)
    index = optimizer._get_variable_index
    momentums = [optimizer._momentums[index(v)].value for v in variables]
    velocities = [optimizer._velocities[index(v)].value for v in variables]
    step = float(optimizer.iterations.value) + 1.0
    beta_2 = float(optimizer.beta_2)
    epsilon = float(optimizer.epsilon) / math.sqrt(1.0 - beta_2**step)
    steps = [torch.tensor(step, dtype=torch.float32)] * len(values)
    torch._fused_adam_(values, list(grads), momentums, velocities, [], steps,
                       lr=float(learning_rate), beta1=float(optimizer.beta_1), beta2=beta_2,
                       weight_decay=0.0, eps=epsilon, amsgrad=False, maximize=False)


def _fusable(values, grads) -> bool:
    """Float32 CPU parameters with gradients of their own dtype (the kernel's contract)."""
    for value, grad in zip(values, grads, strict=True):
        if (
            grad is None
            or value.dtype is not torch.float32
            or grad.dtype is not torch.float32
            or not value.is_cpu
            or not grad.is_cpu
            or grad.shape != value.shape
        ):
            return False
    return True
