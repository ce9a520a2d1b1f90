"""`materialized_gradient(x)`: the identity whose gradient XLA computes once.

In a decoder's backward pass the gradient of the residual stream is a chain of additions
through every block (each norm and residual adds its part). XLA:CPU fuses that chain into each
of its consumers (the transposes feeding weight-gradient products among them), so block i
recomputes the additions of every block after it: on GPT-2 124M (fit, batch 4 x 128) those
fusions took 0.65 s of a 2.3 s gradient. `optimization_barrier` does not stop it (XLA:CPU
expands barriers before fusing), and a conditional with identical branches is simplified away;
a conditional XLA cannot resolve makes it write the gradient once per block (2.3 s -> 1.8 s).
The same conditional on the logits (XLA also fuses the softmax's max into the head product, at
half its speed) was 7% faster on Gemma 3 but copies the logits in and out: +0.4 GB. Not used.

Example:
>>> import jax.numpy as jnp
>>> float(jax.grad(lambda x: (materialized_gradient(x) ** 2).sum())(jnp.ones(3))[0])
2.0
"""

import jax


@jax.custom_vjp
def materialized_gradient(x):
    return x


def _forward(x):
    return x, x.reshape(-1)[0]


def _backward(first, gradient):
    # `first == first` holds for every finite activation, which XLA cannot know. When the
    # activation is NaN the gradient is NaN, as it would be through the NaN forward anyway.
    gradient = jax.lax.cond(
        first == first, lambda g, f: g, lambda g, f: g * f, gradient, first.astype(gradient.dtype)
    )
    return (gradient,)


materialized_gradient.defvjp(_forward, _backward)
